"""Eigen-CAM (Muhammad & Yeasin 2020): projection of the centred activations on their first
principal direction.

With A [hw, C] the activations of one image, centred over positions (NaN -> 0, as
pytorch-grad-cam does), the map is `A v1` where v1 is the first right singular vector. It is
computed as `s1 u1` from the top eigenpair of the small Gram matrix `A A^T` [hw, hw] (same result,
much cheaper than an SVD of [hw, C]).

On a ViT the activations are the patch-token grid at `blocks[-1].norm1` (prefix tokens dropped),
as pytorch-grad-cam sees them through a reshape transform that drops the prefix.

Sign rule (the SVD's sign is implementation-defined; pytorch-grad-cam inherits LAPACK's): ibo_jax
orients v1 so that `sum(v1) >= 0`, i.e. the map correlates non-negatively with the channel sum
of the activations (cov(A v1, A 1) = s1^2 * v1.1). Parity with pytorch-grad-cam holds up to this
sign.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ibo_jax.cam.base import finalize_layer_cam, register
from ibo_jax.models.base import target_layer

_HI = jax.lax.Precision.HIGHEST


def first_component_projection(acts: jax.Array) -> jax.Array:
    """[B, h, w, C] -> [B, h, w] projection of centred activations on the first component."""
    B, h, w, C = acts.shape
    a = jnp.where(jnp.isnan(acts), 0.0, acts).reshape(B, h * w, C)
    a = a.astype(jnp.float64 if a.dtype == jnp.float64 else jnp.float32)
    a = a - jnp.mean(a, axis=1, keepdims=True)  # centre each channel over positions
    gram = jnp.einsum("bpc,bqc->bpq", a, a, precision=_HI)  # [B, hw, hw]
    evals, evecs = jnp.linalg.eigh(gram)  # ascending
    u = evecs[:, :, -1]  # [B, hw]
    s = jnp.sqrt(jnp.maximum(evals[:, -1], 0.0))  # [B]
    proj = u * s[:, None]  # = A v1
    v_sum = jnp.einsum("bp,bpc->b", u, a, precision=_HI)  # proportional to sum(v1)
    proj = jnp.where(v_sum[:, None] < 0, -proj, proj)
    return proj.reshape(B, h, w)


@register("eigencam")
def eigencam(model, images: jax.Array, target_class: int) -> tuple[jax.Array, jax.Array]:
    del target_class  # class-agnostic by construction
    acts, _ = target_layer(model, model.normalize(images))  # [B, h, w, C] (a ViT: patch grid)
    return finalize_layer_cam(first_component_projection(acts), images.shape[1:3])
