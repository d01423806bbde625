"""The NNX VisionTransformer: its API contracts (token dropping, attention taps, the split at
blocks[-1].norm1, embed/fc) on tiny random models covering every option, and the presets."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ibo_jax import models
from ibo_jax.models import ViTConfig, vit

# Each option set a preset uses, tiny: GELU + LayerScale + token pool (UNI); SwiGLU + registers +
# no_embed_class (UNI2-h, H-optimus-0); SwiGLU + registers with embedded prefix, token_avg
# (Virchow2); plain (Phikon); avg + fc_norm; timm's attention-pool head ('map').
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=3)
OPTION_SETS = {
    "gelu_ls": ViTConfig(**TINY, layer_scale=True, mlp_hidden=64),
    "swiglu_reg_noembed": ViTConfig(**TINY, mlp="swiglu", mlp_hidden=96, layer_scale=True, reg_tokens=2,
                                    no_embed_class=True),
    "swiglu_reg_token_avg": ViTConfig(**TINY, mlp="swiglu", mlp_hidden=96, layer_scale=True, reg_tokens=2,
                                      global_pool="token_avg"),
    "plain": ViTConfig(**TINY, norm_eps=1e-12),
    "avg": ViTConfig(**TINY, global_pool="avg", class_token=False),
    "map": ViTConfig(**TINY, global_pool="map", class_token=False),
}


def _randomized(config: ViTConfig, seed: int = 0):
    """A model whose LayerScale, tokens and norms are far from their near-identity inits."""
    model = vit(config, rngs=nnx.Rngs(seed))
    graphdef, state = nnx.split(model)
    keys = iter(jax.random.split(jax.random.key(seed + 1), 4096))

    def redraw(path, v):
        name = str(path[-1])
        if name in ("gamma", "cls_token", "reg_token", "latent") or (name in ("scale", "bias") and v.ndim == 1):
            base = 1.0 if name == "scale" else 0.0
            return base + 0.5 * jax.random.normal(next(keys), v.shape, v.dtype)
        return v

    state = nnx.map_state(redraw, state) if hasattr(nnx, "map_state") else state
    return nnx.merge(graphdef, state)


def _images(config: ViTConfig, n: int = 2, seed: int = 0) -> np.ndarray:
    s = config.img_size
    return np.random.default_rng(seed).uniform(0, 1, (n, s, s, 3)).astype(np.float32)


@pytest.fixture(scope="module", params=sorted(OPTION_SETS))
def case(request):
    config = OPTION_SETS[request.param]
    return config, _randomized(config)


def test_keep_equals_removing_tokens(case):
    config, model = case
    x = _images(config)
    h, w = config.grid_size
    keep = np.random.default_rng(1).uniform(size=(2, h * w)) < 0.6
    keep[:, 0] = True
    got = np.asarray(model(jnp.asarray(x), keep=jnp.asarray(keep)))
    # Reference: the same forward with the dropped tokens sliced out of the sequence.
    xn = model.normalize(jnp.asarray(x))
    for b in range(2):
        tokens = model._tokens(xn[b:b + 1])
        idx = np.concatenate([np.arange(model.num_prefix_tokens), model.num_prefix_tokens + np.flatnonzero(keep[b])])
        t = tokens[:, idx]
        for blk in model.blocks:
            t = blk(t, models.DEFAULT_OPS)
        want = np.asarray(model.fc(model._pool(t, models.DEFAULT_OPS, None)))
        np.testing.assert_allclose(got[b:b + 1], want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, np.asarray(model(jnp.asarray(x))), atol=1e-4)


def test_taps_attention_and_split(case):
    config, model = case
    x = jnp.asarray(_images(config))
    logits = model(x)
    xn = model.normalize(x)
    n = model.num_prefix_tokens + config.grid_size[0] * config.grid_size[1]
    taps = [jnp.zeros((2, config.num_heads, n, n)) for _ in range(config.depth)]
    tapped, attns = model.forward_attention(xn, attn_taps=taps)
    np.testing.assert_array_equal(np.asarray(tapped), np.asarray(logits))
    assert len(attns) == config.depth and attns[0].shape == (2, config.num_heads, n, n)
    np.testing.assert_allclose(np.asarray(attns[-1]).sum(-1), 1.0, rtol=1e-5)
    # A tap's gradient is the gradient w.r.t. the attention matrix: a finite difference agrees.
    g = jax.grad(lambda t: model.forward_attention(xn, attn_taps=t)[0][:, 1].sum())(taps)
    e = np.zeros((2, config.num_heads, n, n), np.float32)
    e[0, 1, 2, 3] = 1e-2
    bumped = [taps[0], jnp.asarray(e)] + taps[2:]
    fd = (model.forward_attention(xn, attn_taps=bumped)[0][:, 1].sum() - logits[:, 1].sum()) / 1e-2
    np.testing.assert_allclose(float(fd), float(g[1][0, 1, 2, 3]), rtol=2e-2, atol=1e-4)
    # The split at blocks[-1].norm1, and target_layer.
    grid, ctx = model.features_and_context(x)
    assert grid.shape == (2, *config.grid_size, config.embed_dim)
    np.testing.assert_allclose(np.asarray(model.head(grid, ctx)), np.asarray(logits), rtol=1e-5, atol=1e-5)
    acts, head_fn = models.target_layer(model, xn)
    np.testing.assert_allclose(np.asarray(head_fn(acts)), np.asarray(logits), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.fc(model.embed(x))), np.asarray(logits), rtol=1e-6, atol=1e-6)
    assert model.embed(x).shape == (2, config.num_features)
    assert np.abs(np.asarray(jax.grad(lambda a: head_fn(a)[:, 1].sum())(acts))).sum() > 0


def test_bad_inputs():
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


def test_tiny_preset_shapes():
    config = models.vit_preset("tiny")
    model = vit(config, rngs=nnx.Rngs(0))
    out = model(jnp.zeros((2, 64, 64, 3)))
    assert out.shape == (2, 2) and model.features(jnp.zeros((1, 64, 64, 3))).shape == (1, 8, 8, config.embed_dim)
    assert dataclasses.replace(config, num_classes=5).num_classes == 5
