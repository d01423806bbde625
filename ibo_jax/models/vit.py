"""A Vision Transformer in timm's layout (NNX), covering the pathology foundation models.

    config = models.vit_preset("uni")                   # or ViTConfig(...) / vit_preset("tiny")
    model = models.vit(config, rngs=nnx.Rngs(0))        # random weights; models.from_timm loads them
    logits = model(images)                              # images [B, H, W, 3] in [0, 1] -> [B, K]

Module tree (timm names; the linear head is `fc`, timm's `head`): `patch_embed.proj` (conv p x p,
stride p), `cls_token` [1, 1, D], `reg_token` [1, R, D], `pos_embed` [1, L, D] (L = h*w, plus the
prefix tokens unless `no_embed_class`), `norm_pre`, `blocks[i]` (`norm1`, `attn.qkv`, `attn.proj`,
`ls1.gamma`, `norm2`, `mlp.fc1`, `mlp.fc2`, `ls2.gamma`), `norm` / `fc_norm`, `attn_pool`, `fc`.
Token order is timm's: [cls, registers..., patches in raster order]; `num_prefix_tokens` counts
the first two groups. Attention uses an explicit softmax so its probabilities and their gradients
are reachable (`forward_attention`). Every nonlinear or bilinear step goes through an `ops` object
(default `DEFAULT_OPS`), which the LRP methods replace by versions with modified gradients.

Token-model classifier contract (see `models.base`): `features(x)` is the patch-token grid
[B, h, w, D] at the output of `blocks[-1].norm1` (pytorch-grad-cam's documented ViT target, prefix
tokens dropped); `features_and_context(x)` also returns what the rest of the network needs and
`head(grid, context)` runs that rest.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ibo_jax.models.base import IMAGENET_MEAN, IMAGENET_STD, check_images, to_float
from ibo_jax.models.layers import Conv2d

POOLS = ("token", "avg", "token_avg", "map")
MLPS = ("gelu", "swiglu")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """A ViT's architecture and input normalization; field names are timm's where timm has one.

    mlp_hidden: fc1's output width (timm's `hidden_features = int(embed_dim * mlp_ratio)`); None
    means 4 * embed_dim. mlp: 'gelu' (exact erf GELU, timm's nn.GELU) or 'swiglu' (timm's
    SwiGLUPacked: fc1 gives [gate | value], each mlp_hidden // 2 wide, out = silu(gate) * value).
    layer_scale: LayerScale after attention and MLP (`ls1.gamma`, `ls2.gamma`, timm's init_values).
    global_pool: 'token' (class token), 'avg' (mean of the patch tokens), 'token_avg' (class token
    and patch mean concatenated, Virchow's embedding: the head reads 2 * embed_dim), 'map' (timm's
    AttentionPoolLatent over the patch tokens). fc_norm: LayerNorm after pooling instead of before
    (None: timm's default, True for 'avg'). input_mean/input_std: per-channel RGB normalization of
    images in [0, 1] the weights were trained with.
    """

    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden: int | None = None
    mlp: str = "gelu"
    layer_scale: bool = False
    layer_scale_init: float = 1e-5
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False
    global_pool: str = "token"
    fc_norm: bool | None = None
    pre_norm: bool = False
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    num_classes: int = 2
    input_mean: tuple[float, float, float] = tuple(IMAGENET_MEAN.tolist())
    input_std: tuple[float, float, float] = tuple(IMAGENET_STD.tolist())

    def __post_init__(self):
        for name in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "num_classes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ViTConfig.{name}: expected an int >= 1, got {v!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"ViTConfig.img_size: expected a multiple of patch_size={self.patch_size}, "
                             f"got {self.img_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"ViTConfig.embed_dim: expected a multiple of num_heads={self.num_heads}, "
                             f"got {self.embed_dim}")
        if self.mlp not in MLPS:
            raise ValueError(f"ViTConfig.mlp: expected one of {MLPS}, got {self.mlp!r}")
        if self.global_pool not in POOLS:
            raise ValueError(f"ViTConfig.global_pool: expected one of {POOLS}, got {self.global_pool!r}")
        if self.global_pool in ("token", "token_avg") and not self.class_token:
            raise ValueError(f"ViTConfig.global_pool: {self.global_pool!r} needs class_token=True")
        if self.global_pool == "map" and self.mlp != "gelu":
            raise ValueError("ViTConfig.global_pool: 'map' is supported with mlp='gelu' only (timm's attention "
                             "pool then has the same GELU MLP)")
        if not isinstance(self.reg_tokens, int) or self.reg_tokens < 0:
            raise ValueError(f"ViTConfig.reg_tokens: expected an int >= 0, got {self.reg_tokens!r}")
        if self.mlp_hidden is not None and (self.mlp_hidden < 1 or (self.mlp == "swiglu" and self.mlp_hidden % 2)):
            raise ValueError(f"ViTConfig.mlp_hidden: expected an int >= 1 (even for 'swiglu'), got {self.mlp_hidden!r}")
        if not self.norm_eps > 0:
            raise ValueError(f"ViTConfig.norm_eps: expected > 0, got {self.norm_eps!r}")
        for name in ("input_mean", "input_std"):
            v = getattr(self, name)
            if len(v) != 3 or (name == "input_std" and min(v) <= 0):
                raise ValueError(f"ViTConfig.{name}: expected 3 per-channel values (RGB, images in [0, 1])"
                                 f"{', all > 0' if name == 'input_std' else ''}, got {v!r}")

    @property
    def grid_size(self) -> tuple[int, int]:
        g = self.img_size // self.patch_size
        return g, g

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def hidden(self) -> int:
        return self.mlp_hidden if self.mlp_hidden is not None else 4 * self.embed_dim

    @property
    def use_fc_norm(self) -> bool:
        return self.global_pool == "avg" if self.fc_norm is None else bool(self.fc_norm)

    @property
    def num_features(self) -> int:
        """Width of the pooled embedding the head reads."""
        return 2 * self.embed_dim if self.global_pool == "token_avg" else self.embed_dim


class Ops:
    """The nonlinear and bilinear primitives of the forward pass. Subclass and override to change
    their gradients (LRP rules); forward values must stay the same."""

    def softmax(self, x: jax.Array, axis: int = -1) -> jax.Array:
        return jax.nn.softmax(to_float(x), axis=axis).astype(x.dtype)

    def layer_norm(self, x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
        xf = to_float(x)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype) * scale + bias

    def gelu(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=False)  # timm's nn.GELU is the exact erf form

    def silu(self, x: jax.Array) -> jax.Array:
        return jax.nn.silu(x)

    def matmul(self, subscripts: str, a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.einsum(subscripts, a, b)

    def mul(self, a: jax.Array, b: jax.Array) -> jax.Array:
        return a * b


DEFAULT_OPS = Ops()


class TokenContext(NamedTuple):
    """What `head` needs beside the target grid: the residual stream entering the last block
    [B, N, D] and the prefix tokens of its norm1 output [B, P, D] (batch-aligned with the grid)."""

    residual: jax.Array
    prefix: jax.Array


def _trunc_normal(std: float):
    return nnx.initializers.truncated_normal(std)


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis (`scale`, `bias`), run through `ops.layer_norm`."""

    def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs):
        del rngs
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.eps = float(eps)

    def __call__(self, x: jax.Array, ops: Ops = DEFAULT_OPS) -> jax.Array:
        return ops.layer_norm(x, self.scale[...], self.bias[...], self.eps)


class LayerScale(nnx.Module):
    def __init__(self, dim: int, init: float):
        self.gamma = nnx.Param(jnp.full((dim,), init, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.gamma[...]


def _linear(cin: int, cout: int, *, bias: bool = True, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(cin, cout, use_bias=bias, kernel_init=_trunc_normal(0.02), rngs=rngs)


class Attention(nnx.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, *, rngs: nnx.Rngs):
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = _linear(dim, 3 * dim, bias=qkv_bias, rngs=rngs)
        self.proj = _linear(dim, dim, rngs=rngs)

    def __call__(self, y: jax.Array, ops: Ops, mask: jax.Array | None, tap: jax.Array | None,
                 record: list | None) -> jax.Array:  # [B, N, D] -> [B, N, D]
        b, n, d = y.shape
        qkv = self.qkv(y).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = (jnp.moveaxis(qkv[:, :, i], 1, 2) for i in range(3))  # [B, heads, N, hd]
        logits = ops.matmul("bhqd,bhkd->bhqk", q * (self.head_dim ** -0.5), k)
        if mask is not None:  # [B, N] keys kept
            logits = jnp.where(mask[:, None, None, :], logits, jnp.asarray(-1e9, logits.dtype))
        a = ops.softmax(logits, axis=-1)  # [B, heads, N, N]
        if record is not None:
            record.append(a)
        if tap is not None:
            a = a + tap.astype(a.dtype)
        out = ops.matmul("bhqk,bhkd->bhqd", a, v)
        return self.proj(jnp.moveaxis(out, 1, 2).reshape(b, n, d))


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, kind: str, *, rngs: nnx.Rngs):
        self.kind = kind
        self.fc1 = _linear(dim, hidden, rngs=rngs)
        self.fc2 = _linear(hidden // 2 if kind == "swiglu" else hidden, dim, rngs=rngs)

    def __call__(self, x: jax.Array, ops: Ops) -> jax.Array:
        h = self.fc1(x)
        if self.kind == "swiglu":
            gate, value = jnp.split(h, 2, axis=-1)
            h = ops.mul(ops.silu(gate), value)
        else:
            h = ops.gelu(h)
        return self.fc2(h)


class Block(nnx.Module):
    """Pre-norm block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, c: ViTConfig, *, rngs: nnx.Rngs):
        d = c.embed_dim
        self.norm1 = LayerNorm(d, c.norm_eps, rngs=rngs)
        self.attn = Attention(d, c.num_heads, c.qkv_bias, rngs=rngs)
        self.ls1 = LayerScale(d, c.layer_scale_init) if c.layer_scale else None
        self.norm2 = LayerNorm(d, c.norm_eps, rngs=rngs)
        self.mlp = Mlp(d, c.hidden, c.mlp, rngs=rngs)
        self.ls2 = LayerScale(d, c.layer_scale_init) if c.layer_scale else None

    def after_norm1(self, x: jax.Array, y: jax.Array, ops: Ops, mask=None, tap=None, record=None):
        """The block from its norm1 output `y` on, given its input (the residual stream) `x`."""
        h = self.attn(y, ops, mask, tap, record)
        x = x + (self.ls1(h) if self.ls1 is not None else h)
        h = self.mlp(self.norm2(x, ops), ops)
        return x + (self.ls2(h) if self.ls2 is not None else h)

    def __call__(self, x: jax.Array, ops: Ops, mask=None, tap=None, record=None) -> jax.Array:
        return self.after_norm1(x, self.norm1(x, ops), ops, mask, tap, record)


class AttentionPoolLatent(nnx.Module):
    """timm's AttentionPoolLatent (one latent query, q/kv projections, proj, norm + MLP residual)."""

    def __init__(self, c: ViTConfig, *, rngs: nnx.Rngs):
        d = c.embed_dim
        self.num_heads, self.head_dim = c.num_heads, d // c.num_heads
        self.latent = nnx.Param(_trunc_normal(d ** -0.5)(rngs.params(), (1, 1, d), jnp.float32))
        self.q = _linear(d, d, bias=c.qkv_bias, rngs=rngs)
        self.kv = _linear(d, 2 * d, bias=c.qkv_bias, rngs=rngs)
        self.proj = _linear(d, d, rngs=rngs)
        self.norm = LayerNorm(d, c.norm_eps, rngs=rngs)
        self.mlp = Mlp(d, c.hidden, "gelu", rngs=rngs)  # timm: Mlp(int(dim * mlp_ratio))

    def __call__(self, x: jax.Array, ops: Ops, mask: jax.Array | None) -> jax.Array:  # [B,N,D] -> [B,D]
        b, n, d = x.shape
        q = self.q(self.latent[...]).reshape(1, 1, self.num_heads, self.head_dim)
        q = jnp.broadcast_to(jnp.moveaxis(q, 1, 2), (b, self.num_heads, 1, self.head_dim))
        kv = self.kv(x).reshape(b, n, 2, self.num_heads, self.head_dim)
        k, v = jnp.moveaxis(kv[:, :, 0], 1, 2), jnp.moveaxis(kv[:, :, 1], 1, 2)
        logits = ops.matmul("bhqd,bhkd->bhqk", q * (self.head_dim ** -0.5), k)
        if mask is not None:
            logits = jnp.where(mask[:, None, None, :], logits, jnp.asarray(-1e9, logits.dtype))
        out = ops.matmul("bhqk,bhkd->bhqd", ops.softmax(logits, axis=-1), v)
        out = self.proj(jnp.moveaxis(out, 1, 2).reshape(b, 1, d))
        out = out + self.mlp(self.norm(out, ops), ops)
        return out[:, 0]


class PatchEmbed(nnx.Module):
    def __init__(self, c: ViTConfig, *, rngs: nnx.Rngs):
        p = c.patch_size
        self.proj = Conv2d(3, c.embed_dim, p, p, 0, bias=not c.pre_norm, rngs=rngs)

    def __call__(self, xn: jax.Array) -> jax.Array:  # [B, H, W, 3] -> [B, h, w, D]
        return self.proj(xn)


class VisionTransformer(nnx.Module):
    """timm's VisionTransformer forward (inference: no dropout) for images NHWC in [0, 1]."""

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        d = c.embed_dim
        self.num_classes = c.num_classes
        self.grid_size = c.grid_size
        self.num_prefix_tokens = c.num_prefix_tokens
        self.patch_embed = PatchEmbed(c, rngs=rngs)
        self.cls_token = nnx.Param(_trunc_normal(1e-6)(rngs.params(), (1, 1, d), jnp.float32)) \
            if c.class_token else None
        self.reg_token = nnx.Param(_trunc_normal(1e-6)(rngs.params(), (1, c.reg_tokens, d), jnp.float32)) \
            if c.reg_tokens else None
        n_pos = c.grid_size[0] * c.grid_size[1] + (0 if c.no_embed_class else c.num_prefix_tokens)
        self.pos_embed = nnx.Param(_trunc_normal(0.02)(rngs.params(), (1, n_pos, d), jnp.float32))
        self.norm_pre = LayerNorm(d, c.norm_eps, rngs=rngs) if c.pre_norm else None
        self.blocks = nnx.List([Block(c, rngs=rngs) for _ in range(c.depth)])
        self.norm = LayerNorm(d, c.norm_eps, rngs=rngs) if not c.use_fc_norm else None
        self.attn_pool = AttentionPoolLatent(c, rngs=rngs) if c.global_pool == "map" else None
        self.fc_norm = LayerNorm(d, c.norm_eps, rngs=rngs) if c.use_fc_norm else None
        self.fc = nnx.Linear(c.num_features, c.num_classes, kernel_init=_trunc_normal(0.02), rngs=rngs)

    # ---- input --------------------------------------------------------------------------------
    def normalize(self, x: jax.Array) -> jax.Array:  # [B, H, W, 3] in [0, 1] -> normalized
        check_images(x)
        x = to_float(x)
        return (x - jnp.asarray(self.config.input_mean, x.dtype)) / jnp.asarray(self.config.input_std, x.dtype)

    def _check_size(self, xn) -> None:
        s = self.config.img_size
        if getattr(xn, "ndim", None) != 4 or xn.shape[-1] != 3:
            raise ValueError(f"images: expected a [B, H, W, 3] array, got shape {getattr(xn, 'shape', None)}")
        if tuple(xn.shape[1:3]) != (s, s):
            raise ValueError(f"images: this ViT takes {s}x{s} images (ViTConfig.img_size), got "
                             f"{xn.shape[1]}x{xn.shape[2]}; build it with img_size={xn.shape[1]} "
                             "(from_timm resamples the position embeddings)")

    def _prepare(self, x: jax.Array, normalized: bool) -> jax.Array:
        xn = x if normalized else self.normalize(x)
        self._check_size(xn)
        return xn

    def _key_mask(self, keep, batch: int) -> jax.Array | None:
        if keep is None:
            return None
        h, w = self.grid_size
        keep = jnp.asarray(keep)
        if keep.shape != (batch, h * w) or keep.dtype != jnp.bool_:
            raise ValueError(f"keep: expected a bool [B, h*w] = [{batch}, {h * w}] array of kept patch "
                             f"tokens, got {keep.dtype} {tuple(keep.shape)}")
        return jnp.concatenate([jnp.ones((batch, self.num_prefix_tokens), bool), keep], axis=1)

    # ---- trunk --------------------------------------------------------------------------------
    def _tokens(self, xn: jax.Array, offset: jax.Array | None = None) -> jax.Array:  # -> [B, N, D]
        p = self.patch_embed(xn)  # [B, h, w, D]
        if offset is not None:
            p = p + offset.astype(p.dtype)
        b, d = p.shape[0], p.shape[-1]
        x = p.reshape(b, -1, d)
        pos = self.pos_embed[...].astype(x.dtype)
        prefix = [jnp.broadcast_to(t[...].astype(x.dtype), (b, t.shape[1], d))
                  for t in (self.cls_token, self.reg_token) if t is not None]
        if self.config.no_embed_class:
            x = jnp.concatenate([*prefix, x + pos], axis=1)
        else:
            x = jnp.concatenate([*prefix, x], axis=1) + pos
        return self.norm_pre(x) if self.norm_pre is not None else x

    def _pool(self, x: jax.Array, ops: Ops, mask: jax.Array | None) -> jax.Array:  # [B,N,D] -> [B,F]
        c, np_ = self.config, self.num_prefix_tokens
        if self.norm is not None:
            x = self.norm(x, ops)
        patches = x[:, np_:]
        if c.global_pool == "map":
            out = self.attn_pool(patches, ops, None if mask is None else mask[:, np_:])
        elif c.global_pool == "token":
            out = x[:, 0]
        else:
            if mask is None:
                mean = jnp.mean(patches, axis=1)
            else:
                m = mask[:, np_:, None].astype(x.dtype)
                mean = jnp.sum(patches * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1)
            out = mean if c.global_pool == "avg" else jnp.concatenate([x[:, 0], mean], axis=-1)
        return self.fc_norm(out, ops) if self.fc_norm is not None else out

    def _forward(self, xn, ops: Ops, *, taps=None, keep=None, record=None, offset=None):
        """Normalized images -> pooled embedding [B, F]."""
        x = self._tokens(xn, offset)
        mask = self._key_mask(keep, x.shape[0])
        if taps is not None and len(taps) != len(self.blocks):
            raise ValueError(f"attn_taps: expected {len(self.blocks)} arrays (one per block), got {len(taps)}")
        for i, blk in enumerate(self.blocks):
            x = blk(x, ops, mask, None if taps is None else taps[i], record)
        return self._pool(x, ops, mask)

    # ---- public API ---------------------------------------------------------------------------
    def __call__(self, x: jax.Array, *, keep: jax.Array | None = None) -> jax.Array:  # -> [B, K]
        """Logits. keep: optional bool [B, h*w] (raster order) of patch tokens kept; a dropped token
        is excluded as a key from every attention and from patch pooling, exactly as if it were
        removed from the sequence after the position embedding (prefix tokens are always kept)."""
        return to_float(self.fc(self._forward(self._prepare(x, False), DEFAULT_OPS, keep=keep)))

    def embed(self, x: jax.Array, *, normalized: bool = False) -> jax.Array:  # -> [B, F]
        """The pooled representation the linear head reads (after norm / fc_norm): fc(embed(x)) == model(x)."""
        return self._forward(self._prepare(x, normalized), DEFAULT_OPS)

    def forward_attention(self, xn: jax.Array, *, ops: Ops | None = None, attn_taps=None,
                          keep: jax.Array | None = None) -> tuple[jax.Array, list[jax.Array]]:
        """(logits [B, K], attentions): `xn` normalized; one softmax probability array
        [B, heads, N, N] per block (before its tap). attn_taps: optional list (one per block) of
        [B, heads, N, N] added to the probabilities after the softmax (zeros change nothing; the
        gradient w.r.t. a tap is the gradient w.r.t. that block's attention matrix)."""
        record: list[jax.Array] = []
        emb = self._forward(self._prepare(xn, True), ops or DEFAULT_OPS, taps=attn_taps, keep=keep,
                            record=record)
        return to_float(self.fc(emb)), record

    def features_and_context(self, x: jax.Array, *, normalized: bool = False):
        """(grid [B, h, w, D], TokenContext): the patch tokens at `blocks[-1].norm1`'s output."""
        x = self._tokens(self._prepare(x, normalized))
        for blk in self.blocks[:-1]:
            x = blk(x, DEFAULT_OPS)
        y = self.blocks[-1].norm1(x, DEFAULT_OPS)
        b, _, d = y.shape
        h, w = self.grid_size
        return y[:, self.num_prefix_tokens:].reshape(b, h, w, d), TokenContext(x, y[:, :self.num_prefix_tokens])

    def features(self, x: jax.Array, *, normalized: bool = False) -> jax.Array:  # -> [B, h, w, D]
        return self.features_and_context(x, normalized=normalized)[0]

    def head(self, grid: jax.Array, context: TokenContext) -> jax.Array:  # -> [B, K]
        """The network after `blocks[-1].norm1` (its attention and MLP, final norm, pooling, fc)."""
        b, h, w, d = grid.shape
        y = jnp.concatenate([context.prefix.astype(grid.dtype), grid.reshape(b, h * w, d)], axis=1)
        x = self.blocks[-1].after_norm1(context.residual, y, DEFAULT_OPS)
        return to_float(self.fc(self._pool(x, DEFAULT_OPS, None)))

    # FullGrad as pytorch-grad-cam runs it on a ViT: its only biased Conv2d/BatchNorm layer is the
    # patch embedding (LayerNorm and Linear biases are not collected), so there is one offset.
    def biased_forward(self, xn: jax.Array, offsets: list[jax.Array]) -> jax.Array:
        if len(offsets) != 1:
            raise ValueError(f"biased_forward: a ViT has 1 biased layer (patch_embed.proj), got {len(offsets)} offsets")
        self._check_size(xn)
        return to_float(self.fc(self._forward(xn, DEFAULT_OPS, offset=offsets[0])))

    def bias_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        h, w = self.grid_size
        return [(int(input_shape[0]), h, w, self.config.embed_dim)]

    def biases(self) -> list[jax.Array]:
        b = self.patch_embed.proj.bias
        return [to_float(b[...]) if b is not None else jnp.zeros((self.config.embed_dim,), jnp.float32)]


def vit(config: ViTConfig | str, *, rngs: nnx.Rngs | None = None, **overrides: Any) -> VisionTransformer:
    """A randomly initialised VisionTransformer (eval mode) for a config or preset name;
    `overrides` replace config fields (e.g. num_classes=2)."""
    from ibo_jax.models.vit_presets import vit_preset

    if isinstance(config, str):
        config = vit_preset(config)
    if not isinstance(config, ViTConfig):
        raise TypeError(f"config: expected a ViTConfig or a preset name, got {type(config).__name__}")
    if overrides:
        config = dataclasses.replace(config, **overrides)
    model = VisionTransformer(config, rngs=rngs if rngs is not None else nnx.Rngs(0))
    model.eval()
    return model

