"""VGG16 (Simonyan & Zisserman 2015) in Flax NNX, torchvision layout (no BatchNorm).

`convs[i]` <-> torchvision `features.{CONV_INDEX[i]}`, `classifier[j]` <-> `classifier.{0,3,6}`.
The CAM target layer is the output of torchvision's `features` block (after the last max-pool,
pytorch-grad-cam's `model.features[-1]`); the head is adaptive-avg-pool 7x7, flatten in torch's
(C, H, W) order, then three linear layers with ReLU and dropout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ibo_jax.models.layers import (
    ClassifierBase,
    Conv2d,
    Linear,
    Tap,
    adaptive_avg_pool,
    as_dtype,
    max_pool,
)

CFG16: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                512, 512, 512, "M", 512, 512, 512, "M")


def conv_indices(cfg: Sequence[int | str] = CFG16) -> list[int]:
    """torchvision `features` indices of the convs (each conv is followed by a ReLU; 'M' is a pool)."""
    idx, out = 0, []
    for v in cfg:
        if v == "M":
            idx += 1
        else:
            out.append(idx)
            idx += 2
    return out


class VGG(ClassifierBase):
    """VGG with torchvision's layout; `hidden` is the classifier width (4096 in torchvision)."""

    def __init__(self, *, cfg: Sequence[int | str] = CFG16, num_classes: int = 1000, hidden: int = 4096,
                 dropout: float = 0.5, dtype: Any = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, rngs: nnx.Rngs):
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        dtype = as_dtype(dtype)
        self.num_classes, self.dtype, self.cfg = int(num_classes), dtype, tuple(cfg)
        self._set_input_norm(mean, std)
        convs, cin = [], 3
        for v in self.cfg:
            if v != "M":
                convs.append(Conv2d(cin, int(v), 3, 1, 1, bias=True, dtype=dtype, rngs=rngs))
                cin = int(v)
        self.convs = nnx.List(convs)
        self.num_features = cin
        self.classifier = nnx.List([
            Linear(cin * 49, hidden, dtype=dtype, rngs=rngs),
            Linear(hidden, hidden, dtype=dtype, rngs=rngs),
            Linear(hidden, self.num_classes, dtype=dtype, rngs=rngs),
        ])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.min_size = 2 ** sum(1 for v in self.cfg if v == "M")

    def _trunk(self, xn: jax.Array, tap: Tap) -> jax.Array:  # [B,H,W,3] -> [B,H/32,W/32,512]
        x, i = xn, 0
        for v in self.cfg:
            if v == "M":
                x = max_pool(x, 2, 2)
            else:
                x = nnx.relu(self.convs[i](x, tap))
                i += 1
        return x

    def _head(self, a: jax.Array, tap: Tap) -> jax.Array:  # [B,h,w,C] -> [B,K]
        x = adaptive_avg_pool(a, (7, 7))                        # [B,7,7,C]
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch flatten order (C,H,W)
        x = self.dropout(nnx.relu(self.classifier[0](x, tap)))
        x = self.dropout(nnx.relu(self.classifier[1](x, tap)))
        return self.classifier[2](x, tap)


def vgg16(num_classes: int = 1000, *, rngs: nnx.Rngs | None = None, **kw) -> VGG:
    return VGG(cfg=CFG16, num_classes=num_classes, rngs=rngs if rngs is not None else nnx.Rngs(0), **kw)
