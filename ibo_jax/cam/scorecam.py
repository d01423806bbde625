"""Score-CAM (Wang et al. 2020) with pytorch-grad-cam's conventions.

Each activation channel is upsampled to the input size (bilinear, align_corners=True), min-max
normalized on its own (eps 1e-8) and multiplied with the *normalized* model input; the weights are
a softmax over channels of the masked inputs' raw target logits. The B*C masked forwards run
under one `lax.map` in chunks of `batch_size` (vmapped inside); the masks are built per chunk so
memory stays at `batch_size` images. On a ViT the channels are those of the patch-token grid at
`blocks[-1].norm1` ([B, h, w, C], prefix tokens dropped), upsampled from the real grid, and each
masked input goes through the whole ViT. `dtype=jnp.bfloat16` runs the masked forwards in bf16
(GPU speed; parity is an fp32 property).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ibo_jax.cam.base import (
    finalize_layer_cam,
    logits_normalized,
    register,
    resize,
    target_score,
    weighted_sum,
)
from ibo_jax.models.base import target_layer

_EPS = 1e-8


@register("scorecam")
def scorecam(
    model, images: jax.Array, target_class: int, batch_size: int = 64, dtype=None
) -> tuple[jax.Array, jax.Array]:
    H, W = images.shape[1:3]
    xn = model.normalize(images)  # [B, H, W, 3]
    acts, _ = target_layer(model, xn)  # [B, h, w, C] (a ViT: the patch grid)
    B, C = acts.shape[0], acts.shape[-1]
    run_model = model
    if dtype is not None and jnp.dtype(dtype) != jnp.float32:
        graphdef, state = nnx.split(model)
        state = jax.tree.map(
            lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, state
        )
        run_model = nnx.merge(graphdef, state)

    def masked_score(item):
        b, k = item
        up = resize(acts[b, :, :, k], (H, W), align_corners=True)  # [H, W]
        up = (up - jnp.min(up)) / (jnp.max(up) - jnp.min(up) + _EPS)
        x = xn[b] * up[:, :, None]  # [H, W, 3]
        if dtype is not None:
            x = x.astype(dtype)
        logits = logits_normalized(run_model, x[None])
        score = target_score(logits, target_class)[0]
        return score.astype(jnp.float64 if score.dtype == jnp.float64 else jnp.float32)

    b_idx = jnp.repeat(jnp.arange(B), C)
    k_idx = jnp.tile(jnp.arange(C), B)
    scores = jax.lax.map(masked_score, (b_idx, k_idx), batch_size=min(batch_size, B * C))
    weights = jax.nn.softmax(scores.reshape(B, C), axis=-1)  # [B, C]
    return finalize_layer_cam(weighted_sum(weights, acts), (H, W))
