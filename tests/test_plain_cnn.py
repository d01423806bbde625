"""The plain CNN `cnn_small` (no skip connections): interface, CAM methods, spec, cascade, training."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ibo_jax import cam, models
from ibo_jax.models.loaders import FACTORIES, ModelSpec

TINY = dict(widths=(4, 8, 8), convs=(1, 2, 1), strides=(2, 2, 2))


def _img(b: int, hw: int, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).random((b, hw, hw, 3), dtype=np.float32))


def _model(k: int = 2, seed: int = 1, **kw) -> models.PlainCNN:
    """A tiny cnn_small in eval mode with non-trivial BatchNorm statistics."""
    m = models.cnn_small(k, rngs=nnx.Rngs(seed), **{**TINY, **kw})
    for path, var in nnx.to_flat_state(nnx.state(m, nnx.BatchStat)):
        r = np.random.default_rng(len(path) + seed).random(var.shape)
        var.set_value(jnp.asarray((r - 0.5) * 0.2 if path[-1] == "mean" else r + 0.5, jnp.float32))
    m.eval()
    return m


@pytest.fixture(scope="module")
def model():
    return _model()


def test_contract_8x8_features_at_64px(model):
    assert isinstance(model, models.Classifier) and "cnn_small" in models.__all__
    assert model.min_size == 8 and model.num_features == 8
    x = _img(2, 64)
    a = model.features(x)
    assert a.shape == (2, 8, 8, 8)  # 64x64 -> 8x8 CAM maps
    np.testing.assert_allclose(model.features(model.normalize(x), normalized=True), a)
    logits = model(x)
    assert logits.shape == (2, 2) and logits.dtype == jnp.float32
    np.testing.assert_allclose(model.head(a), logits, rtol=1e-6)
    with pytest.raises(ValueError, match=r"needs H, W >= 8"):
        model(_img(1, 4))


def test_no_skip_connections():
    """Silencing stage 2's first block cuts every path from the input: the logits become constant
    (a ResNet's identity/downsample path would still carry the input)."""
    m = _model()
    bn = m.stage2[0].bn
    bn.scale[...] = jnp.zeros_like(bn.scale[...])
    bn.bias[...] = jnp.zeros_like(bn.bias[...])
    logits = np.asarray(m(_img(3, 32, seed=5)))
    np.testing.assert_allclose(logits, np.broadcast_to(logits[:1], logits.shape), atol=1e-6)
    names = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(m, nnx.Param))}
    assert not any("downsample" in n for n in names)
    assert {"stem.conv.kernel", "stage1.0.conv.kernel", "stage2.1.bn.scale", "fc.kernel"} <= names


def test_fullgrad_biases(model):
    x = _img(2, 32)
    xn = model.normalize(x)
    shapes, biases = model.bias_shapes(tuple(xn.shape)), model.biases()
    assert len(shapes) == len(biases) == 1 + sum(TINY["convs"]) + 1  # stem BN + one BN per block + fc
    assert shapes[0] == (2, 32, 32, 4) and shapes[-2] == (2, 4, 4, 8) and shapes[-1] == (2, 2)
    zeros = [jnp.zeros(s) for s in shapes]
    np.testing.assert_allclose(model.biased_forward(xn, zeros), model(x), rtol=1e-5, atol=1e-6)
    bn = model.stem.bn
    folded = bn.bias[...] - bn.mean[...] * bn.scale[...] / jnp.sqrt(bn.var[...] + bn.epsilon)
    np.testing.assert_allclose(biases[0], folded, rtol=1e-6)


@pytest.mark.parametrize("method", cam.METHODS)
def test_every_cam_method(model, method):
    heat, info = cam.compute(method, model, _img(2, 64, seed=3), target_class=1, return_info=True)
    heat = np.asarray(heat)
    assert heat.shape == (2, 64, 64) and heat.dtype == np.float32
    assert np.all(np.isfinite(heat)) and heat.min() >= 0 and heat.max() <= 1 + 1e-6
    valid = np.asarray(info["valid"])
    assert valid.any(), method  # the tiny random net still gives at least one usable map
    assert np.all(heat[valid].max(axis=(1, 2)) > 0.99) and np.all(heat[~valid] == 0)


def test_model_spec_round_trip():
    assert FACTORIES["cnn_small"] is models.cnn_small
    spec = ModelSpec("cnn_small", 3, {"widths": [4, 8], "convs": [1, 1], "strides": [2, 4]})
    again = ModelSpec(**json.loads(json.dumps(spec.to_json())))
    a, b = spec.build(rngs=nnx.Rngs(4)), again.build(rngs=nnx.Rngs(4))
    assert isinstance(a, models.PlainCNN) and a.stage_names == ("stage1", "stage2")
    assert a.min_size == 8 and a.num_classes == 3
    a.eval()
    b.eval()
    x = _img(1, 64)
    assert a.features(x).shape == (1, 8, 8, 8)
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))
    assert spec.build(dtype="bfloat16").dtype == jnp.bfloat16


@pytest.mark.parametrize("kw,match", [
    (dict(widths=(4, 8), convs=(1, 1, 1), strides=(2, 2, 2)), "need equal lengths"),
    (dict(widths=(), convs=(), strides=()), "at least one stage"),
    (dict(convs=(1, 0, 1)), r"convs: expected >= 1"),
    (dict(strides=(2, 0, 2)), r"strides: expected >= 1"),
    (dict(widths=(4, 0, 8)), r"widths: expected channels >= 1"),
    (dict(layers=(1, 1, 1)), "not layers"),
    (dict(std=(1.0, 0.0, 1.0)), r"std: expected 3 per-channel values > 0"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        models.cnn_small(2, **{**TINY, **kw})


def test_bad_class_count():
    with pytest.raises(ValueError, match=r"num_classes: expected >= 1"):
        models.cnn_small(0)


def test_randomization_cascade_groups():
    from ibo_jax.trust import randomization

    x = np.asarray(_img(2, 32, seed=2))
    m = _model()
    assert randomization.cascade_groups(m, x[:1]) == ["stem", "stage1", "stage2", "stage3", "fc"]
    one = _model(widths=(4,), convs=(2,), strides=(8,))  # few groups: the stage's blocks split
    assert randomization.cascade_groups(one, x[:1]) == ["stem", "stage1.0", "stage1.1", "fc"]
    res = randomization.cascade(m, lambda seed: _model(seed=50 + seed), x, methods=("eigencam",))
    assert [s["randomized"] for s in res["steps"]] == ["fc", "stage3", "stage2", "stage1", "stem"]
    assert res["steps"][0]["similarity"]["eigencam"]["spearman"] == pytest.approx(1.0)  # head only
    assert res["steps"][1]["similarity"]["eigencam"]["spearman"] < 0.99  # the target layer's own stage


def test_trains_a_few_steps(tmp_path):
    from ibo_jax.train import classifier as tc

    rng = np.random.default_rng(0)
    x = (rng.random((16, 16, 16, 3)) * 120).astype(np.uint8)
    y = (np.arange(16) % 2).astype(np.int32)
    x[y == 1, 4:12, 4:12] = 230
    spec = tc.ModelSpec("cnn_small", 2, {"widths": (4, 8), "convs": (1, 1), "strides": (1, 2)})
    cfg = tc.TrainConfig(epochs=1, batch_size=8, lr=3e-3, warmup_steps=1, checkpoint_every=10,
                         eval_batch_size=16)
    out = tc.train(spec, cfg, train_batches=lambda e: tc.array_batches(x, y, batch_size=8, seed=0, epoch=e),
                   steps_per_epoch=2, workdir=tmp_path, key=jax.random.key(0), val=(x, y))
    assert out["finished"] and out["steps"] == 2
    loaded = tc.load_classifier(tmp_path)
    assert isinstance(loaded, models.PlainCNN)
    probs = tc.predict(loaded, x)
    assert probs.shape == (16, 2) and np.all(np.isfinite(probs))
