"""Histogram occlusion: removed pixels drawn from the image's own per-channel value histogram.

I' = I * (1 - M) + H * M, where each channel of each removed pixel is an independent draw from
the empirical distribution of that channel over the image's kept pixels (a choice, docs/method.md).
For uint8-quantized images this is exactly a 256-bin histogram. An image with no kept pixel
draws from all of its pixels. Draws come from per-example keys, so they do not depend on the
batch an image is in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ibo_jax.occlusion.simple import check_inputs, padded_rows
from ibo_jax.rng import example_keys


def _one(image: jax.Array, remove: jax.Array, key: jax.Array) -> jax.Array:
    h, w, c = image.shape
    x = image.reshape(h * w, c)  # [P, C]
    keep = ~remove.reshape(h * w)  # [P]
    n_kept = jnp.sum(keep)
    use = jnp.where(n_kept > 0, keep, True)
    n = jnp.where(n_kept > 0, n_kept, h * w)
    pool = jnp.sort(jnp.where(use[:, None], x, jnp.inf), axis=0)  # [P, C], kept values first
    u = jax.random.uniform(key, (h * w, c))
    idx = jnp.minimum((u * n).astype(jnp.int32), n - 1)  # [P, C]
    draws = jnp.take_along_axis(pool, idx, axis=0)
    out = jnp.where(remove.reshape(h * w)[:, None], draws, x)
    return out.reshape(h, w, c)


_batched = jax.jit(jax.vmap(_one))


def histogram(images, remove_mask, *, key=None) -> jax.Array:
    """Removed pixels <- per-channel draws from the kept pixels' value distribution."""
    images, remove_mask = check_inputs(images, remove_mask)
    keys = example_keys(key, images.shape[0])
    return padded_rows(_batched, images, remove_mask, keys)
