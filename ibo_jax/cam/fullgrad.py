"""FullGrad (Srinivas & Fleuret 2019) as pytorch-grad-cam computes it.

map = sum over (image, channel) maps, each min-max scaled on its own and resized to the input:
|dy/dx * x| for the 3 channels of the normalized input, and |b_c * dy/dz_c| for every channel c of
every biased 2-D layer z (BatchNorm biases folded as `beta - mean * gamma / sqrt(var + eps)`,
conv biases as they are; rank-2 outputs such as the final Linear are skipped, as
pytorch-grad-cam only takes Conv2d/BatchNorm2d). The sum over channels is taken before the
(linear) resize, which is the same map at a fraction of the cost. All bias gradients come from
one backward pass through `model.biased_forward` with zero offsets. `target_layers` does not
exist here: FullGrad always uses every biased layer.

On a ViT this is what pytorch-grad-cam computes there: its only biased Conv2d/BatchNorm2d is the
patch embedding `patch_embed.proj` (LayerNorm and Linear biases are not collected), so the map is
the input term plus |bias * gradient| at the patch embedding's [B, h, w, D] output (none when the
embedding has no bias, as with `pre_norm`). pytorch-grad-cam gets it only without a reshape
transform: the ViT one would be applied to that conv's output and fails.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ibo_jax.cam.base import minmax, register, resize, target_score


@register("fullgrad")
def fullgrad(model, images: jax.Array, target_class: int) -> tuple[jax.Array, jax.Array]:
    H, W = images.shape[1:3]
    xn = model.normalize(images)  # [B, H, W, 3]
    offsets = [jnp.zeros(s, xn.dtype) for s in model.bias_shapes(xn.shape)]
    biases = model.biases()
    if len(biases) != len(offsets):
        raise ValueError(f"model.biases() has {len(biases)} entries, bias_shapes {len(offsets)}")

    def score(x, offs):
        return jnp.sum(target_score(model.biased_forward(x, offs), target_class))

    gx, goffs = jax.grad(score, argnums=(0, 1))(xn, offsets)
    total = jnp.sum(minmax(jnp.abs(gx * xn), axes=(1, 2)), axis=-1)  # [B, H, W]
    for bias, g in zip(biases, goffs, strict=True):
        if g.ndim != 4:
            continue
        per_channel = minmax(jnp.abs(bias.reshape(1, 1, 1, -1) * g), axes=(1, 2))  # [B, h, w, C]
        total = total + resize(jnp.sum(per_channel, axis=-1), (H, W))
    finite = jnp.all(jnp.isfinite(total), axis=(1, 2))
    total = jnp.where(jnp.isfinite(total), total, 0.0)
    valid = finite & (jnp.max(total, axis=(1, 2)) > jnp.min(total, axis=(1, 2)))
    heat = minmax(total)
    return jnp.where(valid[:, None, None], heat, 0.0), valid
