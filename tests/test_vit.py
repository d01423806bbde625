"""The NNX VisionTransformer: its API contracts on tiny random models, parity with timm and Hugging
Face transformers (float64: logits, attention maps, input gradients, token dropping), the presets'
layouts against timm's published constructions, position-embedding resampling, and checkpoint errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ibo_jax import models
from ibo_jax.models import ViTConfig, vit
from ibo_jax.models.vit_import import expected_shapes, resample_pos_embed
from ibo_jax_testing.vit_reference import OPTION_SETS, TINY


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _f64(model):
    graphdef, state = nnx.split(model)
    state = jax.tree.map(lambda v: v.astype(jnp.float64) if v.dtype.kind == "f" else v, state)
    return nnx.merge(graphdef, state)


def _randomized(config: ViTConfig, seed: int = 0):
    """A float64 model whose LayerScale, tokens, norms and biases are far from their inits."""
    keys = iter(jax.random.split(jax.random.key(seed + 1), 4096))

    def redraw(path, v):
        name = str(path[-1])
        if v.ndim <= 1 or name in ("cls_token", "reg_token", "latent", "pos_embed"):
            base = 1.0 if name in ("scale", "gamma") else 0.0
            return base + 0.5 * jax.random.normal(next(keys), v.shape, v.dtype)
        return jax.random.normal(next(keys), v.shape, v.dtype) / np.sqrt(np.prod(v.shape[:-1]))

    graphdef, state = nnx.split(_f64(vit(config, rngs=nnx.Rngs(seed))))
    return nnx.merge(graphdef, nnx.map_state(redraw, state))


def _images(config: ViTConfig, n: int = 2, seed: int = 0) -> np.ndarray:
    s = config.img_size
    return np.random.default_rng(seed).uniform(0, 1, (n, s, s, 3))


def _keep(config: ViTConfig, n: int = 2, kept: int = 10) -> np.ndarray:
    """[n, h*w] bool, `kept` tokens kept per row (equal counts: one compiled shape per reference)."""
    h, w = config.grid_size
    rng = np.random.default_rng(1)
    keep = np.zeros((n, h * w), bool)
    for row in keep:
        row[rng.choice(h * w, kept, replace=False)] = True
    return keep


@nnx.jit
def _outputs(model, x, keep):
    """(logits, attentions, d logit_1 / d x, logits with `keep`): one compiled program per model."""
    logits, attns = model.forward_attention(model.normalize(x))
    grad = jax.grad(lambda a: model(a)[:, 1].sum())(x)
    return logits, attns, grad, model(x, keep=keep)


# ---- API contracts (JAX only) ------------------------------------------------------------------
def test_keep_equals_removing_tokens():
    config = OPTION_SETS["swiglu_reg_noembed"]
    model = _randomized(config)
    x, keep = jnp.asarray(_images(config)), _keep(config)
    got = np.asarray(model(x, keep=jnp.asarray(keep)))
    tokens = model._tokens(model.normalize(x))
    p = model.num_prefix_tokens
    for b in range(len(keep)):  # the same forward on the sequence with the dropped tokens removed
        t = tokens[b:b + 1, np.r_[np.arange(p), p + np.flatnonzero(keep[b])]]
        for blk in model.blocks:
            t = blk(t, models.DEFAULT_OPS)
        want = np.asarray(model.fc(model._pool(t, models.DEFAULT_OPS, None)))
        np.testing.assert_allclose(got[b:b + 1], want, rtol=1e-12, atol=1e-12)
    assert np.abs(got - np.asarray(model(x))).max() > 1e-3


def test_taps_attention_and_split():
    config = OPTION_SETS["swiglu_reg_token_avg"]
    model = _randomized(config)
    x = jnp.asarray(_images(config))
    logits = model(x)
    xn = model.normalize(x)
    n = model.num_prefix_tokens + config.grid_size[0] * config.grid_size[1]
    taps = [jnp.zeros((2, config.num_heads, n, n)) for _ in range(config.depth)]
    tapped, attns = model.forward_attention(xn, attn_taps=taps)
    np.testing.assert_array_equal(np.asarray(tapped), np.asarray(logits))
    assert len(attns) == config.depth and attns[0].shape == (2, config.num_heads, n, n)
    np.testing.assert_allclose(np.asarray(attns[-1]).sum(-1), 1.0, rtol=1e-12)
    # A tap's gradient is the gradient w.r.t. that block's attention matrix: a difference quotient agrees.
    g = jax.grad(lambda t: model.forward_attention(xn, attn_taps=t)[0][:, 1].sum())(taps)
    bump = np.zeros((2, config.num_heads, n, n))
    bump[0, 1, 2, 3] = 1e-6
    moved = model.forward_attention(xn, attn_taps=[taps[0], jnp.asarray(bump)])[0][:, 1].sum()
    np.testing.assert_allclose(float(moved - logits[:, 1].sum()) / 1e-6, float(g[1][0, 1, 2, 3]), rtol=1e-5)
    # The split at blocks[-1].norm1, target_layer, embed/fc.
    grid, ctx = model.features_and_context(x)
    assert grid.shape == (2, *config.grid_size, config.embed_dim)
    np.testing.assert_allclose(np.asarray(model.head(grid, ctx)), np.asarray(logits), rtol=1e-12, atol=1e-12)
    acts, head_fn = models.target_layer(model, xn)
    np.testing.assert_allclose(np.asarray(head_fn(acts)), np.asarray(logits), rtol=1e-12, atol=1e-12)
    emb = model.embed(x)
    assert emb.shape == (2, config.num_features)
    np.testing.assert_allclose(np.asarray(model.fc(emb)), np.asarray(logits), rtol=1e-12, atol=1e-12)
    assert np.abs(np.asarray(jax.grad(lambda a: head_fn(a)[:, 1].sum())(acts))).max() > 1e-3
    off = [jnp.zeros(s) for s in model.bias_shapes(xn.shape)]  # FullGrad: the patch-embedding bias
    np.testing.assert_allclose(np.asarray(model.biased_forward(xn, off)), np.asarray(logits), rtol=1e-12)


def test_bad_inputs_and_presets():
    model = vit(OPTION_SETS["plain"], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="takes 32x32"):
        model(jnp.zeros((1, 40, 40, 3)))
    with pytest.raises(ValueError, match="keep: expected a bool"):
        model(jnp.zeros((1, 32, 32, 3)), keep=jnp.ones((1, 15), bool))
    with pytest.raises(ValueError, match="attn_taps: expected 2"):
        model.forward_attention(jnp.zeros((1, 32, 32, 3)), attn_taps=[])
    with pytest.raises(ValueError, match="ViTConfig.global_pool"):
        ViTConfig(global_pool="max")
    with pytest.raises(ValueError, match="ViTConfig.embed_dim"):
        ViTConfig(embed_dim=100, num_heads=12)
    with pytest.raises(ValueError, match="preset: expected one of"):
        models.vit_preset("nope")
    with pytest.raises(ValueError, match="conch_v1.*not supported.*open_clip"):
        models.vit_preset("conch_v1")
    config = models.vit_preset("tiny")
    tiny = vit(config, rngs=nnx.Rngs(0))
    assert tiny(jnp.zeros((2, 64, 64, 3))).shape == (2, 2)
    assert tiny.features(jnp.zeros((1, 64, 64, 3))).shape == (1, 8, 8, config.embed_dim)
    shapes = expected_shapes(models.vit_preset("uni2_h", depth=1))
    assert shapes["pos_embed"] == (1, 256, 1536) and shapes["reg_token"] == (1, 8, 1536)
    assert shapes["blocks.0.mlp.fc1.weight"] == (8192, 1536) and shapes["blocks.0.mlp.fc2.weight"] == (1536, 4096)


def _timm():
    """(torch, ibo_jax_testing.vit_reference) with timm importable (torchvision stand-in first)."""
    torch = pytest.importorskip("torch")
    from ibo_jax_testing import vit_reference as vr

    vr.install_torchvision_stub()
    pytest.importorskip("timm")
    return torch, vr


# ---- parity with timm ---------------------------------------------------------------------------
@pytest.mark.interop
@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_timm_parity(name):
    """Same logits, attention maps, input gradients and token-dropped logits as timm, float64."""
    torch, vr = _timm()

    config = OPTION_SETS[name]
    tmodel = vr.timm_vit(config, seed=0, dtype=torch.float64)
    model = _f64(models.from_timm(config, vr.state_dict_timm(tmodel)))
    x, keep = _images(config), _keep(config)
    logits, attns, grad, kept = _outputs(model, jnp.asarray(x), jnp.asarray(keep))
    xt = vr.to_torch(x, config, torch.float64).requires_grad_(True)
    tlogits, tattns = vr.timm_forward(tmodel, xt)
    tlogits[:, 1].sum().backward()
    tgrad = xt.grad.numpy().transpose(0, 2, 3, 1) / np.asarray(config.input_std)
    np.testing.assert_allclose(np.asarray(logits), tlogits.detach().numpy(), rtol=1e-10, atol=1e-10)
    assert len(attns) == len(tattns) == config.depth
    for a, ta in zip(attns, tattns, strict=True):
        np.testing.assert_allclose(np.asarray(a), ta.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert np.abs(tgrad).max() > 1e-2
    np.testing.assert_allclose(np.asarray(grad), tgrad, rtol=1e-9, atol=1e-10 * np.abs(tgrad).max())
    with torch.no_grad():
        want = np.concatenate([vr.timm_forward_kept(tmodel, xt[b:b + 1], keep[b]).numpy() for b in range(2)])
    np.testing.assert_allclose(np.asarray(kept), want, rtol=1e-10, atol=1e-10)


# The published timm constructions (model cards / config.json), checked against the presets'
# tensor names and shapes on torch's meta device (no weights); depth cut to 2 (blocks repeat).
def _cards(timm, torch):
    swiglu = dict(mlp_layer=timm.layers.SwiGLUPacked, act_layer=torch.nn.SiLU)
    return {
        "uni": ("vit_large_patch16_224", dict(img_size=224, patch_size=16, init_values=1e-5, num_classes=0)),
        "uni2_h": ("vit_giant_patch14_224", dict(img_size=224, patch_size=14, depth=24, num_heads=24,
                                                 init_values=1e-5, embed_dim=1536, mlp_ratio=2.66667 * 2,
                                                 num_classes=0, no_embed_class=True, reg_tokens=8, **swiglu)),
        "virchow": ("vit_huge_patch14_224", dict(img_size=224, init_values=1e-5, num_classes=0, mlp_ratio=5.3375,
                                                 global_pool="", **swiglu)),
        "virchow2": ("vit_huge_patch14_224", dict(img_size=224, init_values=1e-5, num_classes=0, reg_tokens=4,
                                                  mlp_ratio=5.3375, global_pool="", **swiglu)),
        "h_optimus_0": ("vit_giant_patch14_reg4_dinov2", dict(img_size=224, num_classes=0, global_pool="token",
                                                              init_values=1e-5)),
        "prov_gigapath": ("vit_giant_patch14_dinov2", dict(img_size=224, patch_size=16, embed_dim=1536, depth=40,
                                                           num_heads=24, init_values=1e-5, mlp_ratio=5.33334,
                                                           num_classes=0)),
    }


@pytest.mark.interop
def test_presets_match_published_timm_layouts():
    torch, vr = _timm()

    timm = vr.import_timm()
    for name, (arch, kw) in _cards(timm, torch).items():
        with torch.device("meta"):
            ref = timm.create_model(arch, pretrained=False, **{**kw, "depth": 2})
        want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        config = models.vit_preset(name, depth=2)
        got = {k: v for k, v in expected_shapes(config).items() if not k.startswith("head.")}
        assert got == want, name
        assert ref.blocks[0].norm1.eps == config.norm_eps and ref.num_prefix_tokens == config.num_prefix_tokens


@pytest.mark.interop
def test_pos_embed_resampling_matches_timm():
    torch, vr = _timm()

    vr.import_timm()
    from timm.layers import resample_abs_pos_embed

    pos = np.random.default_rng(0).normal(size=(1, 2 + 6 * 6, 5))
    for new, aa in [((9, 9), True), ((4, 4), True), ((7, 3), True), ((9, 9), False), ((4, 5), False)]:
        want = resample_abs_pos_embed(torch.from_numpy(pos), list(new), num_prefix_tokens=2, antialias=aa)
        got = resample_pos_embed(pos, new, 2, antialias=aa)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)  # timm interpolates in float32
    # A checkpoint for a 4x4 grid imported at 6x6 equals timm's model with timm's resampled table.
    small = vr.timm_vit(OPTION_SETS["gelu_ls"], seed=0, dtype=torch.float64)
    config = ViTConfig(**{**TINY, "img_size": 48}, layer_scale=True, mlp_hidden=64)
    big = vr.timm_vit(config, seed=0, dtype=torch.float64)
    sd = vr.state_dict_timm(small)
    with torch.no_grad():
        big.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items() if k != "pos_embed"}, strict=False)
        big.pos_embed.copy_(resample_abs_pos_embed(small.pos_embed.float(), [6, 6], num_prefix_tokens=1).double())
    model = _f64(models.from_timm(config, sd))
    x = _images(config)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))),
                               big(vr.to_torch(x, config, torch.float64)).detach().numpy(), rtol=1e-5, atol=1e-5)


# ---- parity with Hugging Face ViTModel (Phikon) / Dinov2Model (Phikon-v2) ------------------------
@pytest.mark.interop
def test_hf_vit_and_dinov2_parity(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("tokenizers")  # transformers refuses to import without it
    from ibo_jax_testing import vit_reference as vr

    tr = vr.import_transformers()
    # 64-wide heads: a bare state dict gives no head count, and from_hf_vit assumes 64 (ViT-S..g).
    small = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    cases = [("vit", tr.ViTModel(tr.ViTConfig(**small, intermediate_size=64, layer_norm_eps=1e-12),
                                 add_pooling_layer=True)),
             ("dinov2", tr.Dinov2Model(tr.Dinov2Config(**small, mlp_ratio=2))),
             ("dinov2_swiglu", tr.Dinov2Model(tr.Dinov2Config(**small, mlp_ratio=2, use_swiglu_ffn=True)))]
    x = _images(ViTConfig(**TINY))
    for i, (kind, hf) in enumerate(cases):
        hf.config._attn_implementation = "eager"
        hf = vr.randomize_(hf, seed=i).double()
        sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
        xt = vr.to_torch(x, ViTConfig(**TINY), torch.float64)
        with torch.no_grad():
            out = hf(pixel_values=xt, output_attentions=True)
        want_cls = out.last_hidden_state[:, 0].numpy()
        # 5.x names (the state dict above), 4.x names, and a model directory with its config.json.
        (tmp_path / kind).mkdir()
        from safetensors.numpy import save_file

        save_file(vr.hf_state_dict_4x(sd, vit_model=kind == "vit"), str(tmp_path / kind / "model.safetensors"))
        (tmp_path / kind / "config.json").write_text(json.dumps(hf.config.to_dict(), default=str))
        # transformers' ViTModel rounds its softmax to float32 even in float64 (Dinov2Model does not).
        tol = dict(rtol=1e-5, atol=1e-6) if kind == "vit" else dict(rtol=1e-10, atol=1e-12)
        for source in (sd, tmp_path / kind):
            model = _f64(models.from_hf_vit(source, num_classes=2))
            assert model.config.norm_eps == hf.config.layer_norm_eps
            xn = model.normalize(jnp.asarray(x))
            _, attns = model.forward_attention(xn)
            np.testing.assert_allclose(np.asarray(model.embed(xn, normalized=True)), want_cls, **tol)
            for a, ta in zip(attns, out.attentions, strict=True):
                np.testing.assert_allclose(np.asarray(a), ta.numpy(), **tol)


# ---- checkpoint errors --------------------------------------------------------------------------
@pytest.mark.interop
def test_bad_checkpoints_are_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    config = OPTION_SETS["swiglu_reg_noembed"]
    good = {k: np.zeros(s, np.float32) for k, s in expected_shapes(config).items()}
    assert models.from_timm(config, good).num_classes == config.num_classes
    bad = dict(good, **{"blocks.1.attn.qkv.weight": np.zeros((96, 31), np.float32)})
    save_file(bad, str(tmp_path / "w.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in bad.items()}, tmp_path / "w.pth")
    missing = {k: torch.from_numpy(v) for k, v in good.items() if k != "reg_token"}
    torch.save(missing, tmp_path / "m.bin")
    cases = [(tmp_path / "w.safetensors", r"w\.safetensors: tensor 'blocks\.1\.attn\.qkv\.weight' has shape \(96, 31\)"),
             (tmp_path / "w.pth", r"w\.pth: tensor 'blocks\.1\.attn\.qkv\.weight' has shape"),
             (tmp_path / "m.bin", r"m\.bin: missing tensor 'reg_token'"),
             (dict(good, extra=np.zeros(1)), r"state_dict: unexpected tensor 'extra'"),
             (dict(good, pos_embed=np.zeros((1, 17, 32))), r"state_dict: tensor 'pos_embed' has 17 positions")]
    for weights, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as err:
            models.from_timm(config, weights)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"state_dict: unexpected tensor 'encoder\.foo\.weight'"):
        models.from_hf_vit({"encoder.foo.weight": np.zeros(1)})
