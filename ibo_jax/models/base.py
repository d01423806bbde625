"""The classifier interface every CAM method relies on (no hooks, no monkeypatching).

A classifier is an NNX module with these methods (RGB inputs in [0, 1], NHWC):

    normalize(x)          [B, H, W, 3] in [0, 1] -> [B, H, W, 3] normalized (ImageNet mean/std)
    features(x, *, normalized=False)
                          -> [B, h, w, C] activations of the CAM target layer
                             (ResNet `layer4`, VGG last conv block, Inception `Mixed_7c`);
                             with normalized=True, `x` is already the output of `normalize`
    head(a)               [B, h, w, C] -> logits [B, K] (everything after the target layer)
    __call__(x)           = head(features(x))
    biased_forward(xn, offsets)
                          FullGrad support. `xn` is a normalized input; `offsets` is a list with
                          one array per biased layer (BatchNorm, or conv/linear with a bias), in
                          forward order, each shaped like that layer's output and added to it.
                          Returns logits [B, K]. With all-zero offsets this equals the model's
                          logits, and the gradient of a logit w.r.t. offsets[i] is the gradient at
                          biased layer i's output.
    bias_shapes(input_shape)
                          list of the output shapes (with batch) of the biased layers, in the
                          order of `biased_forward`'s offsets (computed with jax.eval_shape).
    biases()              list of per-channel effective biases, same order: a conv/linear bias,
                          or a BatchNorm's folded bias `beta - mean * gamma / sqrt(var + eps)`.

Token models (`models.VisionTransformer`) follow the same contract with a two-part target layer,
because the rest of the network after the target still needs more than the grid:

    features(x, *, normalized=False)
                          -> [B, h, w, C] patch tokens at `blocks[-1].norm1`'s output, prefix
                             (class/register) tokens dropped, on the model's real grid
    features_and_context(x, *, normalized=False)
                          -> (grid, context): context holds the residual stream entering the last
                             block and the prefix tokens of its norm1 output
    head(grid, context)   -> logits; its gradient w.r.t. `grid` is the gradient at norm1's patch
                             tokens (context is a pytree, batch-aligned with grid)

`target_layer(model, xn)` returns `(activations, head_fn)` for either kind, so CAM code needs no
case split. FullGrad on a ViT uses its one biased conv (the patch embedding), as pytorch-grad-cam.

All methods run the model in inference mode (BatchNorm running statistics, no dropout): the
caller puts the module in eval mode (`model.eval()`) before explaining.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def to_float(x) -> jax.Array:
    """`x` as float32, or float64 when it already is (float64 models under `jax.enable_x64`, used
    by the parity checks, must not be rounded to float32 anywhere on the way)."""
    import jax.numpy as jnp

    x = jnp.asarray(x)
    return x.astype(jnp.float64 if x.dtype == jnp.float64 else jnp.float32)


@runtime_checkable
class Classifier(Protocol):
    num_classes: int

    def normalize(self, x: jax.Array) -> jax.Array: ...

    def features(self, x: jax.Array, *, normalized: bool = False) -> jax.Array: ...

    def head(self, a: jax.Array) -> jax.Array: ...

    def __call__(self, x: jax.Array) -> jax.Array: ...

    def biased_forward(self, xn: jax.Array, offsets: list[jax.Array]) -> jax.Array: ...

    def bias_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]: ...

    def biases(self) -> list[jax.Array]: ...


def target_layer(model: Any, xn: jax.Array) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    """(activations [B, h, w, C] of the CAM target layer, head_fn: activations -> logits [B, K])
    for normalized images `xn`. Token models: `features_and_context` and `head` with the context
    bound; CNNs: `features(xn, normalized=True)` and `head`."""
    if hasattr(model, "features_and_context"):
        acts, context = model.features_and_context(xn, normalized=True)
        return acts, functools.partial(model.head, context=context)
    return model.features(xn, normalized=True), model.head


def check_images(x, *, name: str = "images") -> None:
    """Raises a clear error for inputs that break the image contract (float32-able [B,H,W,3] in [0,1]).

    Only checks what is known at trace time (rank, channels, dtype); the value-range check runs
    only on concrete (non-traced) arrays.
    """
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(f"{name}: expected a [B, H, W, 3] array, got shape {shape}")
    if shape[-1] != 3:
        raise ValueError(f"{name}: expected 3 channels (RGB, NHWC) in the last axis, got shape {shape}")
    dtype = np.dtype(x.dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(
            f"{name}: expected floating images in [0, 1], got dtype {dtype} "
            "(convert uint8 with x.astype(np.float32) / 255)"
        )
    if not isinstance(x, jax.core.Tracer):
        from ibo_jax.checks import check_finite

        check_finite(x, name)
        arr = np.asarray(x)
        if arr.size and (np.nanmax(arr) > 1.0 + 1e-3 or np.nanmin(arr) < -1e-3):
            raise ValueError(
                f"{name}: values must lie in [0, 1], got range [{np.nanmin(arr):.3g}, {np.nanmax(arr):.3g}] "
                "(0-255 images must be divided by 255)"
            )
