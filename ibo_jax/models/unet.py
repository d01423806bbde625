"""A diffusers-compatible UNet2DModel in Flax NNX (the DDPM's epsilon network).

Same architecture and parameter tree as diffusers' `UNet2DModel` (positional time embedding,
ResnetBlock2D with "default" time-embedding norm, DownBlock2D / AttnDownBlock2D, UNetMidBlock2D,
UpBlock2D / AttnUpBlock2D, conv down/up-samplers), so a diffusers state dict maps one-to-one onto
`nnx.state(model)` (see `unet_convert.py`): `down_blocks.1.resnets.0.conv1.weight` is
`model.down_blocks[1].resnets[0].conv1.kernel` (OIHW -> HWIO), `...attentions.0.to_out.0.weight`
is `...attentions[0].to_out[0].kernel` (transposed).

NHWC inside: `model(x_t, t)` with `x_t` [B, H, W, C] in [-1, 1] and `t` int32 [B] (trained-timestep
units) returns eps [B, H, W, out_channels] in float32. Attention runs through
`jax.nn.dot_product_attention` (cuDNN flash attention on GPUs when the shapes allow).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

FORMULATIONS = {"upsample": ("subpixel", "direct"), "group_norm": ("auto", "matmul", "reshape", "flax"),
                "attention_impl": ("auto", "einsum", "dot_product")}
DOWN_TYPES = ("DownBlock2D", "AttnDownBlock2D")
UP_TYPES = ("UpBlock2D", "AttnUpBlock2D")


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """The subset of diffusers' UNet2DModel config this implementation supports (same names)."""

    sample_size: int | None = None
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "DownBlock2D")
    up_block_types: tuple[str, ...] = ("UpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = 2
    add_attention: bool = True  # attention in the middle block
    attention_head_dim: int | None = 64  # None: one head over all channels (diffusers convention)
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    dropout: float = 0.0
    downsample_padding: int = 1
    time_embedding_dim: int | None = None
    # How the same function is computed (not part of diffusers' config; old model.json files and
    # diffusers imports get these defaults): see GroupNorm, attention() and Upsample2D.
    upsample: str = "subpixel"  # 'subpixel' (four 2x2 convolutions) or 'direct' (nearest x2, 3x3)
    group_norm: str = "auto"  # 'auto' (matmul on the CPU, reshape elsewhere), 'matmul', 'reshape', 'flax'
    attention_impl: str = "auto"  # 'auto' (einsum on the CPU), 'einsum', 'dot_product'

    def __post_init__(self):
        for name, allowed in FORMULATIONS.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"UNetConfig: {name}={getattr(self, name)!r}; expected one of {allowed}")
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                f"UNetConfig: block_out_channels {self.block_out_channels}, down_block_types "
                f"{self.down_block_types} and up_block_types {self.up_block_types} must have the same length"
            )
        for kind, allowed in ((self.down_block_types, DOWN_TYPES), (self.up_block_types, UP_TYPES)):
            bad = [b for b in kind if b not in allowed]
            if bad:
                raise ValueError(f"UNetConfig: unsupported block type(s) {bad}; supported: {allowed}")
        for i, c in enumerate(self.block_out_channels):
            if c % self.norm_num_groups:
                raise ValueError(f"UNetConfig: channels {c} not divisible by norm_num_groups {self.norm_num_groups}")
            attn = self.down_block_types[i].startswith("Attn") or (i == n - 1 and self.add_attention)
            if attn and self.attention_head_dim and c % self.attention_head_dim:
                raise ValueError(f"UNetConfig: level {i} has attention over {c} channels, not divisible by "
                                 f"attention_head_dim {self.attention_head_dim}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw)


def timestep_embedding(t: jax.Array, dim: int, flip_sin_to_cos: bool, freq_shift: float,
                       max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding as diffusers' `get_timestep_embedding`: t [B] -> [B, dim] float32."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]  # [B, half]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class _Layers:
    """Layer factories sharing dtype / param_dtype / rngs and the config's GroupNorm formulation."""

    def __init__(self, dtype, param_dtype, rngs: nnx.Rngs, group_norm: str = "auto"):
        self.dtype, self.param_dtype, self.rngs, self.group_norm = dtype, param_dtype, rngs, group_norm

    def conv(self, cin, cout, k=3, stride=1, padding=1):
        return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=((padding, padding),) * 2,
                        dtype=self.dtype, param_dtype=self.param_dtype, rngs=self.rngs)

    def linear(self, cin, cout):
        return nnx.Linear(cin, cout, dtype=self.dtype, param_dtype=self.param_dtype, rngs=self.rngs)

    def norm(self, c, groups, eps):
        if self.group_norm == "flax":
            return nnx.GroupNorm(c, num_groups=groups, epsilon=eps, dtype=self.dtype, param_dtype=self.param_dtype,
                                 rngs=self.rngs)
        return GroupNorm(c, groups, eps, dtype=self.dtype, param_dtype=self.param_dtype, mode=self.group_norm)


class GroupNorm(nnx.Module):
    """GroupNorm over NHWC with `nnx.GroupNorm`'s parameter names (`scale`, `bias`) and maths.

    Statistics are float32 per-channel sums over H x W (one multi-output column reduction), then
    summed into groups; the output is x * a + b with per-(example, channel) a and b. The maths
    (one-pass variance E[x^2] - E[x]^2, as flax's default `use_fast_variance`) is the same as
    `nnx.GroupNorm`'s, whose single reduction over the non-contiguous (H, W, C/G) axes is slow on
    XLA:CPU: this is 1.5-6x faster there. Channels -> groups (and back) is a [C, G] one-hot matmul
    on the CPU, where XLA would otherwise merge a reshape-sum back into the slow reduction, and a
    reshape-sum elsewhere (no tiny GEMM launches per norm on accelerators). `mode` ('auto',
    'matmul', 'reshape': `UNetConfig.group_norm`) overrides the choice.
    """

    def __init__(self, c: int, groups: int, eps: float, *, dtype=None, param_dtype=jnp.float32, mode: str = "auto"):
        if c % groups:
            raise ValueError(f"GroupNorm: {c} channels not divisible by {groups} groups")
        if mode not in ("auto", "matmul", "reshape"):
            raise ValueError(f"GroupNorm: mode {mode!r}; expected 'auto', 'matmul' or 'reshape'")
        self.num_features, self.num_groups, self.epsilon, self.dtype, self.mode = c, groups, eps, dtype, mode
        self.scale = nnx.Param(jnp.ones((c,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((c,), param_dtype))

    def __call__(self, x):  # [B, ..., C]
        b, c, g = x.shape[0], x.shape[-1], self.num_groups
        dtype = self.dtype or jnp.result_type(x.dtype, self.scale.dtype)
        xf = x.reshape(b, -1, c).astype(jnp.float32)
        use_matmul = self.mode == "matmul" or (self.mode == "auto" and jax.default_backend() == "cpu")
        if use_matmul:
            onehot = (jnp.arange(c)[:, None] // (c // g) == jnp.arange(g)[None, :]).astype(jnp.float32)
            hi = jax.lax.Precision.HIGHEST  # the group sums must not drop to bf16/TF32 passes
            to_groups = lambda s: jnp.dot(s, onehot, precision=hi)  # noqa: E731  [B, C] -> [B, G]
            to_channels = lambda s: jnp.dot(s, onehot.T, precision=hi)  # noqa: E731  [B, G] -> [B, C]
        else:
            to_groups = lambda s: s.reshape(b, g, c // g).sum(-1)  # noqa: E731
            to_channels = lambda s: jnp.repeat(s, c // g, axis=1)  # noqa: E731
        n = xf.shape[1] * (c // g)
        mean = to_groups(xf.sum(1)) / n  # [B, G]
        var = jnp.maximum(to_groups(jnp.square(xf).sum(1)) / n - mean * mean, 0.0)
        inv = jax.lax.rsqrt(var + self.epsilon)
        scale = self.scale[...].astype(jnp.float32)
        a = to_channels(inv) * scale  # [B, C]
        shift = self.bias[...].astype(jnp.float32) - to_channels(mean * inv) * scale
        bshape = (b,) + (1,) * (x.ndim - 2) + (c,)
        return (x.astype(jnp.float32) * a.reshape(bshape) + shift.reshape(bshape)).astype(dtype)


class TimestepEmbedding(nnx.Module):
    def __init__(self, cin: int, cout: int, L: _Layers):
        self.linear_1 = L.linear(cin, cout)
        self.linear_2 = L.linear(cout, cout)

    def __call__(self, x):
        return self.linear_2(nnx.silu(self.linear_1(x)))


class ResnetBlock2D(nnx.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int, eps: float, dropout: float, L: _Layers):
        self.norm1 = L.norm(cin, groups, eps)
        self.conv1 = L.conv(cin, cout)
        self.time_emb_proj = L.linear(temb, cout)
        self.norm2 = L.norm(cout, groups, eps)
        self.dropout = nnx.Dropout(dropout)
        self.conv2 = L.conv(cout, cout)
        self.conv_shortcut = L.conv(cin, cout, k=1, padding=0) if cin != cout else None

    def __call__(self, x, temb, rngs=None):  # x [B, H, W, Cin], temb [B, T]
        h = self.conv1(nnx.silu(self.norm1(x)))
        h = h + self.time_emb_proj(nnx.silu(temb))[:, None, None, :]
        h = nnx.silu(self.norm2(h))
        h = self.conv2(self.dropout(h, rngs=rngs))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h  # [B, H, W, Cout]


class Attention(nnx.Module):
    """diffusers' `Attention` as used by UNet2DModel: GroupNorm, q/k/v, out, residual."""

    def __init__(self, c: int, head_dim: int | None, groups: int, eps: float, L: _Layers, impl: str = "auto"):
        self.impl = impl
        self.head_dim = head_dim or c
        self.heads = c // self.head_dim
        self.group_norm = L.norm(c, groups, eps)
        self.to_q, self.to_k, self.to_v = L.linear(c, c), L.linear(c, c), L.linear(c, c)
        self.to_out = nnx.List([L.linear(c, c)])

    def __call__(self, x):  # [B, H, W, C]
        B, H, W, C = x.shape
        h = self.group_norm(x).reshape(B, H * W, C)
        q, k, v = (f(h).reshape(B, H * W, self.heads, self.head_dim) for f in (self.to_q, self.to_k, self.to_v))
        o = attention(q, k, v, impl=self.impl)  # [B, HW, heads, head_dim]
        o = self.to_out[0](o.reshape(B, H * W, C))
        return x + o.reshape(B, H, W, C)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, impl: str = "auto") -> jax.Array:
    """Softmax attention, q/k/v [B, T, heads, head_dim] -> [B, T, heads, head_dim].

    GPUs and TPUs: `jax.nn.dot_product_attention` (cuDNN flash attention where the shapes allow).
    CPU: heads-major einsums with the softmax over the minor axis; XLA:CPU lowers the fused
    [B, T, heads, head_dim] path to a transposing copy of the score matrix, measured 1.2-2.5x
    slower for the whole attention at 256 tokens. Same maths (scale 1/sqrt(head_dim), max-subtracted softmax).
    impl: 'auto' (by backend), 'einsum' or 'dot_product' (`UNetConfig.attention_impl`).
    """
    if impl == "dot_product" or (impl == "auto" and jax.default_backend() != "cpu"):
        return jax.nn.dot_product_attention(q, k, v)
    scale = jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))  # [B, heads, T, d]
    s = jnp.einsum("bhqd,bhkd->bhqk", q * scale, k, preferred_element_type=jnp.float32)
    p = jnp.exp(s - s.max(-1, keepdims=True))
    o = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    o = o / p.sum(-1, keepdims=True)
    return o.astype(v.dtype).transpose(0, 2, 1, 3)


class Downsample2D(nnx.Module):
    def __init__(self, c: int, padding: int, L: _Layers):
        self.padding = padding
        self.conv = L.conv(c, c, stride=2, padding=padding)

    def __call__(self, x):
        if self.padding == 0:  # diffusers pads right/bottom by one before a stride-2 valid conv
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return self.conv(x)


class Upsample2D(nnx.Module):
    """diffusers' Upsample2D: nearest-neighbour x2, then a 3x3 convolution (`conv`).

    Computed without the upsampled tensor: output pixel (2i + a, 2j + b) of conv3x3(nearest(x))
    reads only x rows {i-1, i} (a = 0) or {i, i+1} (a = 1), and likewise columns, with the 3x3
    taps that land on the same input pixel summed. So each of the four output phases is a 2x2
    convolution of x, and the layer costs 16 instead of 36 multiply-adds per input pixel and
    channel pair (2.25x fewer FLOPs; measured 1.3-2.1x faster on XLA:CPU). `subpixel=False`
    (`UNetConfig.upsample = 'direct'`) computes it the direct way.
    """

    def __init__(self, c: int, L: _Layers, subpixel: bool = True):
        self.subpixel = subpixel
        self.conv = L.conv(c, c)

    def __call__(self, x):  # [B, H, W, C] -> [B, 2H, 2W, C]
        if not self.subpixel:
            return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))
        dtype = self.conv.dtype or jnp.result_type(x.dtype, self.conv.kernel.dtype)
        w = self.conv.kernel[...]  # [3, 3, Cin, Cout]
        taps = (lambda k: (k[0], k[1] + k[2]), lambda k: (k[0] + k[1], k[2]))  # phase 0 / 1: (lower, upper)
        pads = ((1, 0), (0, 1))
        B, H, W, _ = x.shape
        x = x.astype(dtype)
        rows = []
        for a in range(2):
            wa = jnp.stack(taps[a](w), axis=0)  # [2, 3, Cin, Cout]
            cols = []
            for b in range(2):
                k = jnp.stack(taps[b](jnp.moveaxis(wa, 1, 0)), axis=1)  # [2, 2, Cin, Cout]
                cols.append(jax.lax.conv_general_dilated(x, k.astype(dtype), (1, 1), (pads[a], pads[b]),
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC")))
            rows.append(jnp.stack(cols, axis=3))  # [B, H, W, 2 (b), Cout]
        y = jnp.stack(rows, axis=2).reshape(B, 2 * H, 2 * W, -1)  # [B, H, 2 (a), W, 2 (b), C] -> interleaved
        return y + self.conv.bias[...].astype(dtype) if self.conv.bias is not None else y


class DownBlock(nnx.Module):
    """DownBlock2D (attention=False) or AttnDownBlock2D (attention=True)."""

    def __init__(self, cin, cout, n, temb, cfg: UNetConfig, attention: bool, downsample: bool, L: _Layers):
        g, e = cfg.norm_num_groups, cfg.norm_eps
        self.resnets = nnx.List([ResnetBlock2D(cin if i == 0 else cout, cout, temb, g, e, cfg.dropout, L)
                                 for i in range(n)])
        self.attentions = nnx.List([Attention(cout, cfg.attention_head_dim, g, e, L, cfg.attention_impl) for _ in range(n)]) \
            if attention else None
        self.downsamplers = nnx.List([Downsample2D(cout, cfg.downsample_padding, L)]) if downsample else None

    def __call__(self, x, temb, rngs=None):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb, rngs)
            if self.attentions is not None:
                x = self.attentions[i](x)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nnx.Module):
    """UpBlock2D / AttnUpBlock2D: each resnet eats the running tensor concatenated with a skip."""

    def __init__(self, cin, cprev, cout, n, temb, cfg: UNetConfig, attention: bool, upsample: bool, L: _Layers):
        g, e = cfg.norm_num_groups, cfg.norm_eps
        resnets = []
        for i in range(n):
            skip_c = cin if i == n - 1 else cout
            res_in = cprev if i == 0 else cout
            resnets.append(ResnetBlock2D(res_in + skip_c, cout, temb, g, e, cfg.dropout, L))
        self.resnets = nnx.List(resnets)
        self.attentions = nnx.List([Attention(cout, cfg.attention_head_dim, g, e, L, cfg.attention_impl) for _ in range(n)]) \
            if attention else None
        self.upsamplers = nnx.List([Upsample2D(cout, L, cfg.upsample == "subpixel")]) if upsample else None

    def __call__(self, x, skips, temb, rngs=None):
        for i, resnet in enumerate(self.resnets):
            x = jnp.concatenate([x, skips.pop()], axis=-1)
            x = resnet(x, temb, rngs)
            if self.attentions is not None:
                x = self.attentions[i](x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class UNetMidBlock2D(nnx.Module):
    def __init__(self, c, temb, cfg: UNetConfig, L: _Layers):
        g, e = cfg.norm_num_groups, cfg.norm_eps
        self.resnets = nnx.List([ResnetBlock2D(c, c, temb, g, e, cfg.dropout, L) for _ in range(2)])
        self.attentions = nnx.List([Attention(c, cfg.attention_head_dim, g, e, L, cfg.attention_impl)]) if cfg.add_attention else None

    def __call__(self, x, temb, rngs=None):
        x = self.resnets[0](x, temb, rngs)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x, temb, rngs)


class UNet2DModel(nnx.Module):
    """eps = model(x_t [B, H, W, C] in [-1, 1], t int32 [B]) -> [B, H, W, out_channels] float32."""

    def __init__(self, config: UNetConfig, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        self.config = config
        cfg, ch = config, config.block_out_channels
        self.dtype, self.param_dtype = dtype, param_dtype
        L = _Layers(dtype, param_dtype, rngs, config.group_norm)
        temb = cfg.time_embedding_dim or ch[0] * 4
        self.conv_in = L.conv(cfg.in_channels, ch[0])
        self.time_embedding = TimestepEmbedding(ch[0], temb, L)
        n = len(ch)
        downs, cout = [], ch[0]
        for i, kind in enumerate(cfg.down_block_types):
            cin, cout = cout, ch[i]
            downs.append(DownBlock(cin, cout, cfg.layers_per_block, temb, cfg, kind == "AttnDownBlock2D",
                                   i < n - 1, L))
        self.down_blocks = nnx.List(downs)
        self.mid_block = UNetMidBlock2D(ch[-1], temb, cfg, L)
        rev = list(reversed(ch))
        ups, cout = [], rev[0]
        for i, kind in enumerate(cfg.up_block_types):
            cprev, cout, cin = cout, rev[i], rev[min(i + 1, n - 1)]
            ups.append(UpBlock(cin, cprev, cout, cfg.layers_per_block + 1, temb, cfg, kind == "AttnUpBlock2D",
                               i < n - 1, L))
        self.up_blocks = nnx.List(ups)
        self.conv_norm_out = L.norm(ch[0], cfg.norm_num_groups, cfg.norm_eps)
        self.conv_out = L.conv(ch[0], cfg.out_channels)

    def __call__(self, x: jax.Array, t: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        cfg = self.config
        t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), (x.shape[0],))
        temb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        temb = self.time_embedding(temb)  # [B, 4 C0]
        h = self.conv_in(x)  # [B, H, W, C0]
        skips = [h]
        for block in self.down_blocks:
            h, s = block(h, temb, rngs)
            skips.extend(s)
        h = self.mid_block(h, temb, rngs)
        for block in self.up_blocks:
            h = block(h, skips, temb, rngs)
        h = self.conv_out(nnx.silu(self.conv_norm_out(h)))
        return h.astype(jnp.float32)


def reformulate(model: UNet2DModel, **formulation: str) -> UNet2DModel:
    """The same network (same parameters) computed another way: `UNetConfig` formulation fields
    (`upsample`, `group_norm`, `attention_impl`) replaced; used by benchmarks to compare them."""
    bad = sorted(set(formulation) - set(FORMULATIONS))
    if bad:
        raise ValueError(f"reformulate: {bad} are not formulation fields; expected some of {sorted(FORMULATIONS)}")
    cfg = dataclasses.replace(model.config, **formulation)
    abstract = nnx.eval_shape(lambda: UNet2DModel(cfg, rngs=nnx.Rngs(0), dtype=model.dtype,
                                                  param_dtype=model.param_dtype))
    return nnx.merge(nnx.graphdef(abstract), nnx.state(model))


def unet2d(
    block_out_channels: tuple[int, ...] = (128, 256, 512),
    layers_per_block: int = 2,
    *,
    attention_levels: tuple[bool, ...] | None = None,
    mid_attention: bool = True,
    attention_head_dim: int | None = 64,
    norm_num_groups: int = 32,
    in_channels: int = 3,
    out_channels: int = 3,
    dropout: float = 0.0,
    sample_size: int | None = None,
    dtype: Any = None,
    rngs: nnx.Rngs | None = None,
    **config_kwargs: Any,
) -> UNet2DModel:
    """Builds a UNet2DModel. `attention_levels[i]`: self-attention in down level i (and its mirror).

    Default: widths (128, 256, 512), 2 blocks per level, attention only in the middle block,
    64-channel heads. `dtype=jnp.bfloat16` computes in bf16 with float32 parameters.
    """
    n = len(block_out_channels)
    levels = tuple(attention_levels) if attention_levels is not None else (False,) * n
    if len(levels) != n:
        raise ValueError(f"unet2d: attention_levels has {len(levels)} entries, block_out_channels has {n}")
    cfg = UNetConfig(
        sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
        block_out_channels=tuple(block_out_channels),
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in levels),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels)),
        layers_per_block=layers_per_block, add_attention=mid_attention,
        attention_head_dim=attention_head_dim, norm_num_groups=norm_num_groups, dropout=dropout,
        **config_kwargs,
    )
    return UNet2DModel(cfg, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype)
