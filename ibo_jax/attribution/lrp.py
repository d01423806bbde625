"""LRP for transformers as gradient x input: the ViT's primitives with modified gradients.

`VisionTransformer.forward_attention(xn, ops=...)` runs every nonlinear or bilinear step of the
forward through an `ops` object (`softmax`, `layer_norm`, `gelu`, `silu`, `matmul`, `mul`). The
objects here compute the same forward values (bit for bit) but change the backward so that
`xn * d logit / d xn` is the LRP relevance of the input (Achtibat et al., "AttnLRP:
Attention-Aware Layer-Wise Relevance Propagation for Transformers", ICML 2024; lxt 2.1's
"efficient" implementation). Linear layers, residual additions and LayerScale keep their plain
gradient: LRP's epsilon rule on a linear layer is gradient x input already (epsilon -> 0). No
gamma rule is applied to the linear layers (the paper tunes one for ViTs; lxt leaves it optional).

Rules (both methods):
- LayerNorm: identity rule on the normalization, `(x - mean(x)) / stop_gradient(std(x))`
  (Proposition 3.4 of the paper; centring is linear and keeps its gradient);
- element-wise nonlinearities (exact-erf GELU, the SwiGLU gate's SiLU): identity rule, the
  gradient replaced by `f(x) / x` (lxt's `identity_rule_implicit`; where |x| < 1e-6 the limit
  f(x)/x -> 1/2 of both functions is used instead of lxt's `x + 1e-10` denominator).

AttnLRP (`ATTNLRP_OPS`):
- softmax: the softmax rule `R_in = x (R_out - s sum R_out)` (Proposition 3.1), which in the
  gradient x input framework is the plain softmax gradient, so it is left unchanged;
- products of two activations (q k^T, A V, SwiGLU gate * value): the uniform rule, half of the
  relevance to each factor: the gradient to both inputs is halved (lxt divides q and k by 4 and v
  by 2, the same thing counted per tensor).

CP-LRP (`CPLRP_OPS`; Ali et al., ICML 2022, as lxt 2.1 patches a ViT):
- softmax: the attention probabilities are constants (`stop_gradient`): relevance flows through
  A V into the values only;
- SwiGLU: the gate is a constant (lxt's `cp_gated_mlp_forward`): relevance flows into the value;
- q k^T and A V: plain products (with A constant the uniform rule has nothing to split).

Conservation: with every bias, position embedding and prefix token zero, CP-LRP's network is
linear in its input for the frozen constants, so `sum(xn * grad)` equals the logit to rounding;
AttnLRP's softmax rule is conservative only up to a bias-like term (the paper's Proposition 3.1),
so its sum differs from the logit (tests/test_attribution_vit.py checks the first and reports
the second).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ibo_jax.models.base import to_float
from ibo_jax.models.vit import Ops

_TINY = 1e-6  # |x| below which the identity rule uses lim f(x)/x = 1/2 (GELU and SiLU)


def _layer_norm_identity(x: jax.Array, scale, bias, eps: float) -> jax.Array:
    """`vit.Ops.layer_norm` with 1/std a constant in the backward (identity rule on the
    normalization; the centring keeps its gradient)."""
    xf = to_float(x)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    inv = jax.lax.stop_gradient(jax.lax.rsqrt(var + eps))
    return ((xf - mean) * inv).astype(x.dtype) * scale + bias


def identity_rule(fn, x: jax.Array) -> jax.Array:
    """`fn(x)` in the forward; in the backward the gradient is multiplied by `fn(x) / x`, so that
    gradient x input passes the output relevance through unchanged (the identity rule)."""
    y = fn(x)
    small = jnp.abs(x) < _TINY
    ratio = jnp.where(small, 0.5, y / jnp.where(small, 1.0, x)).astype(x.dtype)
    ratio = jax.lax.stop_gradient(ratio)
    # forward: y + 0 exactly; backward: d/dx = ratio
    return jax.lax.stop_gradient(y) + (x - jax.lax.stop_gradient(x)) * ratio


def halve_gradient(y: jax.Array) -> jax.Array:
    """`y` in the forward (exactly: y/2 + y/2), half of its gradient in the backward."""
    half = y * 0.5
    return half + jax.lax.stop_gradient(half)


class _IdentityRuleOps(Ops):
    """The rules both methods share: identity rule on GELU/SiLU and on LayerNorm's normalization."""

    def layer_norm(self, x, scale, bias, eps):
        return _layer_norm_identity(x, scale, bias, eps)

    def gelu(self, x):
        return identity_rule(super().gelu, x)

    def silu(self, x):
        return identity_rule(super().silu, x)


class AttnLRPOps(_IdentityRuleOps):
    """AttnLRP: softmax rule (plain gradient), uniform rule on products of two activations,
    identity rule on GELU/SiLU and on LayerNorm's normalization."""

    name = "attnlrp"

    def matmul(self, subscripts, a, b):
        return halve_gradient(super().matmul(subscripts, a, b))

    def mul(self, a, b):
        return halve_gradient(super().mul(a, b))


class CPLRPOps(_IdentityRuleOps):
    """CP-LRP: attention probabilities and the SwiGLU gate are constants in the backward;
    identity rule on GELU/SiLU and on LayerNorm's normalization."""

    name = "cp_lrp"

    def softmax(self, x, axis=-1):
        return jax.lax.stop_gradient(super().softmax(x, axis=axis))

    def mul(self, a, b):
        """SwiGLU's `mul(silu(gate), value)`: the gate factor is a constant."""
        return super().mul(jax.lax.stop_gradient(a), b)


ATTNLRP_OPS = AttnLRPOps()
CPLRP_OPS = CPLRPOps()
OPS = {"attnlrp": ATTNLRP_OPS, "cp_lrp": CPLRP_OPS}
