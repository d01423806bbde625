"""HiResCAM (Draelos & Carin 2020): sum_k g_k * A_k element-wise, no spatial averaging."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ibo_jax.cam.base import features_and_grads, finalize_layer_cam, register


@register("hirescam")
def hirescam(model, images: jax.Array, target_class: int) -> tuple[jax.Array, jax.Array]:
    xn = model.normalize(images)
    acts, grads = features_and_grads(model, xn, target_class)  # [B, h, w, C]
    return finalize_layer_cam(jnp.sum(grads * acts, axis=-1), images.shape[1:3])
