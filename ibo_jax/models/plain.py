"""A plain CNN (no skip connections) to compare with `resnet_small` at the same resolution.

Layout: `stem` (3x3/1 conv, BN, ReLU), then `stage1..stageN`, each a list of Conv3x3-BN-ReLU
blocks whose first block carries the stage stride, then global average pooling and `fc`, as in
ResNet, so the CAM methods see the same kind of head. The CAM target layer is the last stage's
output: with the defaults (strides 2, 2, 2), 64x64 input gives 8x8 maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from ibo_jax.models.layers import (
    BatchNorm,
    ClassifierBase,
    Conv2d,
    Linear,
    Tap,
    as_dtype,
    global_avg_pool,
)


class ConvBNReLU(nnx.Module):
    """Conv3x3 (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, *, dtype=None, rngs: nnx.Rngs):
        self.conv = Conv2d(cin, cout, 3, stride, 1, dtype=dtype, rngs=rngs)
        self.bn = BatchNorm(cout, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, tap: Tap = None) -> jax.Array:
        return nnx.relu(self.bn(self.conv(x), tap))


class PlainCNN(ClassifierBase):
    """Stem + stages of Conv3x3-BN-ReLU blocks, no residual connections; GAP + linear head.

    widths[i]: channels of stage i; convs[i]: blocks in stage i; strides[i]: stride of its first
    block. mean/std: the input normalization (default ImageNet's), applied to images in [0, 1].
    Parameter groups (forward order): `stem`, `stage1`, ..., `fc`.
    """

    def __init__(self, *, widths: Sequence[int] = (16, 32, 64), convs: Sequence[int] = (2, 2, 2),
                 strides: Sequence[int] = (2, 2, 2), num_classes: int = 2, dtype: Any = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 rngs: nnx.Rngs):
        widths, convs, strides = (tuple(int(v) for v in s) for s in (widths, convs, strides))
        if not widths:
            raise ValueError("widths/convs/strides: need at least one stage, got none")
        if not (len(widths) == len(convs) == len(strides)):
            raise ValueError(f"widths/convs/strides: need equal lengths, got {widths}, {convs}, {strides}")
        if min(widths) < 1:
            raise ValueError(f"widths: expected channels >= 1 per stage, got {widths}")
        if min(convs) < 1:
            raise ValueError(f"convs: expected >= 1 conv per stage, got {convs}")
        if min(strides) < 1:
            raise ValueError(f"strides: expected >= 1 per stage, got {strides}")
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        dtype = as_dtype(dtype)
        self.num_classes, self.dtype = int(num_classes), dtype
        self._set_input_norm(mean, std)
        self.stem = ConvBNReLU(3, widths[0], 1, dtype=dtype, rngs=rngs)
        cin, names = widths[0], []
        for i, (w, n, s) in enumerate(zip(widths, convs, strides, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(ConvBNReLU(cin, w, s if j == 0 else 1, dtype=dtype, rngs=rngs))
                cin = w
            setattr(self, f"stage{i + 1}", nnx.List(blocks))
            names.append(f"stage{i + 1}")
        self.stage_names = tuple(names)
        self.num_features = cin
        self.fc = Linear(cin, self.num_classes, dtype=dtype, rngs=rngs)
        total = 1
        for s in strides:
            total *= s
        self.min_size = max(total, 8)

    def _trunk(self, xn: jax.Array, tap: Tap) -> jax.Array:  # [B,H,W,3] -> [B,h,w,C]
        x = self.stem(xn, tap)
        for name in self.stage_names:
            for blk in getattr(self, name):
                x = blk(x, tap)
        return x

    def _head(self, a: jax.Array, tap: Tap) -> jax.Array:  # [B,h,w,C] -> [B,K]
        return self.fc(global_avg_pool(a), tap)


def cnn_small(num_classes: int = 2, *, widths: Sequence[int] = (16, 32, 64),
              convs: Sequence[int] = (2, 2, 2), strides: Sequence[int] = (2, 2, 2),
              rngs: nnx.Rngs | None = None, **kw) -> PlainCNN:
    """The plain-CNN counterpart of `resnet_small`: overall stride 8 (64x64 input -> 8x8 `features`)."""
    if "layers" in kw:
        raise ValueError("layers: cnn_small takes convs=(blocks per stage), not layers (a ResNet option)")
    return PlainCNN(widths=widths, convs=convs, strides=strides, num_classes=num_classes,
                    rngs=rngs if rngs is not None else nnx.Rngs(0), **kw)
