"""Inception-v3 (Szegedy et al. 2016) in Flax NNX, torchvision layout (without the aux head).

Module names match torchvision (`Conv2d_1a_3x3.conv`, `Mixed_5b.branch1x1.bn`, ...); the auxiliary
classifier is only used in training and is skipped on import. The CAM target layer is `Mixed_7c`.
Inputs must be at least 75x75. `transform_input=True` reproduces torchvision's pretrained
weights' input convention ((x - 0.5) / 0.5 instead of ImageNet mean/std).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ibo_jax.models.layers import (
    BatchNorm,
    ClassifierBase,
    Conv2d,
    Linear,
    Tap,
    as_dtype,
    avg_pool,
    max_pool,
)


class BasicConv2d(nnx.Module):
    def __init__(self, cin: int, cout: int, k, stride=1, padding=0, *, dtype=None, rngs: nnx.Rngs):
        self.conv = Conv2d(cin, cout, k, stride, padding, dtype=dtype, rngs=rngs)
        self.bn = BatchNorm(cout, eps=1e-3, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, tap: Tap = None) -> jax.Array:
        return nnx.relu(self.bn(self.conv(x), tap))


def _cat(xs: list[jax.Array]) -> jax.Array:
    return jnp.concatenate(xs, axis=-1)


class InceptionA(nnx.Module):
    def __init__(self, cin: int, pool_features: int, **kw):
        self.branch1x1 = BasicConv2d(cin, 64, 1, **kw)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1, **kw)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, **kw)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, **kw)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **kw)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, **kw)
        self.branch_pool = BasicConv2d(cin, pool_features, 1, **kw)

    def __call__(self, x, tap=None):
        a = self.branch1x1(x, tap)
        b = self.branch5x5_2(self.branch5x5_1(x, tap), tap)
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x, tap), tap), tap)
        d = self.branch_pool(avg_pool(x, 3, 1, 1), tap)
        return _cat([a, b, c, d])


class InceptionB(nnx.Module):
    def __init__(self, cin: int, **kw):
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, **kw)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, **kw)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **kw)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, **kw)

    def __call__(self, x, tap=None):
        a = self.branch3x3(x, tap)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x, tap), tap), tap)
        return _cat([a, b, max_pool(x, 3, 2)])


class InceptionC(nnx.Module):
    def __init__(self, cin: int, c7: int, **kw):
        self.branch1x1 = BasicConv2d(cin, 192, 1, **kw)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1, **kw)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **kw)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), **kw)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, **kw)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **kw)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **kw)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **kw)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), **kw)
        self.branch_pool = BasicConv2d(cin, 192, 1, **kw)

    def __call__(self, x, tap=None):
        a = self.branch1x1(x, tap)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x, tap), tap), tap)
        c = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
            c = m(c, tap)
        d = self.branch_pool(avg_pool(x, 3, 1, 1), tap)
        return _cat([a, b, c, d])


class InceptionD(nnx.Module):
    def __init__(self, cin: int, **kw):
        self.branch3x3_1 = BasicConv2d(cin, 192, 1, **kw)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, **kw)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, **kw)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), **kw)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), **kw)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, **kw)

    def __call__(self, x, tap=None):
        a = self.branch3x3_2(self.branch3x3_1(x, tap), tap)
        b = x
        for m in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = m(b, tap)
        return _cat([a, b, max_pool(x, 3, 2)])


class InceptionE(nnx.Module):
    def __init__(self, cin: int, **kw):
        self.branch1x1 = BasicConv2d(cin, 320, 1, **kw)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1, **kw)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **kw)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **kw)
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, **kw)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, **kw)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **kw)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **kw)
        self.branch_pool = BasicConv2d(cin, 192, 1, **kw)

    def __call__(self, x, tap=None):
        a = self.branch1x1(x, tap)
        b = self.branch3x3_1(x, tap)
        b = _cat([self.branch3x3_2a(b, tap), self.branch3x3_2b(b, tap)])
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x, tap), tap)
        c = _cat([self.branch3x3dbl_3a(c, tap), self.branch3x3dbl_3b(c, tap)])
        d = self.branch_pool(avg_pool(x, 3, 1, 1), tap)
        return _cat([a, b, c, d])


class InceptionV3(ClassifierBase):
    def __init__(self, *, num_classes: int = 1000, dropout: float = 0.5, transform_input: bool = False,
                 dtype: Any = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 rngs: nnx.Rngs):
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        dtype = as_dtype(dtype)
        self.num_classes, self.dtype, self.min_size = int(num_classes), dtype, 75
        if transform_input:
            self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        self._set_input_norm(mean, std)  # explicit values win
        kw = dict(dtype=dtype, rngs=rngs)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, **kw)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, **kw)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, **kw)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, **kw)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, **kw)
        self.Mixed_5b = InceptionA(192, 32, **kw)
        self.Mixed_5c = InceptionA(256, 64, **kw)
        self.Mixed_5d = InceptionA(288, 64, **kw)
        self.Mixed_6a = InceptionB(288, **kw)
        self.Mixed_6b = InceptionC(768, 128, **kw)
        self.Mixed_6c = InceptionC(768, 160, **kw)
        self.Mixed_6d = InceptionC(768, 160, **kw)
        self.Mixed_6e = InceptionC(768, 192, **kw)
        self.Mixed_7a = InceptionD(768, **kw)
        self.Mixed_7b = InceptionE(1280, **kw)
        self.Mixed_7c = InceptionE(2048, **kw)
        self.num_features = 2048
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.fc = Linear(2048, self.num_classes, **kw)

    def _trunk(self, xn: jax.Array, tap: Tap) -> jax.Array:  # [B,H,W,3] -> [B,h,w,2048]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(xn, tap), tap), tap)
        x = max_pool(x, 3, 2)
        x = max_pool(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x, tap), tap), 3, 2)
        for m in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                  self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = m(x, tap)
        return x

    def _head(self, a: jax.Array, tap: Tap) -> jax.Array:  # [B,h,w,2048] -> [B,K]
        pooled = jnp.mean(a.astype(jnp.float32), axis=(1, 2)).astype(a.dtype)
        return self.fc(self.dropout(pooled), tap)


def inception_v3(num_classes: int = 1000, *, rngs: nnx.Rngs | None = None, **kw) -> InceptionV3:
    return InceptionV3(num_classes=num_classes, rngs=rngs if rngs is not None else nnx.Rngs(0), **kw)
