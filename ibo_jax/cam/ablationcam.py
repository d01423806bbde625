"""Ablation-CAM (Desai & Ramaswamy 2020): w_k = (y - y_k) / y on the raw target logit.

y_k is the target logit with channel k of the target layer ablated. Only `head` is re-evaluated
(the ablation happens at the target layer): all (image, channel) pairs go through one
`lax.map` in chunks of `batch_size` pairs, vmapped inside. As in pytorch-grad-cam's
AblationLayer the ablated channel is set to 0 when the image's minimum activation is 0 (the
usual post-ReLU case), otherwise to `min - 1e7` (pytorch-grad-cam then lowers the fill by 1e7
for every further channel of a chunk; ibo_jax keeps it fixed, which only matters for layers
without a ReLU). A zero or non-finite target logit makes the weights undefined: the map is
flagged invalid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ibo_jax.cam.base import finalize_layer_cam, register, target_score, weighted_sum

_ABLATION_VALUE = 1e7


@register("ablationcam")
def ablationcam(
    model, images: jax.Array, target_class: int, batch_size: int = 256
) -> tuple[jax.Array, jax.Array]:
    xn = model.normalize(images)
    acts = model.features(xn, normalized=True)  # [B, h, w, C]
    B, C = acts.shape[0], acts.shape[-1]
    orig = target_score(model.head(acts), target_class)  # [B]
    lows = jnp.min(acts, axis=(1, 2, 3))  # [B]
    fills = jnp.where(lows == 0, 0.0, lows - _ABLATION_VALUE)

    def ablated_score(item):
        b, k = item
        a = acts[b]  # [h, w, C]
        drop = jnp.arange(C) == k  # [C]
        a = jnp.where(drop, fills[b].astype(a.dtype), a)
        return target_score(model.head(a[None]), target_class)[0]

    b_idx = jnp.repeat(jnp.arange(B), C)
    k_idx = jnp.tile(jnp.arange(C), B)
    scores = jax.lax.map(ablated_score, (b_idx, k_idx), batch_size=min(batch_size, B * C))
    scores = scores.reshape(B, C)
    weights = (orig[:, None] - scores) / orig[:, None]  # [B, C]
    return finalize_layer_cam(weighted_sum(weights, acts), images.shape[1:3])
