"""The classifier interface (models.base.Classifier) on every architecture, at tiny sizes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ibo_jax import models

SMALL = dict(widths=(8, 16, 16), layers=(1, 1, 1), strides=(2, 2, 2))


def _img(b: int, hw: int, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).random((b, hw, hw, 3), dtype=np.float32))


def test_public_names_and_lazy_import():
    for name in ("resnet50", "resnet18", "resnet34", "resnet101", "vgg16", "inception_v3",
                 "from_torchvision", "Classifier", "resnet_small"):
        assert hasattr(models, name), name
    assert "unet2d" in models.__all__ and "from_diffusers_unet" in models.__all__


@pytest.mark.parametrize("k", [2, 5])
def test_resnet_small_contract(k):
    m = models.resnet_small(k, rngs=nnx.Rngs(1), **SMALL)
    m.eval()
    assert isinstance(m, models.Classifier)
    x = _img(2, 64)
    a = m.features(x)
    assert a.shape == (2, 8, 8, 16)  # 64x64 -> 8x8 CAM maps
    np.testing.assert_allclose(m.features(m.normalize(x), normalized=True), a)
    logits = m(x)
    assert logits.shape == (2, k) and logits.dtype == jnp.float32
    np.testing.assert_allclose(m.head(a), logits, rtol=1e-6)


def test_fullgrad_contract():
    m = models.resnet_small(2, rngs=nnx.Rngs(2), **SMALL)
    # non-trivial BatchNorm statistics, so folded biases differ from the BN betas
    for path, var in nnx.to_flat_state(nnx.state(m, nnx.BatchStat)):
        r = np.random.default_rng(len(path)).random(var.shape)
        var.set_value(jnp.asarray((r - 0.5) * 0.2 if path[-1] == "mean" else r + 0.5, jnp.float32))
    m.eval()
    x = _img(2, 32)
    xn = m.normalize(x)
    shapes = m.bias_shapes(tuple(xn.shape))
    biases = m.biases()
    # conv1/bn1 + 3 blocks x (bn1, bn2) + 2 downsample BNs (the stride-2 blocks) + fc
    assert len(shapes) == len(biases) == 1 + 3 * 2 + 3 + 1
    assert shapes[0] == (2, 32, 32, 8) and shapes[-1] == (2, 2)
    assert all(s[-1] == b.shape[-1] for s, b in zip(shapes, biases, strict=True))
    zeros = [jnp.zeros(s) for s in shapes]
    np.testing.assert_allclose(m.biased_forward(xn, zeros), m(x), rtol=1e-5, atol=1e-6)
    bn = m.bn1
    folded = bn.bias[...] - bn.mean[...] * bn.scale[...] / jnp.sqrt(bn.var[...] + bn.epsilon)
    np.testing.assert_allclose(biases[0], folded, rtol=1e-6)
    # the gradient w.r.t. an offset is the gradient at that layer's output (here: the logit's
    # gradient w.r.t. the fc output is one-hot)
    g = jax.grad(lambda offs: m.biased_forward(xn, offs)[:, 1].sum())(zeros)
    np.testing.assert_allclose(g[-1], np.tile([0.0, 1.0], (2, 1)))
    assert float(jnp.abs(g[0]).sum()) > 0
    with pytest.raises(ValueError, match="offsets"):
        m.biased_forward(xn, zeros[:-1])


def test_vgg16_and_resnet18_interface():
    v = models.vgg16(3, hidden=8)
    v.eval()
    x = _img(1, 32)
    assert v.features(x).shape == (1, 1, 1, 512)
    assert len(v.biases()) == 16 and jax.jit(lambda m, x: m(x))(v, x).shape == (1, 3)
    r = models.resnet18(2)
    r.eval()
    assert jax.jit(lambda m, x: m.features(x))(r, x).shape == (1, 1, 1, 512)
    assert len(r.bias_shapes((1, 32, 32, 3))) == 1 + 8 * 2 + 3 + 1


def test_inception_shapes_only():
    m = models.inception_v3(2)
    m.eval()
    out = jax.eval_shape(lambda x: m.features(x), jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))
    assert out.shape == (1, 1, 1, 2048)
    assert len(m.bias_shapes((1, 75, 75, 3))) == 94 + 1
    with pytest.raises(ValueError, match="75"):
        m.features(_img(1, 64))


def test_bad_images():
    m = models.resnet_small(2, **SMALL)
    m.eval()
    with pytest.raises(ValueError, match="values must lie in"):
        m(jnp.full((1, 32, 32, 3), 255.0))
    with pytest.raises(TypeError, match="uint8"):
        m(jnp.zeros((1, 32, 32, 3), jnp.uint8))
    with pytest.raises(ValueError, match="3 channels"):
        m(jnp.zeros((1, 32, 32, 1)))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        m(jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="num_classes"):
        models.resnet_small(0)


def test_bf16_compute():
    m = models.resnet_small(2, dtype="bfloat16", **SMALL)
    m.eval()
    a = m.features(_img(1, 32))
    assert a.dtype == jnp.bfloat16 and m(_img(1, 32)).dtype == jnp.float32
    assert nnx.state(m, nnx.Param)["conv1"]["kernel"][...].dtype == jnp.float32
