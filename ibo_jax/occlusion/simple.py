"""Input checks, per-example keys, and the two simplest occlusions: blackening and mean.

Every strategy takes images float32 [B, H, W, 3] in [0, 1] and remove_mask bool [B, H, W]
(True = removed) and returns float32 [B, H, W, 3] in [0, 1] where kept pixels are unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_RANGE_SLACK = 1e-4


def check_inputs(images, remove_mask) -> tuple[jax.Array, jax.Array]:
    """Validates and converts: images float [B, H, W, 3] in [0, 1], remove_mask bool [B, H, W].

    Host (numpy) inputs are checked with numpy (no device op compiled per batch shape); device
    arrays on the device."""
    if isinstance(images, jax.core.Tracer) or isinstance(remove_mask, jax.core.Tracer):
        raise TypeError("check_inputs: concrete arrays expected (the strategies are called outside jit)")
    xp = jnp if isinstance(images, jax.Array) or isinstance(remove_mask, jax.Array) else np
    images, remove_mask = xp.asarray(images), xp.asarray(remove_mask)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected [B, H, W, 3] RGB, got shape {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(
            f"images: expected float values in [0, 1], got dtype {images.dtype} "
            "(divide uint8 images by 255)"
        )
    if remove_mask.shape != images.shape[:3]:
        raise ValueError(
            f"remove_mask: expected shape {images.shape[:3]} ([B, H, W] of the images), "
            f"got {remove_mask.shape}"
        )
    if remove_mask.dtype != np.bool_:
        raise ValueError(f"remove_mask: expected bool (True = removed), got dtype {remove_mask.dtype}")
    from ibo_jax.checks import check_finite

    check_finite(images, "images")
    images = images.astype(np.float32)
    if images.size:
        lo, hi = float(images.min()), float(images.max())
        if not (lo >= -_RANGE_SLACK and hi <= 1 + _RANGE_SLACK):
            raise ValueError(f"images: expected values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return jnp.asarray(xp.clip(images, 0.0, 1.0)), jnp.asarray(remove_mask)


def bucket_rows(n: int, minimum: int = 16) -> int:
    """The compiled batch size for n rows: the next power of two (at least `minimum`)."""
    return max(int(minimum), 1 << max(0, int(n) - 1).bit_length())


def padded_rows(fn, *arrays, minimum: int = 16):
    """fn(*arrays) for a row-wise function (row i of the output depends on row i of the inputs
    only), the rows padded to `bucket_rows` by repeating the last one and cut off again: one
    compilation per bucket instead of one per row count (the occlude stage's chunks have many)."""
    n = arrays[0].shape[0]
    if n == 0:
        return fn(*arrays)
    pad = bucket_rows(n, minimum) - n
    if pad:
        arrays = tuple(jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) for a in arrays)
    out = fn(*arrays)
    return out[:n] if pad else out


@jax.jit
def _blacken(images: jax.Array, remove_mask: jax.Array) -> jax.Array:
    return jnp.where(remove_mask[..., None], 0.0, images)


def blackening(images, remove_mask, *, key=None) -> jax.Array:
    """I' = I * (1 - M): removed pixels become black."""
    del key
    images, remove_mask = check_inputs(images, remove_mask)
    return padded_rows(_blacken, images, remove_mask)


@jax.jit
def _mean_fill(images: jax.Array, remove_mask: jax.Array, kept_only: jax.Array) -> jax.Array:
    keep = (~remove_mask)[..., None].astype(jnp.float32)  # [B, H, W, 1]
    whole = jnp.mean(images, axis=(1, 2), keepdims=True)  # [B, 1, 1, 3]
    n_kept = jnp.sum(keep, axis=(1, 2), keepdims=True)
    kept = jnp.sum(images * keep, axis=(1, 2), keepdims=True) / jnp.maximum(n_kept, 1.0)
    mu = jnp.where(kept_only & (n_kept > 0), kept, whole)
    return jnp.where(remove_mask[..., None], mu, images)


def mean(images, remove_mask, *, key=None, kept_only: bool = False) -> jax.Array:
    """I' = I * (1 - M) + mu * M, mu the per-channel mean of the image itself.

    kept_only: take mu over the kept pixels only (falls back to the whole image if none is kept).
    """
    del key
    images, remove_mask = check_inputs(images, remove_mask)
    return padded_rows(lambda x, m: _mean_fill(x, m, jnp.asarray(bool(kept_only))), images, remove_mask)


def to_uint8(images) -> np.ndarray:
    """[0, 1] floats -> uint8 by rounding (how occluded images are stored and re-scored)."""
    x = np.asarray(images)
    x = x.astype(np.float32) if x.dtype != np.float32 else x
    # numpy in float32, as the jnp version was (same IEEE ops, round half to even): no eager
    # device ops on a chunk's thousands of images
    return np.round(np.clip(x, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
