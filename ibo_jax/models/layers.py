"""Torch-layout building blocks and the shared classifier plumbing (FullGrad taps).

The layers subclass the NNX ones so that parameter paths read like torchvision's
(`layer1.0.conv1.kernel` <-> `layer1.0.conv1.weight`). Every biased layer (a BatchNorm, or a
conv/linear with a bias) takes an optional `tap`: a callable `tap(y, layer) -> y` applied to its
output. The plain forward passes `tap=None`; FullGrad's `biased_forward` passes a tap that adds one
offset per biased layer, in forward order; `bias_shapes`/`biases` pass a tap that records them.
No hooks, no monkeypatching: the order is the execution order by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ibo_jax.models.base import IMAGENET_MEAN, IMAGENET_STD, check_images, to_float

Tap = Callable[[jax.Array, Any], jax.Array] | None


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv2d(nnx.Conv):
    """nnx.Conv with torch's symmetric integer padding; kernel HWIO (torch weight is OIHW)."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0, *, bias: bool = False,
                 dtype=None, rngs: nnx.Rngs):
        kh, kw = _pair(kernel_size)
        ph, pw = _pair(padding)
        super().__init__(cin, cout, (kh, kw), strides=_pair(stride), padding=((ph, ph), (pw, pw)),
                         use_bias=bias, dtype=dtype, rngs=rngs,
                         kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"))

    def __call__(self, x: jax.Array, tap: Tap = None) -> jax.Array:  # [B,H,W,Cin] -> [B,h,w,Cout]
        y = super().__call__(x)
        return tap(y, self) if (tap is not None and self.use_bias) else y

    def effective_bias(self) -> jax.Array:
        return to_float(self.bias[...])


class BatchNorm(nnx.BatchNorm):
    """nnx.BatchNorm with torch's defaults (momentum 0.1 <-> flax 0.9, eps 1e-5)."""

    def __init__(self, num_features: int, *, eps: float = 1e-5, dtype=None, rngs: nnx.Rngs):
        super().__init__(num_features, momentum=0.9, epsilon=eps, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, tap: Tap = None) -> jax.Array:
        y = super().__call__(x)
        return tap(y, self) if tap is not None else y

    def effective_bias(self) -> jax.Array:
        """beta - mean * gamma / sqrt(var + eps): the bias of the folded affine map."""
        scale = to_float(self.scale[...])
        return (to_float(self.bias[...]) - to_float(self.mean[...]) * scale
                / jnp.sqrt(to_float(self.var[...]) + self.epsilon))


class Linear(nnx.Linear):
    """nnx.Linear; kernel [in, out] (torch weight is [out, in])."""

    def __init__(self, cin: int, cout: int, *, dtype=None, rngs: nnx.Rngs):
        super().__init__(cin, cout, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, tap: Tap = None) -> jax.Array:
        y = super().__call__(x)
        return tap(y, self) if tap is not None else y

    def effective_bias(self) -> jax.Array:
        return to_float(self.bias[...])


def max_pool(x: jax.Array, k: int, stride: int, padding: int = 0) -> jax.Array:
    """torch.nn.MaxPool2d (padding counts as -inf, floor mode)."""
    p = ((padding, padding), (padding, padding))
    return nnx.max_pool(x, (k, k), strides=(stride, stride), padding=p)


def avg_pool(x: jax.Array, k: int, stride: int, padding: int = 0) -> jax.Array:
    """torch.nn.functional.avg_pool2d with count_include_pad=True."""
    p = ((padding, padding), (padding, padding))
    return nnx.avg_pool(x, (k, k), strides=(stride, stride), padding=p, count_include_pad=True)


def global_avg_pool(a: jax.Array) -> jax.Array:
    """[B, h, w, C] -> [B, C], averaged in float32 (float64 for float64 input), back in a's dtype."""
    return jnp.mean(to_float(a), axis=(1, 2)).astype(a.dtype)


def adaptive_avg_pool(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d for static shapes: [B,H,W,C] -> [B,oh,ow,C]."""
    _, h, w, _ = x.shape
    oh, ow = out_hw
    if (h, w) == (oh, ow):
        return x
    rows = []
    for i in range(oh):
        r0, r1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        cols = []
        for j in range(ow):
            c0, c1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            cols.append(jnp.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2)))
        rows.append(jnp.stack(cols, axis=1))
    return jnp.stack(rows, axis=1)


class _OffsetTap:
    """Adds offsets[i] to the i-th biased layer's output (FullGrad)."""

    def __init__(self, offsets: Sequence[jax.Array]):
        self.offsets, self.i = list(offsets), 0

    def __call__(self, y: jax.Array, layer: Any) -> jax.Array:
        if self.i >= len(self.offsets):
            raise ValueError(f"biased_forward: got {len(self.offsets)} offsets, the model has more biased layers")
        off = self.offsets[self.i]
        if tuple(off.shape) != tuple(y.shape):
            raise ValueError(f"biased_forward: offsets[{self.i}] has shape {tuple(off.shape)}, "
                             f"the layer output has shape {tuple(y.shape)}")
        self.i += 1
        return y + off.astype(y.dtype)


class _RecordTap:
    def __init__(self):
        self.shapes: list[tuple[int, ...]] = []
        self.layers: list[Any] = []

    def __call__(self, y: jax.Array, layer: Any) -> jax.Array:
        self.shapes.append(tuple(y.shape))
        self.layers.append(layer)
        return y


class ClassifierBase(nnx.Module):
    """The `models.base.Classifier` interface on top of two methods a subclass defines:

    `_trunk(xn, tap) -> [B,h,w,C]` (normalized input to the CAM target layer) and
    `_head(a, tap) -> [B,K]`. Subclasses set `num_classes`, `min_size`, `mean`, `std`, `dtype`.
    """

    num_classes: int
    min_size: int = 32
    mean: tuple[float, float, float] = tuple(IMAGENET_MEAN.tolist())
    std: tuple[float, float, float] = tuple(IMAGENET_STD.tolist())
    dtype: Any = None

    def _trunk(self, xn: jax.Array, tap: Tap) -> jax.Array:
        raise NotImplementedError

    def _head(self, a: jax.Array, tap: Tap) -> jax.Array:
        raise NotImplementedError

    def _set_input_norm(self, mean, std) -> None:
        """Overrides the input normalization (the one the weights were trained with); None keeps
        the class default (ImageNet's mean/std)."""
        for name, v in (("mean", mean), ("std", std)):
            if v is None:
                continue
            v = tuple(float(a) for a in v)
            if len(v) != 3 or (name == "std" and min(v) <= 0):
                raise ValueError(f"{name}: expected 3 per-channel values{' > 0' if name == 'std' else ''} "
                                 f"(RGB, images in [0, 1]), got {v}")
            setattr(self, name, v)

    def normalize(self, x: jax.Array) -> jax.Array:  # [B,H,W,3] in [0,1] -> normalized
        check_images(x)
        x = to_float(x)
        mean = jnp.asarray(self.mean, x.dtype)
        std = jnp.asarray(self.std, x.dtype)
        xn = (x - mean) / std
        return xn.astype(self.dtype) if self.dtype is not None else xn

    def _check_size(self, x) -> None:
        h, w = x.shape[1], x.shape[2]
        if min(h, w) < self.min_size:
            raise ValueError(f"images: {type(self).__name__} needs H, W >= {self.min_size}, got {h}x{w}")

    def features(self, x: jax.Array, *, normalized: bool = False) -> jax.Array:
        if normalized:
            if getattr(x, "ndim", None) != 4 or x.shape[-1] != 3:
                raise ValueError(f"images: expected a normalized [B, H, W, 3] array, got shape {getattr(x, 'shape', None)}")
        else:
            x = self.normalize(x)
        self._check_size(x)
        return self._trunk(x, None)

    def head(self, a: jax.Array) -> jax.Array:  # [B,h,w,C] -> [B,K] float32 (float64 for float64 models)
        return to_float(self._head(a, None))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))

    def biased_forward(self, xn: jax.Array, offsets: list[jax.Array]) -> jax.Array:
        self._check_size(xn)
        tap = _OffsetTap(offsets)
        logits = to_float(self._head(self._trunk(xn, tap), tap))
        if tap.i != len(tap.offsets):
            raise ValueError(f"biased_forward: got {len(tap.offsets)} offsets for {tap.i} biased layers")
        return logits

    def _record(self, input_shape: tuple[int, ...]) -> _RecordTap:
        rec = _RecordTap()
        spec = jax.ShapeDtypeStruct(tuple(input_shape), self.dtype or jnp.float32)
        jax.eval_shape(lambda xn: self._head(self._trunk(xn, rec), rec), spec)
        return rec

    def bias_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        self._check_size(jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))
        return self._record(input_shape).shapes

    def biases(self) -> list[jax.Array]:
        s = self.min_size
        return [layer.effective_bias() for layer in self._record((1, s, s, 3)).layers]


def as_dtype(dtype: Any) -> Any:
    """'bfloat16' / 'float32' / None / a dtype -> a jnp dtype or None."""
    if dtype is None or dtype == "float32":
        return None
    return jnp.dtype(dtype)


def np_float(x) -> np.ndarray:
    return np.asarray(x, np.float32)
