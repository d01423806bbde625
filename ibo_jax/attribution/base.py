"""The attribution registry: one jitted entry point for gradient, attention and CAM methods.

A method is registered with `register(name, families=..., has_raw=..., reduce=...)` and is a pure
function `fn(model, images, target_class, **options)`, traced under one `jax.jit` whose static
arguments are the model's graphdef, the method, the target class, `raw` and the hashable options
(array options, e.g. integrated gradients' `baselines` or SmoothGrad's `noise`, are traced
arguments). `images` are [B, H, W, 3] in [0, 1]; the model normalizes inside (as every
`models.base.Classifier` does), so attributions are with respect to the [0, 1] image.

- `has_raw=True`: `fn` returns the raw attribution [B, H, W, 3] (channels-last, as captum computes
  it w.r.t. the [0, 1] image). `compute(..., raw=True)` returns it as is; otherwise it becomes a
  map by `reduce_channels` (the method's default reduction, or the `reduce=` option) and a
  per-image min-max to [0, 1] (`to_unit`, with an optional `outlier_perc` clip first).
- `has_raw=False`: `fn` returns a map [B, h, w] (any scale; e.g. rollout on the patch grid). It is
  resized to the image grid with `cam.resize` (cv2 bilinear convention) when h, w differ, then
  min-max scaled per image. `raw=True` is an error.

CAM names (`cam.METHODS` and `cam.EXTRA_METHODS`) are not in this registry: `compute` and
`make_fn` delegate them to `cam.compute` / `cam.make_cam_fn` (no raw attribution).

Maps that are flat (max == min after the reduction) or non-finite are returned as zeros and flagged
invalid (`return_info=True`), as the CAM maps are.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ibo_jax import cam
from ibo_jax.models.base import check_images

FAMILIES = ("cnn", "vit")
REDUCTIONS = ("max_abs", "abs_sum", "sum_abs", "sum_positive", "sum")


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered method: `fn(model, images, target_class, **options)`, the model families it
    supports, whether it returns a raw [B, H, W, 3] attribution, and its default reduction."""

    fn: Callable[..., jax.Array]
    families: tuple[str, ...]
    has_raw: bool
    reduce: str


REGISTRY: dict[str, Method] = {}


def register(name: str, *, families: Sequence[str] = FAMILIES, has_raw: bool = True,
             reduce: str = "sum_abs") -> Callable:
    """Decorator adding `fn` to `REGISTRY[name]`.

    families: the model families the method supports ('cnn', 'vit'); has_raw: `fn` returns the raw
    [B, H, W, 3] attribution (else a map [B, h, w]); reduce: the default channel reduction of the
    raw attribution (one of `REDUCTIONS`, see `reduce_channels`), unused when has_raw is False.
    """
    families = tuple(families)
    if not families or any(f not in FAMILIES for f in families):
        raise ValueError(f"families: expected a non-empty subset of {FAMILIES}, got {families}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce: expected one of {REDUCTIONS}, got {reduce!r}")
    if name in cam.REGISTRY:
        raise ValueError(f"name: {name!r} is a CAM method (cam.REGISTRY); pick another name")

    def deco(fn: Callable) -> Callable:
        REGISTRY[name] = Method(fn, families, bool(has_raw), reduce)
        return fn

    return deco


def family(model) -> str:
    """'vit' for token models (they expose `num_prefix_tokens`, see `models.vit`), else 'cnn'."""
    return "vit" if hasattr(model, "num_prefix_tokens") else "cnn"


def is_cam(name: str) -> bool:
    return name in cam.REGISTRY


def check_method(name: str) -> None:
    if not (is_cam(name) or name in REGISTRY):
        known = sorted(set(cam.REGISTRY) | set(REGISTRY))
        raise ValueError(f"unknown attribution method {name!r}; expected one of {known}")


def supports(name: str, model) -> bool:
    """Whether method `name` applies to `model`'s family (CAM methods: every classifier)."""
    check_method(name)
    return True if is_cam(name) else family(model) in REGISTRY[name].families


def has_raw(name: str) -> bool:
    """Whether `compute(name, ..., raw=True)` exists (False for CAMs and map-only methods)."""
    check_method(name)
    return (not is_cam(name)) and REGISTRY[name].has_raw


# ----------------------------------------------------------------------------- maps


def reduce_channels(raw: jax.Array, how: str) -> jax.Array:
    """[B, H, W, 3] raw attribution -> [B, H, W] by `how`:

    'max_abs': max_c |a| (Simonyan et al.'s saliency map); 'abs_sum': sum_c |a|;
    'sum_abs': |sum_c a| (captum.attr.visualization's 'absolute_value'); 'sum_positive':
    max(sum_c a, 0) (captum's 'positive'); 'sum': sum_c a (signed; after the min-max the most
    negative pixel is 0 and the most positive 1).
    """
    if how == "max_abs":
        return jnp.max(jnp.abs(raw), axis=-1)
    if how == "abs_sum":
        return jnp.sum(jnp.abs(raw), axis=-1)
    if how == "sum_abs":
        return jnp.abs(jnp.sum(raw, axis=-1))
    if how == "sum_positive":
        return jnp.maximum(jnp.sum(raw, axis=-1), 0.0)
    if how == "sum":
        return jnp.sum(raw, axis=-1)
    raise ValueError(f"reduce: expected one of {REDUCTIONS}, got {how!r}")


def to_unit(maps: jax.Array, *, outlier_perc: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """[B, H, W] -> ([B, H, W] in [0, 1], valid [B]) by a per-image min-max.

    outlier_perc (captum.attr.visualization's name): values above the (100 - outlier_perc)-th
    percentile of each map are clipped to it first (0: no clipping). Flat or non-finite maps are
    zeros flagged invalid. The scale is relative (no absolute epsilon): gradients can be ~1e-8.
    """
    finite = jnp.all(jnp.isfinite(maps), axis=(-2, -1))
    maps = jnp.where(jnp.isfinite(maps), maps, 0.0)
    if outlier_perc > 0:
        top = jnp.percentile(maps, 100.0 - outlier_perc, axis=(-2, -1), keepdims=True)
        maps = jnp.minimum(maps, top)
    lo = jnp.min(maps, axis=(-2, -1), keepdims=True)
    span = jnp.max(maps, axis=(-2, -1), keepdims=True) - lo
    valid = finite & (span[:, 0, 0] > 0)
    out = (maps - lo) / jnp.where(span > 0, span, 1.0)
    return jnp.where(valid[:, None, None], out, 0.0), valid


def input_gradient(model, x: jax.Array, target_class: int) -> jax.Array:
    """d(target logit)/dx [B, H, W, 3] for images `x` in [0, 1] (the model normalizes inside)."""

    def score(v):
        return jnp.sum(cam.base.target_score(model(v), target_class))

    return jax.grad(score)(x)


# ----------------------------------------------------------------------------- entry points


def _split_options(options: dict[str, Any]) -> tuple[tuple[tuple[str, Any], ...], dict[str, Any]]:
    """(hashable options, sorted) and array options (traced arguments of the jitted program)."""
    static, arrays = [], {}
    for k, v in sorted(options.items()):
        if isinstance(v, (np.ndarray, jax.Array)) or (
                isinstance(v, (list, tuple)) and v and all(isinstance(e, (jax.Array, np.ndarray)) for e in v)):
            arrays[k] = v
            continue
        if isinstance(v, list):
            v = tuple(v)
        try:
            hash(v)
        except TypeError as e:
            raise TypeError(f"attribution option {k!r}: expected a number, string, tuple or array, got {v!r}") from e
        static.append((k, v))
    return tuple(static), arrays


def _out_dtype(x: jax.Array):
    return jnp.float64 if x.dtype == jnp.float64 else jnp.float32


@functools.partial(jax.jit, static_argnames=("graphdef", "name", "target_class", "raw", "options"))
def _compute_jit(graphdef, state, images, arrays, *, name, target_class, raw, options):
    model = nnx.merge(graphdef, state)
    if hasattr(model, "eval"):
        model.eval()  # BatchNorm running statistics, no dropout, whatever the caller left
    method = REGISTRY[name]
    if family(model) not in method.families:  # at trace time
        raise ValueError(f"method {name!r} supports model families {method.families}, "
                         f"not {family(model)!r} ({type(model).__name__})")
    opts = dict(options)
    reduce = opts.pop("reduce", method.reduce)
    outlier_perc = float(opts.pop("outlier_perc", 0.0))
    out = method.fn(model, images, target_class, **opts, **arrays)
    dtype = _out_dtype(images)
    if raw:
        out = out.astype(dtype)
        return out, jnp.all(jnp.isfinite(out), axis=(1, 2, 3))
    if method.has_raw:
        out = reduce_channels(out, reduce)
    elif out.shape[1:3] != images.shape[1:3]:
        out = cam.resize(out, images.shape[1:3])
    heat, valid = to_unit(out.astype(dtype), outlier_perc=outlier_perc)
    return heat, valid


def _check_request(name: str, raw: bool, options: dict) -> None:
    check_method(name)
    if raw and not has_raw(name):
        kind = "a CAM" if is_cam(name) else "a map-only method"
        raise ValueError(f"raw=True: {name!r} is {kind} and has no raw attribution; use raw=False")
    if not is_cam(name):
        if raw and ("reduce" in options or "outlier_perc" in options):
            raise ValueError("reduce/outlier_perc: they shape the map; not used with raw=True")
        if "reduce" in options and options["reduce"] not in REDUCTIONS:
            raise ValueError(f"reduce: expected one of {REDUCTIONS}, got {options['reduce']!r}")
        params = inspect.signature(REGISTRY[name].fn).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            known = list(params)[3:] + ([] if raw else ["outlier_perc"]) + (
                ["reduce"] if REGISTRY[name].has_raw and not raw else [])
            for k in options:
                if k not in known:
                    raise ValueError(f"{k}: not an option of {name!r} (its options: {', '.join(known)})")
        if "outlier_perc" in options and not 0 <= float(options["outlier_perc"]) < 100:
            raise ValueError(f"outlier_perc: expected a percentage in [0, 100), got {options['outlier_perc']!r}")


def make_fn(name: str, graphdef, *, target_class: int = 1, raw: bool = False, **options) -> Callable:
    """A jitted pure function `(state, images, **array_options) -> (out, valid [B])` for hot loops.

    Split the model once (`graphdef, state = nnx.split(model)`) and call this in the loop. `out`
    is the map [B, H, W] in [0, 1] (the raw [B, H, W, 3] with raw=True); array options given here
    (e.g. `baselines`) are used for every call unless the call passes its own. CAM names give
    `cam.make_cam_fn` (no array options).
    """
    _check_request(name, raw, options)
    if is_cam(name):
        return cam.make_cam_fn(name, graphdef, target_class=target_class, **options)
    static, arrays = _split_options(options)
    jitted = functools.partial(_compute_jit, graphdef, name=name, target_class=int(target_class),
                               raw=bool(raw), options=static)

    def fn(state, images, **array_options):
        return jitted(state, images, {**arrays, **array_options})

    return fn


def compute(name: str, model: nnx.Module, images, target_class: int = 1, *, raw: bool = False,
            return_info: bool = False, **options):
    """Attribution `name` for `images` [B, H, W, 3] in [0, 1] -> map [B, H, W] float32 in [0, 1].

    raw=True: the raw attribution [B, H, W, 3] w.r.t. the [0, 1] image (an error for methods that
    have none). Map options (not with raw): `reduce` (one of `REDUCTIONS`, default the method's)
    and `outlier_perc` (clip the top percent before the min-max; default 0). Other options go to
    the method (see its docstring). float64 images with a float64 model (`jax.enable_x64`) are
    computed and returned in float64. return_info=True returns `(out, {"valid", "n_invalid"})`.
    """
    _check_request(name, raw, options)
    if is_cam(name):
        return cam.compute(name, model, images, target_class, return_info=return_info, **options)
    check_images(images)
    images = jnp.asarray(images)
    images = images.astype(_out_dtype(images))
    graphdef, state = nnx.split(model)
    out, valid = make_fn(name, graphdef, target_class=target_class, raw=raw, **options)(state, images)
    if return_info:
        return out, {"valid": valid, "n_invalid": int(np.sum(~np.asarray(valid)))}
    return out
