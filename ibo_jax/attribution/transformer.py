"""Attributions that only a transformer has: attention rollout, gradient-weighted rollout, LRP.

All four read a `models.vit.VisionTransformer` through `forward_attention(xn, ops=, attn_taps=)`
(softmax probabilities of every block, [B, heads, N, N]; tokens = prefix tokens (class, then
registers) followed by the patch tokens in raster order).

- `rollout` (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020): per block,
  the heads are fused (`head_fusion` 'mean' | 'max' | 'min'), the residual connection is added as
  an identity and rows are renormalized, `A' = (fuse(A) + I) / 2` then `A' /= A'.sum(-1)` (the
  paper's `0.5 W_att + 0.5 I`; the renormalization only matters for 'max' / 'min', whose fused rows
  do not sum to 1), and the rollout is `A'_L ... A'_s` from `start_layer` s (default 0, the first
  block) to the last block.
- `grad_rollout` (Chefer, Gur & Wolf, "Generic Attention-model Explainability", ICCV 2021):
  `R = I`, then for each block from `start_layer` on, `R <- R + mean_h[(dA * A)^+] R`, where
  `dA` is the gradient of the target logit with respect to the block's attention probabilities
  (taken through `attn_taps`). No row normalization (as the paper).
- `attnlrp`, `cp_lrp` (Achtibat et al., ICML 2024; `attribution.lrp` has the rules): gradient x
  input under the LRP rules, the raw attribution [B, H, W, 3] w.r.t. the [0, 1] image
  (`x * d logit / d x`, as captum's input x gradient; the registry's contract) or, with
  `wrt='normalized'`, the LRP relevance of the normalized input `xn * d logit / d xn` (what lxt
  and the paper report; its sum is the conserved quantity). Default map reduction: the signed sum
  over channels (`reduce='sum'`), then a per-image min-max: most positive relevance -> 1.

The rollouts read the rollout matrix's rows of the tokens the pooled output is made of: the class
token's row for `global_pool='token'`, the mean of the patch tokens' rows for 'avg', the average of
both for 'token_avg' (Virchow's concatenation weighs them alike); for 'map' (attention pooling
over the patch tokens) the mean of the patch tokens' rows as for 'avg' (the pooling query's own
attention is not a block's: the rollout stops at the last block). The patch columns make the token map
[B, h, w]; the registry resizes it to the image (cv2 bilinear, as CAMs) and min-max scales it.
Rollout maps have no raw attribution (`raw=True` is an error).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ibo_jax.attribution import lrp
from ibo_jax.attribution.base import register
from ibo_jax.cam.base import target_score

HEAD_FUSIONS = ("mean", "max", "min")
WRT = ("image", "normalized")


def _hi(x: jax.Array):
    return jax.lax.Precision.HIGHEST


def _check_start(model, start_layer: int) -> int:
    depth = len(model.blocks)
    if not isinstance(start_layer, int) or not -depth <= start_layer < depth:
        raise ValueError(f"start_layer: expected an int block index in [-{depth}, {depth}), "
                         f"got {start_layer!r}")
    return start_layer % depth


def output_row(model, joint: jax.Array) -> jax.Array:
    """[B, N, N] rollout matrix -> [B, N]: the row(s) of the tokens that the pooled output reads."""
    p = model.num_prefix_tokens
    pool = model.config.global_pool
    has_cls = model.config.class_token
    if pool == "token":
        return joint[:, 0]
    if pool in ("avg", "map"):
        return jnp.mean(joint[:, p:], axis=1)
    if pool == "token_avg":
        if not has_cls:
            raise ValueError("global_pool='token_avg' needs a class token")
        return 0.5 * (joint[:, 0] + jnp.mean(joint[:, p:], axis=1))
    raise ValueError(f"global_pool: expected 'token', 'avg', 'token_avg' or 'map', got {pool!r}")


def token_map(model, row: jax.Array) -> jax.Array:
    """[B, N] token weights -> [B, h, w] on the patch grid (prefix tokens dropped)."""
    h, w = model.grid_size
    return row[:, model.num_prefix_tokens:].reshape(row.shape[0], h, w)


def rollout_matrix(attns, *, head_fusion: str = "mean", start_layer: int = 0) -> jax.Array:
    """Abnar & Zuidema's rollout of a list of [B, heads, N, N] attentions -> [B, N, N]."""
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion: expected one of {HEAD_FUSIONS}, got {head_fusion!r}")
    fuse = {"mean": jnp.mean, "max": jnp.max, "min": jnp.min}[head_fusion]
    joint = None
    for a in attns[start_layer:]:
        n = a.shape[-1]
        a = 0.5 * (fuse(a, axis=1) + jnp.eye(n, dtype=a.dtype))  # [B, N, N]
        a = a / jnp.sum(a, axis=-1, keepdims=True)
        joint = a if joint is None else jnp.einsum("bij,bjk->bik", a, joint, precision=_hi(a))
    return joint


@register("rollout", families=("vit",), has_raw=False)
def rollout(model, images, target_class, *, head_fusion: str = "mean", start_layer: int = 0):
    """Attention rollout token map [B, h, w] (`target_class` is not used: rollout is
    class-agnostic). Options: `head_fusion` ('mean' | 'max' | 'min'), `start_layer` (first block
    rolled out; negative counts from the end)."""
    start = _check_start(model, start_layer)
    _, attns = model.forward_attention(model.normalize(images))
    return token_map(model, output_row(model, rollout_matrix(attns, head_fusion=head_fusion,
                                                             start_layer=start)))


def attention_grads(model, xn: jax.Array, target_class: int):
    """(attentions, d target logit / d attentions): two lists of [B, heads, N, N]."""
    b = xn.shape[0]
    heads = model.config.num_heads
    n = model.num_prefix_tokens + model.grid_size[0] * model.grid_size[1]
    taps = [jnp.zeros((b, heads, n, n), xn.dtype) for _ in model.blocks]

    def score(t):
        logits, attns = model.forward_attention(xn, attn_taps=t)
        return jnp.sum(target_score(logits, target_class)), attns

    grads, attns = jax.grad(score, has_aux=True)(taps)
    return attns, grads


def grad_rollout_matrix(attns, grads, *, start_layer: int = 0) -> jax.Array:
    """Chefer et al.'s `R <- R + mean_h[(dA * A)^+] R` from R = I -> [B, N, N]."""
    b, _, n, _ = attns[0].shape
    r = jnp.broadcast_to(jnp.eye(n, dtype=attns[0].dtype), (b, n, n))
    for a, g in zip(attns[start_layer:], grads[start_layer:]):
        cam = jnp.mean(jnp.maximum(g * a, 0.0), axis=1)  # [B, N, N]
        r = r + jnp.einsum("bij,bjk->bik", cam, r, precision=_hi(cam))
    return r


@register("grad_rollout", families=("vit",), has_raw=False)
def grad_rollout(model, images, target_class, *, start_layer: int = 0):
    """Gradient-weighted attention rollout token map [B, h, w] for `target_class`. Option:
    `start_layer` (first block accumulated; negative counts from the end)."""
    start = _check_start(model, start_layer)
    attns, grads = attention_grads(model, model.normalize(images), target_class)
    return token_map(model, output_row(model, grad_rollout_matrix(attns, grads,
                                                                  start_layer=start)))


def lrp_input_gradient(model, xn: jax.Array, target_class: int, rule: str):
    """(logits [B, K], d target logit / d xn [B, H, W, 3]) under the LRP rules `rule`
    ('attnlrp' | 'cp_lrp'); `xn` is the normalized input. The logits are the plain ones (the
    rules change the backward only)."""
    if rule not in lrp.OPS:
        raise ValueError(f"rule: expected one of {tuple(lrp.OPS)}, got {rule!r}")
    ops = lrp.OPS[rule]

    def score(v):
        logits, _ = model.forward_attention(v, ops=ops)
        return jnp.sum(target_score(logits, target_class)), logits

    (_, logits), grad = jax.value_and_grad(score, has_aux=True)(xn)
    return logits, grad


def lrp_relevance(model, images, target_class: int, *, rule: str, wrt: str = "image"):
    """Gradient x input [B, H, W, 3] under the LRP rules `rule` ('attnlrp' | 'cp_lrp'), w.r.t.
    the [0, 1] image (`wrt='image'`) or the normalized input (`wrt='normalized'`)."""
    if wrt not in WRT:
        raise ValueError(f"wrt: expected one of {WRT}, got {wrt!r}")
    xn, pullback = jax.vjp(model.normalize, images)
    _, grad = lrp_input_gradient(model, xn, target_class, rule)
    if wrt == "normalized":
        return xn * grad
    return images * pullback(grad)[0]


@register("attnlrp", families=("vit",), has_raw=True, reduce="sum")
def attnlrp(model, images, target_class, *, wrt: str = "image"):
    """AttnLRP relevance [B, H, W, 3] (gradient x input under `lrp.ATTNLRP_OPS`). Option `wrt`:
    'image' (w.r.t. the [0, 1] image, default) or 'normalized' (the paper's input relevance)."""
    return lrp_relevance(model, images, target_class, rule="attnlrp", wrt=wrt)


@register("cp_lrp", families=("vit",), has_raw=True, reduce="sum")
def cp_lrp(model, images, target_class, *, wrt: str = "image"):
    """CP-LRP relevance [B, H, W, 3] (gradient x input under `lrp.CPLRP_OPS`). Option `wrt` as
    `attnlrp`'s."""
    return lrp_relevance(model, images, target_class, rule="cp_lrp", wrt=wrt)
