"""ResNet (He et al. 2016) in Flax NNX, torchvision layout: ResNet18/34/50/101 and a small demo net.

Parameter paths follow torchvision (`conv1`, `bn1`, `layer{1..4}.{i}.conv{1,2,3}`, `.bn*`,
`.downsample_conv`/`.downsample_bn` <-> `downsample.0`/`downsample.1`, `fc`), so ImageNet weights
map one-to-one (see `convert.py`). The CAM target layer is the `layer4` output (stride 32 for the
torchvision nets; `resnet_small` uses no max-pool and fewer strides so 64x64 input gives 8x8 maps).
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
    max_pool,
)


class BasicBlock(nnx.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, *, dtype=None, rngs: nnx.Rngs):
        cout = width * self.expansion
        self.conv1 = Conv2d(cin, width, 3, stride, 1, dtype=dtype, rngs=rngs)
        self.bn1 = BatchNorm(width, dtype=dtype, rngs=rngs)
        self.conv2 = Conv2d(width, cout, 3, 1, 1, dtype=dtype, rngs=rngs)
        self.bn2 = BatchNorm(cout, dtype=dtype, rngs=rngs)
        self.has_downsample = stride != 1 or cin != cout
        if self.has_downsample:
            self.downsample_conv = Conv2d(cin, cout, 1, stride, 0, dtype=dtype, rngs=rngs)
            self.downsample_bn = BatchNorm(cout, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, tap: Tap = None) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x), tap))
        y = self.bn2(self.conv2(y), tap)
        idn = self.downsample_bn(self.downsample_conv(x), tap) if self.has_downsample else x
        return nnx.relu(y + idn)


class Bottleneck(nnx.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, *, dtype=None, rngs: nnx.Rngs):
        cout = width * self.expansion
        self.conv1 = Conv2d(cin, width, 1, 1, 0, dtype=dtype, rngs=rngs)
        self.bn1 = BatchNorm(width, dtype=dtype, rngs=rngs)
        self.conv2 = Conv2d(width, width, 3, stride, 1, dtype=dtype, rngs=rngs)  # stride on 3x3 (v1.5)
        self.bn2 = BatchNorm(width, dtype=dtype, rngs=rngs)
        self.conv3 = Conv2d(width, cout, 1, 1, 0, dtype=dtype, rngs=rngs)
        self.bn3 = BatchNorm(cout, dtype=dtype, rngs=rngs)
        self.has_downsample = stride != 1 or cin != cout
        if self.has_downsample:
            self.downsample_conv = Conv2d(cin, cout, 1, stride, 0, dtype=dtype, rngs=rngs)
            self.downsample_bn = BatchNorm(cout, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, tap: Tap = None) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x), tap))
        y = nnx.relu(self.bn2(self.conv2(y), tap))
        y = self.bn3(self.conv3(y), tap)
        idn = self.downsample_bn(self.downsample_conv(x), tap) if self.has_downsample else x
        return nnx.relu(y + idn)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


class ResNet(ClassifierBase):
    """A torchvision-layout ResNet with configurable stem, widths and stage strides.

    block: 'basic' | 'bottleneck'; layers: blocks per stage; widths: per-stage base widths;
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'small' (3x3/1 conv, no pool);
    strides: per-stage strides (torchvision: 1, 2, 2, 2); mean/std: the input normalization the
    weights expect (default ImageNet's), applied inside to images in [0, 1].
    """

    def __init__(self, *, block: str = "bottleneck", layers: Sequence[int] = (3, 4, 6, 3),
                 widths: Sequence[int] = (64, 128, 256, 512), stem: str = "imagenet",
                 stem_width: int | None = None, strides: Sequence[int] = (1, 2, 2, 2),
                 num_classes: int = 1000, dtype: Any = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, rngs: nnx.Rngs):
        if block not in BLOCKS:
            raise ValueError(f"block: expected one of {sorted(BLOCKS)}, got {block!r}")
        if stem not in ("imagenet", "small"):
            raise ValueError(f"stem: expected 'imagenet' or 'small', got {stem!r}")
        if not (len(layers) == len(widths) == len(strides)):
            raise ValueError(f"layers/widths/strides: need equal lengths, got {layers}, {widths}, {strides}")
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        dtype = as_dtype(dtype)
        self.num_classes, self.dtype, self.stem = int(num_classes), dtype, stem
        self._set_input_norm(mean, std)
        cls = BLOCKS[block]
        sw = int(stem_width or widths[0])
        if stem == "imagenet":
            self.conv1 = Conv2d(3, sw, 7, 2, 3, dtype=dtype, rngs=rngs)
        else:
            self.conv1 = Conv2d(3, sw, 3, 1, 1, dtype=dtype, rngs=rngs)
        self.bn1 = BatchNorm(sw, dtype=dtype, rngs=rngs)
        cin = sw
        names = []
        for i, (n, w, s) in enumerate(zip(layers, widths, strides, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(cls(cin, w, s if j == 0 else 1, dtype=dtype, rngs=rngs))
                cin = w * cls.expansion
            setattr(self, f"layer{i + 1}", nnx.List(blocks))
            names.append(f"layer{i + 1}")
        self.stage_names = tuple(names)
        self.num_features = cin
        self.fc = Linear(cin, self.num_classes, dtype=dtype, rngs=rngs)
        total = (4 if stem == "imagenet" else 1)
        for s in strides:
            total *= s
        self.min_size = max(total, 8)

    def _trunk(self, xn: jax.Array, tap: Tap) -> jax.Array:  # [B,H,W,3] -> [B,h,w,C]
        x = nnx.relu(self.bn1(self.conv1(xn), tap))
        if self.stem == "imagenet":
            x = max_pool(x, 3, 2, 1)
        for name in self.stage_names:
            for blk in getattr(self, name):
                x = blk(x, tap)
        return x

    def _head(self, a: jax.Array, tap: Tap) -> jax.Array:  # [B,h,w,C] -> [B,K]
        return self.fc(global_avg_pool(a), tap)


def _resnet(depth: int, num_classes: int, rngs: nnx.Rngs | None, **kw) -> ResNet:
    block, layers = DEPTHS[depth]
    return ResNet(block=block, layers=layers, num_classes=num_classes,
                  rngs=rngs if rngs is not None else nnx.Rngs(0), **kw)


def resnet18(num_classes: int = 1000, *, rngs: nnx.Rngs | None = None, **kw) -> ResNet:
    return _resnet(18, num_classes, rngs, **kw)


def resnet34(num_classes: int = 1000, *, rngs: nnx.Rngs | None = None, **kw) -> ResNet:
    return _resnet(34, num_classes, rngs, **kw)


def resnet50(num_classes: int = 1000, *, rngs: nnx.Rngs | None = None, **kw) -> ResNet:
    return _resnet(50, num_classes, rngs, **kw)


def resnet101(num_classes: int = 1000, *, rngs: nnx.Rngs | None = None, **kw) -> ResNet:
    return _resnet(101, num_classes, rngs, **kw)


def resnet_small(num_classes: int = 2, *, widths: Sequence[int] = (16, 32, 64),
                 layers: Sequence[int] = (1, 1, 1), strides: Sequence[int] = (2, 2, 2),
                 block: str = "basic", rngs: nnx.Rngs | None = None, **kw) -> ResNet:
    """A demo ResNet: 3x3 stem without pooling, overall stride 8 (64x64 input -> 8x8 `features`)."""
    return ResNet(block=block, layers=layers, widths=widths, strides=strides, stem="small",
                  num_classes=num_classes, rngs=rngs if rngs is not None else nnx.Rngs(0), **kw)
