"""Shared CAM plumbing: resizing, min-max scaling, target scores and the jitted entry point.

Conventions follow pytorch-grad-cam 1.5.7 so that the same weights give the same maps:

- a layer CAM `relu(sum_k w_k A_k)` is min-max scaled per image (`x -= min; x /= 1e-7 + max`),
  resized to the input size with cv2's bilinear INTER_LINEAR (half-pixel centres, edge clamp),
  then min-max scaled again (`BaseCAM.aggregate_multi_layers` with one layer);
- resizing is a pair of small interpolation matrices (`resize_matrix`), so it is exact, batched
  and cheap on any device: `out = R_h @ cam @ R_w^T`.

Every method is a pure function `fn(model, images, target_class, **options) -> (heat, valid)`
run under one `jax.jit` whose static arguments are the model's graphdef, the method, the target
class and the options. `valid` [B] is False for degenerate maps (all zero after the ReLU, or
non-finite values); their heatmaps are returned as zeros instead of NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ibo_jax import io as ibo_io
from ibo_jax.models.base import check_images, target_layer

CamFn = Callable[..., tuple[jax.Array, jax.Array]]
REGISTRY: dict[str, CamFn] = {}

_EPS_SCALE = 1e-7  # pytorch-grad-cam scale_cam_image


def register(name: str) -> Callable[[CamFn], CamFn]:
    """Decorator adding a method to the explicit registry (`REGISTRY[name] = fn`)."""

    def deco(fn: CamFn) -> CamFn:
        REGISTRY[name] = fn
        return fn

    return deco


# ----------------------------------------------------------------------------- resizing


@functools.lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int, align_corners: bool = False) -> np.ndarray:
    """[n_out, n_in] float64 linear-interpolation matrix along one axis (cast to the maps' dtype).

    align_corners=False: cv2.resize INTER_LINEAR (src = (dst + 0.5) * n_in / n_out - 0.5, clamped
    at the edges); align_corners=True: torch UpsamplingBilinear2d (src = dst * (n_in-1)/(n_out-1)).
    """
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(dst)
    else:
        src = (dst + 0.5) * (n_in / n_out) - 0.5
    lo = np.floor(src).astype(np.int64)
    frac = src - lo
    # cv2: left of the first centre / right of the last one, take the edge pixel
    frac = np.where(lo < 0, 0.0, frac)
    lo = np.clip(lo, 0, n_in - 1)
    frac = np.where(lo >= n_in - 1, 0.0, frac)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def resize(maps: jax.Array, size: tuple[int, int], *, align_corners: bool = False) -> jax.Array:
    """Bilinear resize of [..., h, w] maps to [..., H, W] (cv2 or align_corners convention)."""
    h, w = maps.shape[-2:]
    H, W = size
    if (h, w) == (H, W):
        return maps
    dtype = maps.dtype if jnp.issubdtype(maps.dtype, jnp.floating) else jnp.float32
    rh = jnp.asarray(resize_matrix(h, H, align_corners), dtype)  # [H, h]
    rw = jnp.asarray(resize_matrix(w, W, align_corners), dtype)  # [W, w]
    hi = jax.lax.Precision.HIGHEST
    out = jnp.einsum("Hh,...hw->...Hw", rh, maps, precision=hi)
    return jnp.einsum("...Hw,Ww->...HW", out, rw, precision=hi)


# ----------------------------------------------------------------------------- scaling


def minmax(x: jax.Array, axes: tuple[int, ...] = (-2, -1), eps: float = _EPS_SCALE) -> jax.Array:
    """pytorch-grad-cam's per-map scaling: `x -= min(x); x /= eps + max(x)` over `axes`."""
    x = x - jnp.min(x, axis=axes, keepdims=True)
    return x / (eps + jnp.max(x, axis=axes, keepdims=True))


def finalize_layer_cam(cam: jax.Array, size: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    """[B, h, w] raw layer CAM -> ([B, H, W] in [0, 1], valid [B]) as BaseCAM does it.

    relu -> min-max -> bilinear resize (half-pixel) -> relu -> min-max. Non-finite or all-zero
    maps are flagged invalid and returned as zeros.
    """
    finite = jnp.all(jnp.isfinite(cam), axis=(-2, -1))
    cam = jnp.where(jnp.isfinite(cam), cam, 0.0)
    cam = jnp.maximum(cam, 0.0)
    valid = finite & (jnp.max(cam, axis=(-2, -1)) > 0)
    heat = minmax(jnp.maximum(resize(minmax(cam), size), 0.0))
    return jnp.where(valid[:, None, None], heat, 0.0), valid


def weighted_sum(weights: jax.Array, acts: jax.Array) -> jax.Array:
    """sum_k w[b, k] * A[b, :, :, k]: [B, C] x [B, h, w, C] -> [B, h, w]."""
    return jnp.einsum("bc,bhwc->bhw", weights, acts, precision=jax.lax.Precision.HIGHEST)


# ----------------------------------------------------------------------------- model access


def target_score(logits: jax.Array, target_class: int) -> jax.Array:
    """[B, K] -> [B] raw logit of the target class (pytorch-grad-cam ClassifierOutputTarget)."""
    if not 0 <= target_class < logits.shape[-1]:
        raise ValueError(f"target_class={target_class} outside [0, {logits.shape[-1]})")
    return logits[:, target_class]


def features_and_grads(model, xn: jax.Array, target_class: int) -> tuple[jax.Array, jax.Array]:
    """Target-layer activations A [B, h, w, C] and d(target logit)/dA, from a normalized input.

    A is `models.base.target_layer(model, xn)`'s grid: a CNN's target layer, or a ViT's patch
    tokens at the output of `blocks[-1].norm1` (prefix tokens dropped); the gradient is taken
    through that function's head, everything else the rest of the network reads (a ViT's residual
    stream and prefix tokens) held fixed, which is the gradient at that layer's output.
    """
    acts, head_fn = target_layer(model, xn)

    def score(a):
        return jnp.sum(target_score(head_fn(a), target_class))

    grads = jax.grad(score)(acts)
    return acts, grads


def logits_normalized(model, xn: jax.Array) -> jax.Array:
    """Logits [B, K] of a normalized input `xn` (any classifier: through its target layer)."""
    acts, head_fn = target_layer(model, xn)
    return head_fn(acts)


# ----------------------------------------------------------------------------- entry points


def _freeze_options(options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    out = []
    for k, v in sorted(options.items()):
        if isinstance(v, (list, np.ndarray)):
            v = tuple(np.asarray(v).tolist())
        try:
            hash(v)
        except TypeError as e:
            raise TypeError(f"cam option {k!r}: must be hashable (int, float, str, dtype), got {v!r}") from e
        out.append((k, v))
    return tuple(out)


@functools.partial(jax.jit, static_argnames=("graphdef", "method", "target_class", "options"))
def _compute_jit(graphdef, state, images, *, method, target_class, options):
    model = nnx.merge(graphdef, state)
    if hasattr(model, "eval"):
        model.eval()  # BatchNorm running statistics, no dropout, whatever the caller left
    heat, valid = REGISTRY[method](model, images, target_class, **dict(options))
    # float32 out (bf16 Score-CAM included); float64 stays float64 (x64 parity checks)
    return heat.astype(jnp.float64 if heat.dtype == jnp.float64 else jnp.float32), valid


def resolve_options(options) -> dict:
    """Method options from a config (a mapping or ConfigDict): a 'dtype' given by name becomes a
    dtype, so experiment files can say `scorecam.dtype = 'bfloat16'`."""
    opts = dict(ibo_io.plain(options) if options is not None else {})
    if isinstance(opts.get("dtype"), str):
        opts["dtype"] = jnp.dtype(opts["dtype"])
    return opts


def check_method(method: str) -> None:
    if method not in REGISTRY:
        raise ValueError(f"unknown CAM method {method!r}; expected one of {sorted(REGISTRY)}")


def make_cam_fn(method: str, graphdef, *, target_class: int = 1, **options) -> Callable:
    """A jitted pure function `(state, images) -> (heat [B,H,W], valid [B])` for hot loops.

    Split the model once (`graphdef, state = nnx.split(model)`) and call this in the loop.
    """
    check_method(method)
    frozen = _freeze_options(options)
    return functools.partial(
        _compute_jit, graphdef, method=method, target_class=int(target_class), options=frozen
    )


def compute(
    method: str,
    model: nnx.Module,
    images,
    target_class: int = 1,
    *,
    return_info: bool = False,
    **options,
):
    """Heatmaps of `method` for `images` [B, H, W, 3] in [0, 1] -> [B, H, W] float32 in [0, 1].

    Non-finite pixels are refused (ValueError naming `images` and the count); maps that come out
    degenerate or non-finite are zeros flagged invalid. float64 images (with `jax.enable_x64`
    and a float64 model) are computed and returned in float64. With return_info=True returns `(heat, {"valid": bool [B], "n_invalid": int})`; invalid
    (degenerate) maps are zeros.
    """
    check_method(method)
    check_images(images)
    images = jnp.asarray(images)
    if images.dtype != jnp.float64:
        images = images.astype(jnp.float32)
    graphdef, state = nnx.split(model)
    heat, valid = make_cam_fn(method, graphdef, target_class=target_class, **options)(state, images)
    if return_info:
        return heat, {"valid": valid, "n_invalid": int(np.sum(~np.asarray(valid)))}
    return heat
