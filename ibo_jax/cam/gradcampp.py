"""Grad-CAM++ (Chattopadhyay et al. 2018), closed-form alphas as in pytorch-grad-cam.

alpha = g^2 / (2 g^2 + sum(A) g^3 + 1e-6), zero where g == 0; w_k = sum(relu(g) * alpha).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ibo_jax.cam.base import features_and_grads, finalize_layer_cam, register, weighted_sum

_EPS = 1e-6


@register("gradcam++")
def gradcam_plus_plus(model, images: jax.Array, target_class: int) -> tuple[jax.Array, jax.Array]:
    xn = model.normalize(images)
    acts, grads = features_and_grads(model, xn, target_class)  # [B, h, w, C]
    g2 = grads**2
    g3 = g2 * grads
    sum_acts = jnp.sum(acts, axis=(1, 2), keepdims=True)  # [B, 1, 1, C]
    alpha = g2 / (2 * g2 + sum_acts * g3 + _EPS)
    alpha = jnp.where(grads != 0, alpha, 0.0)
    weights = jnp.sum(jnp.maximum(grads, 0.0) * alpha, axis=(1, 2))  # [B, C]
    return finalize_layer_cam(weighted_sum(weights, acts), images.shape[1:3])
