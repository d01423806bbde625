"""CAM methods on a tiny NNX classifier that implements the `models.base` interface."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ibo_jax import artifacts, cam
from ibo_jax.cam import base as cam_base
from ibo_jax.models.base import IMAGENET_MEAN, IMAGENET_STD


class TinyNet(nnx.Module):
    """conv-bn-relu, conv(+bias)-bn-relu (target layer), mean pool, linear."""

    def __init__(self, rngs: nnx.Rngs, num_classes: int = 2, width: int = 8):
        self.num_classes = num_classes
        self.conv1 = nnx.Conv(3, width, (3, 3), use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(width, rngs=rngs)
        self.conv2 = nnx.Conv(width, 2 * width, (3, 3), strides=2, rngs=rngs)
        self.bn2 = nnx.BatchNorm(2 * width, rngs=rngs)
        self.fc = nnx.Linear(2 * width, num_classes, rngs=rngs)
        key = jax.random.key(7)
        for i, bn in enumerate((self.bn1, self.bn2)):
            k = jax.random.split(jax.random.fold_in(key, i), 4)
            n = bn.scale[...].shape[0]
            bn.scale[...] = 1.0 + 0.3 * jax.random.normal(k[0], (n,))
            bn.bias[...] = 0.3 * jax.random.normal(k[1], (n,))
            bn.mean[...] = 0.2 * jax.random.normal(k[2], (n,))
            bn.var[...] = jax.random.uniform(k[3], (n,), minval=0.5, maxval=1.5)
        self.conv2.bias[...] = 0.1 * jax.random.normal(jax.random.fold_in(key, 9), (2 * width,))
        self.eval()

    def normalize(self, x):
        return (x - IMAGENET_MEAN) / IMAGENET_STD

    def _body(self, xn, offsets):
        off = list(offsets) if offsets is not None else [0.0] * 3
        h = nnx.relu(self.bn1(self.conv1(xn)) + off[0])
        h = self.conv2(h) + off[1]
        return nnx.relu(self.bn2(h) + off[2])

    def features(self, x, *, normalized=False):
        return self._body(x if normalized else self.normalize(x), None)

    def head(self, a):
        return self.fc(jnp.mean(a, axis=(1, 2)))

    def __call__(self, x):
        return self.head(self.features(x))

    def biased_forward(self, xn, offsets):
        return self.head(self._body(xn, offsets[:3])) + offsets[3]

    def bias_shapes(self, input_shape):
        def shapes(xn):
            h1 = self.bn1(self.conv1(xn))
            h2 = self.conv2(nnx.relu(h1))
            return h1, h2, self.bn2(h2), self(xn)

        return [tuple(s.shape) for s in jax.eval_shape(shapes, jnp.zeros(input_shape))]

    def biases(self):
        def fold(bn):
            return bn.bias[...] - bn.mean[...] * bn.scale[...] / jnp.sqrt(bn.var[...] + bn.epsilon)

        return [fold(self.bn1), self.conv2.bias[...], fold(self.bn2), self.fc.bias[...]]


ALL = cam.METHODS + cam.EXTRA_METHODS


@pytest.fixture(scope="module")
def model():
    return TinyNet(nnx.Rngs(0))


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(1), (3, 16, 16, 3))


def test_registry_names():
    assert cam.METHODS == (
        "gradcam", "gradcam++", "xgradcam", "ablationcam", "fullgrad", "scorecam", "eigencam"
    )
    assert set(ALL) <= set(cam.REGISTRY)


@pytest.mark.parametrize("method", ALL)
def test_shape_range_and_batch_invariance(model, images, method):
    heat, info = cam.compute(method, model, images, target_class=1, return_info=True)
    heat = np.asarray(heat)
    assert heat.shape == (3, 16, 16) and heat.dtype == np.float32
    assert np.all(np.isfinite(heat)) and heat.min() >= 0 and heat.max() <= 1 + 1e-6
    assert np.asarray(info["valid"]).all() and info["n_invalid"] == 0
    assert np.all(heat.max(axis=(1, 2)) > 0.99)
    single = np.asarray(cam.compute(method, model, images[1:2], target_class=1))
    np.testing.assert_allclose(single[0], heat[1], atol=2e-5)


def test_chunking_does_not_change_results(model, images):
    for method in ("ablationcam", "scorecam"):
        a = cam.compute(method, model, images[:2], batch_size=5)
        b = cam.compute(method, model, images[:2], batch_size=64)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_degenerate_maps_are_zero_and_counted(images):
    dead = TinyNet(nnx.Rngs(0))
    dead.fc.kernel[...] = jnp.zeros_like(dead.fc.kernel[...])
    dead.fc.bias[...] = jnp.zeros_like(dead.fc.bias[...])  # target logit 0, gradients 0
    for method in ALL:
        heat, info = cam.compute(method, dead, images[:2], return_info=True)
        heat = np.asarray(heat)
        assert np.all(np.isfinite(heat)), method
        if method in ("gradcam", "gradcam++", "xgradcam", "ablationcam", "hirescam", "layercam"):
            assert info["n_invalid"] == 2, method
            assert np.all(heat == 0), method


def test_nan_images_are_refused_and_nan_maps_flagged(model, images):
    x = np.asarray(images).copy()
    x[0, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"images: 1 non-finite value"):  # input: refused
        cam.compute("gradcam", model, x)
    graphdef, state = nnx.split(model)  # a map that comes out non-finite: flagged, never NaN
    heat, valid = cam.make_cam_fn("gradcam", graphdef)(state, x)
    assert np.all(np.isfinite(np.asarray(heat)))
    assert list(np.asarray(valid)) == [False, True, True]


def test_no_retrace_on_second_call(model, images):
    cam.compute("gradcam", model, images)
    n = cam_base._compute_jit._cache_size()
    cam.compute("gradcam", model, images + 0.0)
    assert cam_base._compute_jit._cache_size() == n


def test_make_cam_fn_matches_compute(model, images):
    graphdef, state = nnx.split(model)
    fn = cam.make_cam_fn("xgradcam", graphdef, target_class=0)
    heat, valid = fn(state, images)
    np.testing.assert_allclose(
        np.asarray(heat), np.asarray(cam.compute("xgradcam", model, images, target_class=0)), atol=1e-6
    )


def test_bad_inputs(model, images):
    with pytest.raises(ValueError, match="unknown CAM method"):
        cam.compute("gradcam3", model, images)
    with pytest.raises(TypeError, match="floating"):
        cam.compute("gradcam", model, np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="target_class"):
        cam.compute("gradcam", model, images, target_class=5)


@pytest.mark.parametrize("n_in,n_out", [(4, 16), (7, 224), (5, 3), (6, 6)])
def test_resize_matches_cv2(n_in, n_out):
    cv2 = pytest.importorskip("cv2")
    x = np.random.default_rng(0).normal(size=(n_in, n_in + 1)).astype(np.float32)
    ref = cv2.resize(x, (n_out + 2, n_out))  # dsize is (width, height)
    out = np.asarray(cam.resize(jnp.asarray(x), (n_out, n_out + 2)))
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_resize_align_corners_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(1, 2, 4, 5)).astype(np.float32)
    ref = torch.nn.UpsamplingBilinear2d(size=(13, 11))(torch.from_numpy(x)).numpy()
    out = np.asarray(cam.resize(jnp.asarray(x), (13, 11), align_corners=True))
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_eigencam_sign_rule(model, images):
    acts = model.features(images)
    proj = np.asarray(cam.eigencam.first_component_projection(acts))
    # the map correlates non-negatively with the channel-summed activations
    total = np.asarray(acts).sum(-1)
    for p, t in zip(proj, total, strict=True):
        assert np.corrcoef(p.ravel(), t.ravel())[0, 1] >= 0


def test_explain_stage(tmp_path, monkeypatch, stage_context):
    import sys
    import types

    import ml_collections

    from ibo_jax.stages import explain

    n, size = 6, 16
    rs = np.random.default_rng(0)
    split = {
        "image": rs.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "label": np.ones(n, np.int32),
        "tumor_mask": rs.uniform(size=(n, size, size)) > 0.5,
        "index": np.arange(100, 100 + n, dtype=np.int64),
        "slide": np.array(["s"] * n),
    }
    fake = types.ModuleType("ibo_jax.data.patches")
    fake.read_split = lambda data_dir, name, *, label=None, limit=None: split
    fake.counterfactual_twins = lambda data_dir, index, images: (None, "not synthetic")
    monkeypatch.setitem(sys.modules, "ibo_jax.data.patches", fake)
    from ibo_jax.models import loaders

    monkeypatch.setattr(loaders, "load_classifier", lambda d, **kw: TinyNet(nnx.Rngs(0)))

    cfg = explain.default_config()
    cfg.n_images, cfg.batch_size, cfg.methods = 4, 3, ("gradcam", "ablationcam")
    config = ml_collections.ConfigDict({"seed": 0, "explain": cfg})
    ctx = stage_context("explain", tmp_path, cfg, config, key=jax.random.key(0),
                        inputs={"data": tmp_path, "train_classifier": tmp_path})
    summary = explain.run(ctx)
    ev, hm = artifacts.read_explained(ctx.dir)
    graded = [f"graded_{a}" for a in (0, 25, 50, 75, 100)]
    controls = ["random", "oracle", *graded, "oracle_shifted"]  # the defaults
    assert list(hm["methods"]) == ["gradcam", "ablationcam", *controls] and list(hm["controls"]) == controls
    m = len(controls) + 2
    assert hm["heatmaps"].shape == (4, m, size, size) and hm["heatmaps"].dtype == np.float16
    assert hm["levels"].shape == (4, m, size, size) and hm["levels"].dtype == np.int8
    assert hm["valid"].shape == (4, m) and hm["valid"][:, :2].all()
    np.testing.assert_array_equal(hm["heatmaps"][:, 3], hm["heatmaps"][:, 4])  # graded_0 is the oracle
    np.testing.assert_array_equal(hm["heatmaps"][:, 2], hm["heatmaps"][:, 8])  # graded_100 is random
    assert np.all(np.diff(ev["index"]) > 0) and ev["image"].shape == (4, size, size, 3)
    assert artifacts.figure_path("explain", ctx.dir).stat().st_size > 0
    assert summary["per_method"]["gradcam"]["n_valid"] == 4
    # a rerun in the same folder reuses the chunks and gives the same files
    again = explain.run(ctx)
    np.testing.assert_array_equal(artifacts.read_explained(ctx.dir)[1]["levels"], hm["levels"])
    assert again["n_images"] == 4
