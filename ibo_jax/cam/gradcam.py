"""Grad-CAM (Selvaraju et al. 2017): channel weights = spatial mean of the target gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ibo_jax.cam.base import features_and_grads, finalize_layer_cam, register, weighted_sum


@register("gradcam")
def gradcam(model, images: jax.Array, target_class: int) -> tuple[jax.Array, jax.Array]:
    xn = model.normalize(images)
    acts, grads = features_and_grads(model, xn, target_class)  # [B, h, w, C] each
    weights = jnp.mean(grads, axis=(1, 2))  # [B, C]
    return finalize_layer_cam(weighted_sum(weights, acts), images.shape[1:3])
