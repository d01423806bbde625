"""XGrad-CAM (Fu et al. 2020): w_k = sum(g * A) / (sum(A) + 1e-7)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ibo_jax.cam.base import features_and_grads, finalize_layer_cam, register, weighted_sum

_EPS = 1e-7


@register("xgradcam")
def xgradcam(model, images: jax.Array, target_class: int) -> tuple[jax.Array, jax.Array]:
    xn = model.normalize(images)
    acts, grads = features_and_grads(model, xn, target_class)  # [B, h, w, C]
    sum_acts = jnp.sum(acts, axis=(1, 2))  # [B, C]
    weights = jnp.sum(grads * acts, axis=(1, 2)) / (sum_acts + _EPS)
    return finalize_layer_cam(weighted_sum(weights, acts), images.shape[1:3])
