"""Ablation-CAM (Desai & Ramaswamy 2020): w_k = (y - y_k) / y on the raw target logit.

y_k is the target logit with channel k of the target layer ablated. Only the rest of the network
after the target layer is re-evaluated: all (image, channel) pairs go through one `lax.map` in
chunks of `batch_size` pairs, vmapped inside. As in pytorch-grad-cam's AblationLayer the ablated
channel is set to 0 when the image's minimum activation is 0 (the usual post-ReLU case), otherwise
to `min - 1e7`. A zero or non-finite target logit makes the weights undefined: the map is flagged
invalid.

ViTs (token models) follow pytorch-grad-cam's `AblationLayerVit`: the target is the output of
`blocks[-1].norm1` as a token sequence [N, C], and channel k is ablated in *every* token, the
prefix tokens (class and register tokens) included, not only in the patch grid the map is drawn
on; the minimum is taken over all tokens too. A LayerNorm output is never all-zero-minimum, so
the fill is `min - 1e7`.

One difference, on purpose: pytorch-grad-cam lowers the fill by a further 1e7 for every further
channel within one of its batches (it re-reads the minimum after each ablation), so its result
depends on its `batch_size`; ibo_jax keeps `min - 1e7` for every channel, which is what
pytorch-grad-cam computes with batch_size=1. It only matters for layers without a ReLU (ViTs); the
parity test measures it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ibo_jax.cam.base import finalize_layer_cam, register, target_score, weighted_sum
from ibo_jax.models.base import target_layer

_ABLATION_VALUE = 1e7


def _ablation_parts(model, xn: jax.Array):
    """(grid [B, h, w, C], prefix [B, P, C] or None, head(grid, prefix, b) -> logits).

    `head` runs the rest of the network on the whole batch (b None) or on image b alone (grid and
    prefix [1, ...]). A token model's prefix tokens at the target layer come from its context
    (`TokenContext.prefix`) so that they can be ablated with the grid; a CNN has none."""
    if hasattr(model, "features_and_context"):
        grid, ctx = model.features_and_context(xn, normalized=True)

        def head(g, p, b=None):
            c = ctx if b is None else jax.tree.map(lambda t: t[b][None], ctx)
            return model.head(g, c._replace(prefix=p))

        return grid, ctx.prefix, head
    acts, head_fn = target_layer(model, xn)
    return acts, None, lambda g, p, b=None: head_fn(g)


@register("ablationcam")
def ablationcam(
    model, images: jax.Array, target_class: int, batch_size: int = 256
) -> tuple[jax.Array, jax.Array]:
    xn = model.normalize(images)
    acts, prefix, head = _ablation_parts(model, xn)  # [B, h, w, C], [B, P, C] | None
    B, C = acts.shape[0], acts.shape[-1]
    orig = target_score(head(acts, prefix), target_class)  # [B]
    lows = jnp.min(acts, axis=(1, 2, 3))  # [B]
    if prefix is not None and prefix.shape[1]:
        lows = jnp.minimum(lows, jnp.min(prefix, axis=(1, 2)))
    fills = jnp.where(lows == 0, 0.0, lows - _ABLATION_VALUE)

    def ablated_score(item):
        b, k = item
        drop = jnp.arange(C) == k  # [C]
        fill = fills[b].astype(acts.dtype)
        a = jnp.where(drop, fill, acts[b])[None]  # [1, h, w, C]
        p = None if prefix is None else jnp.where(drop, fill, prefix[b])[None]  # [1, P, C]
        return target_score(head(a, p, b), target_class)[0]

    b_idx = jnp.repeat(jnp.arange(B), C)
    k_idx = jnp.tile(jnp.arange(C), B)
    scores = jax.lax.map(ablated_score, (b_idx, k_idx), batch_size=min(batch_size, B * C))
    scores = scores.reshape(B, C)
    weights = (orig[:, None] - scores) / orig[:, None]  # [B, C]
    return finalize_layer_cam(weighted_sum(weights, acts), images.shape[1:3])
