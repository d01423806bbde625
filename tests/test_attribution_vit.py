"""Rollout, gradient-weighted rollout, AttnLRP and CP-LRP on ViTs against torch references.

The reference is a functional torch ViT written here (timm's forward and parameter names) run on
the JAX model's own weights (exported to a torch state dict), in float64:
- rollout and gradient-weighted rollout restated from the papers (Abnar & Zuidema 2020; Chefer et
  al. ICCV 2021) on the torch attentions and their autograd gradients;
- AttnLRP and CP-LRP with lxt 2.1's own efficient-mode functions (`lxt/efficient/rules.py` and
  `patches.py`, loaded by file because lxt's package `__init__` imports transformers' model zoo
  and torchvision): `wrap_attention_forward` / `cp_wrap_attention_forward` on an eager attention,
  `layer_norm_forward`, `mlp_forward` / `non_linear_forward`, `gated_mlp_forward` /
  `cp_gated_mlp_forward`, as lxt patches a model, then gradient x input.
Three tiny models mirror the presets' options: GELU + LayerScale + class-token pooling (UNI);
SwiGLU + registers + `no_embed_class` + LayerScale + 'token_avg' (Virchow2); SwiGLU + registers
with embedded prefix, no LayerScale, 'avg' + fc_norm.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ibo_jax import attribution
from ibo_jax.attribution import transformer
from ibo_jax.models import vit as vit_mod

BASE = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, mlp_hidden=32,
            num_classes=3)
CONFIGS = {
    "gelu_ls_token": dict(layer_scale=True),
    "swiglu_reg_noembed_tokenavg": dict(mlp="swiglu", reg_tokens=2, no_embed_class=True,
                                        layer_scale=True, global_pool="token_avg"),
    "swiglu_reg_embedded_avg": dict(mlp="swiglu", reg_tokens=2, global_pool="avg"),
}
TARGET = 1


def make_model(name: str, *, seed: int = 0, zero_bias: bool = False, dtype=jnp.float64, **overrides):
    """A ViT (float64 by default) whose every parameter is re-randomized (timm's near-zero class
    and register tokens and 1e-5 LayerScale would make every block near identity); built from
    shapes only, so no initializer runs op by op (seconds of eager dispatch on the CPU)."""
    cfg = vit_mod.ViTConfig(**{**BASE, **CONFIGS[name], **overrides})
    model = nnx.eval_shape(lambda: vit_mod.vit(cfg, rngs=nnx.Rngs(seed)))  # shapes only: no init
    state = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(state)
    rng = np.random.default_rng(seed)
    for path, var in flat:
        key = ".".join(str(p) for p in path)
        shape = var.get_value().shape
        if key.endswith(("norm1.scale", "norm2.scale", "norm.scale")):
            val = 1.0 + 0.2 * rng.standard_normal(shape)
        elif key.endswith("gamma"):
            val = 0.5 + 0.5 * rng.random(shape)
        elif key.endswith("kernel"):
            fan_in = int(np.prod(shape[:-1]))
            val = rng.standard_normal(shape) * (1.5 / np.sqrt(fan_in))
        else:  # biases, LayerNorm biases, tokens, position embeddings
            val = 0.0 if zero_bias and not key.endswith("scale") else 0.3 * rng.standard_normal(shape)
            val = np.broadcast_to(val, shape)
        var.set_value(jnp.asarray(val, dtype))
    nnx.update(model, nnx.from_flat_state(flat))
    return model


def torch_state(model) -> dict:
    """The JAX model's weights as a timm-named torch state dict (float64)."""
    import torch

    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key = ".".join(str(p) for p in path).replace("fc.", "head.", 1) if path[0] == "fc" else \
            ".".join(str(p) for p in path)
        a = np.asarray(var.get_value(), np.float64)
        if key.endswith("kernel"):
            a = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T  # HWIO -> OIHW, [in, out] -> [out, in]
            key = key[: -len("kernel")] + "weight"
        elif key.endswith(("norm1.scale", "norm2.scale", "norm.scale")):
            key = key[: -len("scale")] + "weight"
        out[key] = torch.from_numpy(np.ascontiguousarray(a))
    return out


# ----------------------------------------------------------------------------- lxt, torch


def lxt_efficient():
    """lxt 2.1's efficient rules and patches, loaded by file (its package __init__ cannot import
    here); the `lxt` stand-ins needed for patches.py's own import are removed afterwards."""
    spec = importlib.util.find_spec("lxt")
    if spec is None:
        pytest.skip("lxt is not installed")
    root = Path(spec.submodule_search_locations[0]) / "efficient"
    saved = {k: sys.modules.get(k) for k in ("lxt", "lxt.efficient", "lxt.efficient.rules")}
    try:
        mods = {}
        for name in ("rules", "patches"):
            s = importlib.util.spec_from_file_location(f"lxt.efficient.{name}", root / f"{name}.py")
            mods[name] = importlib.util.module_from_spec(s)
            if name == "patches":
                sys.modules["lxt"], sys.modules["lxt.efficient"] = (types.ModuleType("lxt"),
                                                                    types.ModuleType("lxt.efficient"))
                sys.modules["lxt.efficient.rules"] = mods["rules"]
            s.loader.exec_module(mods[name])
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return mods["patches"]


def torch_vit(sd: dict, cfg, xn, *, mode: str = "plain", retain_attn: bool = False):
    """timm's ViT forward on NCHW normalized `xn`; mode 'attnlrp' / 'cp_lrp' applies lxt's patches.
    Returns (logits [B, K], attentions [B, heads, N, N] per block)."""
    import torch
    import torch.nn.functional as F

    lxt = lxt_efficient() if mode != "plain" else None
    b, heads, d = xn.shape[0], cfg.num_heads, cfg.embed_dim

    def lin(name):
        return lambda x: F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))

    def ln(x, name):
        m = SimpleNamespace(eps=cfg.norm_eps, weight=sd[name + ".weight"], bias=sd[name + ".bias"])
        if mode == "plain":
            return F.layer_norm(x, (d,), m.weight, m.bias, m.eps)
        return lxt.layer_norm_forward(m, x)

    attns = []

    def eager_attention(module, q, k, v):
        a = torch.softmax((q * (d // heads) ** -0.5) @ k.transpose(-2, -1), dim=-1)
        if retain_attn:
            a.retain_grad()
        attns.append(a)
        return a @ v

    attention = {"plain": eager_attention, "attnlrp": None, "cp_lrp": None}[mode] or (
        lxt.wrap_attention_forward(eager_attention) if mode == "attnlrp"
        else lxt.cp_wrap_attention_forward(eager_attention))

    t = F.conv2d(xn, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=cfg.patch_size)
    t = t.flatten(2).transpose(1, 2)
    prefix = [sd[k].expand(b, -1, -1) for k in ("cls_token", "reg_token") if k in sd]
    if cfg.no_embed_class:
        t = torch.cat(prefix + [t + sd["pos_embed"]], 1)
    else:
        t = torch.cat(prefix + [t], 1) + sd["pos_embed"]
    n = t.shape[1]
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        qkv = lin(p + "attn.qkv")(ln(t, p + "norm1")).reshape(b, n, 3, heads, d // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        o = attention(None, q, k, v).transpose(1, 2).reshape(b, n, d)
        o = lin(p + "attn.proj")(o)
        t = t + (o * sd[p + "ls1.gamma"] if cfg.layer_scale else o)
        y = ln(t, p + "norm2")
        mlp = SimpleNamespace(up_proj=lin(p + "mlp.fc1"), down_proj=lin(p + "mlp.fc2"),
                              act_fn=F.gelu, original_forward=F.gelu)
        if cfg.mlp == "swiglu":  # packed: fc1 gives [gate | value]
            ws, bs = (torch.chunk(sd[p + "mlp.fc1." + k], 2) for k in ("weight", "bias"))
            mlp.gate_proj = functools.partial(F.linear, weight=ws[0], bias=bs[0])
            mlp.up_proj = functools.partial(F.linear, weight=ws[1], bias=bs[1])
            mlp.act_fn = F.silu
            fwd = {"plain": lambda s, x: s.down_proj(s.act_fn(s.gate_proj(x)) * s.up_proj(x)),
                   "attnlrp": lxt and lxt.gated_mlp_forward, "cp_lrp": lxt and lxt.cp_gated_mlp_forward}
            o = fwd[mode](mlp, y)
        elif mode == "plain":
            o = mlp.down_proj(F.gelu(mlp.up_proj(y)))
        elif mode == "attnlrp":
            o = lxt.mlp_forward(mlp, y)
        else:  # lxt's ViT CP-LRP map: identity rule on GELU (non_linear_forward)
            o = mlp.down_proj(lxt.non_linear_forward(mlp, mlp.up_proj(y)))
        t = t + (o * sd[p + "ls2.gamma"] if cfg.layer_scale else o)
    npre = cfg.num_prefix_tokens
    if not cfg.use_fc_norm:
        t = ln(t, "norm")
    pooled = {"token": lambda: t[:, 0], "avg": lambda: t[:, npre:].mean(1),
              "token_avg": lambda: torch.cat([t[:, 0], t[:, npre:].mean(1)], -1)}[cfg.global_pool]()
    if cfg.use_fc_norm:
        pooled = ln(pooled, "fc_norm")
    return lin("head")(pooled), attns


def images(b=2, size=16, seed=1):
    return np.random.default_rng(seed).random((b, size, size, 3))


def torch_input(x, cfg, *, grad=False):
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_(grad)
    mean = torch.tensor(cfg.input_mean, dtype=torch.float64)[:, None, None]
    std = torch.tensor(cfg.input_std, dtype=torch.float64)[:, None, None]
    return xt, (xt - mean) / std


def pooled_row(cfg, m):
    """[B, N, N] -> the rows the pooled output reads (torch)."""
    npre = cfg.num_prefix_tokens
    if cfg.global_pool == "token":
        return m[:, 0]
    if cfg.global_pool == "avg":
        return m[:, npre:].mean(1)
    return (m[:, 0] + m[:, npre:].mean(1)) / 2


def ref_rollout(attns, cfg, fusion, start):
    """Abnar & Zuidema: fuse heads, 0.5 A + 0.5 I, renormalize rows, multiply layers in order."""
    import torch

    mats = []
    for a in attns[start:]:
        fused = {"mean": a.mean(1), "max": a.amax(1), "min": a.amin(1)}[fusion]
        hat = 0.5 * fused + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype)
        mats.append(hat / hat.sum(-1, keepdim=True))
    joint = torch.stack([torch.linalg.multi_dot(list(reversed([m[i] for m in mats])))
                         if len(mats) > 1 else mats[0][i] for i in range(attns[0].shape[0])])
    return pooled_row(cfg, joint)[:, cfg.num_prefix_tokens:]


def ref_grad_rollout(attns, cfg, start):
    """Chefer et al.: R = I; R += mean_h[(grad A * A)^+] R block by block."""
    import torch

    r = torch.eye(attns[0].shape[-1], dtype=attns[0].dtype).repeat(attns[0].shape[0], 1, 1)
    for a in attns[start:]:
        r = r + torch.bmm((a.grad * a).clamp(min=0).mean(1), r)
    return pooled_row(cfg, r)[:, cfg.num_prefix_tokens:]


# ----------------------------------------------------------------------------- tests


_JITS: dict = {}


def jitted(model, fn, *args):
    """`fn(model, *args)` under jax.jit, compiled once per (model structure, fn)."""
    graphdef, state = nnx.split(model)
    key = (graphdef, fn)
    if key not in _JITS:
        _JITS[key] = jax.jit(lambda st, *a: fn(nnx.merge(graphdef, st), *a))
    return _JITS[key](state, *args)


def attention_and_grads(m, v):
    return transformer.attention_grads(m, m.normalize(v), TARGET)


ROLLOUTS = (("mean", 0), ("max", 1), ("min", 0))


def rollouts(m, attns, grads):
    """Token maps of the rollout variants in ROLLOUTS and of grad rollout from blocks 0 and 1."""
    def tmap(joint):
        return transformer.token_map(m, transformer.output_row(m, joint))

    return ([tmap(transformer.rollout_matrix(attns, head_fusion=f, start_layer=s)) for f, s in ROLLOUTS],
            [tmap(transformer.grad_rollout_matrix(attns, grads, start_layer=s)) for s in (0, 1)])


def lrp_all(m, v):
    """{rule: (logits, relevance w.r.t. the [0, 1] image, w.r.t. the normalized input)}, one
    backward pass per rule (`transformer.lrp_relevance`'s two outputs)."""
    out = {}
    for rule in ("attnlrp", "cp_lrp"):
        xn, pullback = jax.vjp(m.normalize, v)
        logits, grad = transformer.lrp_input_gradient(m, xn, TARGET, rule)
        out[rule] = (logits, v * pullback(grad)[0], xn * grad)
    return out


@pytest.mark.interop
@pytest.mark.parametrize("name", list(CONFIGS))
def test_rollouts_equal_torch_restatement(name):
    pytest.importorskip("torch")

    with jax.enable_x64(True):
        model = make_model(name)
        cfg, x = model.config, images()
        _, xn_t = torch_input(x, cfg, grad=True)
        logits_t, attns_t = torch_vit(torch_state(model), cfg, xn_t, retain_attn=True)
        logits_t[:, TARGET].sum().backward()
        attns, grads = jitted(model, attention_and_grads, jnp.asarray(x))
        for a, g, a_t in zip(attns, grads, attns_t):
            np.testing.assert_allclose(np.asarray(a), a_t.detach().numpy(), rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(np.asarray(g), a_t.grad.numpy(), rtol=1e-9, atol=1e-12)
        h = cfg.grid_size[0]
        rolls, grad_rolls = jitted(model, rollouts, attns, grads)
        for (fusion, start), ours in zip(ROLLOUTS, rolls):
            ref = ref_rollout([a.detach() for a in attns_t], cfg, fusion, start).reshape(-1, h, h)
            np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=1e-10, atol=1e-12)
        for start, ours in zip((0, 1), grad_rolls):
            ref = ref_grad_rollout(attns_t, cfg, start).reshape(-1, h, h).detach()
            np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.interop
@pytest.mark.parametrize("name", list(CONFIGS))
def test_lrp_equals_lxt_rules(name):
    pytest.importorskip("torch")
    with jax.enable_x64(True):
        model = make_model(name, seed=2)
        cfg, x = model.config, images(seed=3)
        out = jitted(model, lrp_all, jnp.asarray(x))
        for rule, (logits, *rel) in out.items():
            xt, xn_t = torch_input(x, cfg, grad=True)
            logits_t, _ = torch_vit(torch_state(model), cfg, xn_t, mode=rule)
            xn_t.retain_grad()
            logits_t[:, TARGET].sum().backward()
            for ours, inp in zip(rel, (xt, xn_t)):  # w.r.t. the [0, 1] image, the normalized
                ref = (inp * inp.grad).permute(0, 2, 3, 1).detach().numpy()
                # lxt's identity rule divides by x + 1e-10 (ours by x): ~1e-10 / |x| relative apart
                np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-7 * np.abs(ref).max())
            # the rules change the backward only: the logits are the plain ones
            np.testing.assert_allclose(logits_t.detach().numpy(), np.asarray(logits), rtol=1e-10,
                                       atol=1e-10)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cp_lrp_conserves_relevance_without_biases(name):
    """Every bias, position embedding and prefix token zero: CP-LRP's input relevance sums to the
    logit (the network is linear in its input for the frozen attention, 1/std and f(x)/x)."""
    with jax.enable_x64(True):
        model = make_model(name, seed=4, zero_bias=True)
        out = jitted(model, lrp_all, jnp.asarray(images(seed=5)))
        logit = np.asarray(out["cp_lrp"][0])[:, TARGET]
        np.testing.assert_allclose(np.asarray(out["cp_lrp"][2]).sum((1, 2, 3)), logit, rtol=1e-9)
        # AttnLRP's softmax rule is not conservative (a bias-like term): its sum differs
        assert not np.allclose(np.asarray(out["attnlrp"][2]).sum((1, 2, 3)), logit, rtol=1e-3)


def test_registry_maps_and_errors():
    model = make_model("gelu_ls_token", dtype=jnp.float32, depth=1)
    x = jnp.asarray(images(b=2), jnp.float32)
    for name in ("rollout", "grad_rollout", "attnlrp", "cp_lrp"):
        assert name in attribution.METHODS and attribution.supports(name, model)
        assert attribution.has_raw(name) == name.endswith("lrp")
    for name in ("rollout", "cp_lrp"):  # a token map resized, a raw [B, H, W, 3] reduced
        heat = attribution.compute(name, model, x, target_class=TARGET)
        assert heat.shape == (2, 16, 16) and heat.dtype == jnp.float32
        np.testing.assert_allclose(heat.min((1, 2)), 0.0)
        np.testing.assert_allclose(heat.max((1, 2)), 1.0, atol=1e-6)
    for name in ("rollout", "grad_rollout"):
        with pytest.raises(ValueError, match="raw=True"):
            attribution.compute(name, model, x, raw=True)
    with pytest.raises(ValueError, match="head_fusion"):
        attribution.compute("rollout", model, x, head_fusion="median")
    with pytest.raises(ValueError, match="start_layer"):
        attribution.compute("rollout", model, x, start_layer=5)
    with pytest.raises(ValueError, match="wrt"):
        attribution.compute("cp_lrp", model, x, wrt="tokens")
