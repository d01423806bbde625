"""ibo_jax.attribution: the registry, the gradient methods (known answers, captum 0.9.0 parity on
the same weights in float64), ViTs, and the model-randomization cascade over the new methods."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ibo_jax import attribution, cam, models
from ibo_jax.attribution import gradients

GRADIENT_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad")
TINY_VIT = dict(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_hidden=32, num_classes=2)


class PixelNet(nnx.Module):
    """A smooth per-pixel MLP then a mean: gradients vary over pixels; compiles in a moment."""

    def __init__(self, seed: int = 0):
        r = np.random.default_rng(seed)
        self.w1 = nnx.Param(jnp.asarray(r.normal(size=(3, 6)), jnp.float32))
        self.w2 = nnx.Param(jnp.asarray(r.normal(size=(6, 2)), jnp.float32))
        self.num_classes = 2

    def __call__(self, x):
        return jnp.tanh(x @ self.w1[...]).mean(axis=(1, 2)) @ self.w2[...] * 4.0


def _images(n: int = 2, size: int = 16, seed: int = 0) -> np.ndarray:
    r = np.random.default_rng(seed)
    base = r.uniform(size=(n, size // 4, size // 4, 3))
    return np.clip(np.kron(base, np.ones((1, 4, 4, 1))) + 0.1 * r.normal(size=(n, size, size, 3)), 0, 1)


def _tiny_vit(seed: int = 0):
    return models.vit(models.ViTConfig(**TINY_VIT), rngs=nnx.Rngs(seed))


def test_registry_names_families_and_errors():
    assert attribution.METHODS[:len(cam.METHODS)] == cam.METHODS
    assert attribution.METHODS[-4:] == GRADIENT_METHODS
    net, vit = PixelNet(), _tiny_vit()
    assert attribution.family(net) == "cnn" and attribution.family(vit) == "vit"
    assert all(attribution.supports(m, net) and attribution.supports(m, vit) for m in GRADIENT_METHODS)
    assert attribution.has_raw("saliency") and not attribution.has_raw("gradcam")
    x = _images().astype(np.float32)
    cases = [
        (dict(name="nope"), "unknown attribution method 'nope'"),
        (dict(name="gradcam", raw=True), "raw=True: 'gradcam' is a CAM"),
        (dict(name="saliency", n_steps=3), "n_steps: not an option of 'saliency'"),
        (dict(name="saliency", reduce="median"), "reduce: expected one of"),
        (dict(name="saliency", raw=True, reduce="sum"), "reduce/outlier_perc"),
        (dict(name="integrated_gradients", method="simpson"), "method: expected one of"),
        (dict(name="integrated_gradients", baselines=np.zeros((3, 16, 16, 3))), "baselines: expected a scalar"),
        (dict(name="smoothgrad", noise=np.zeros((2, 1, 16, 16, 3))), r"noise: expected \[nt_samples"),
        (dict(name="smoothgrad", nt_type="sq"), "nt_type: expected one of"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            attribution.compute(model=net, images=x, **kw)


def test_maps_reduce_as_documented_and_delegate_cams():
    net, x = PixelNet(), _images(3).astype(np.float32)
    for name in GRADIENT_METHODS:
        raw = attribution.compute(name, net, x, 1, raw=True)
        assert raw.shape == x.shape and raw.dtype == jnp.float32
        heat, info = attribution.compute(name, net, x, 1, return_info=True)
        default = attribution.REGISTRY[name].reduce
        want, _ = attribution.to_unit(attribution.reduce_channels(raw, default))
        assert heat.shape == x.shape[:3] and info["n_invalid"] == 0
        np.testing.assert_allclose(heat, want, atol=1e-6)
        assert float(heat.min()) == 0.0 and float(heat.max()) == pytest.approx(1.0)
    assert attribution.REGISTRY["saliency"].reduce == "max_abs"
    clipped = np.asarray(attribution.compute("saliency", net, x, 1, outlier_perc=10))
    assert np.all((clipped == 1.0).mean(axis=(1, 2)) >= 0.09)  # the top 10% share the maximum
    pos = attribution.compute("input_x_gradient", net, x, 1, reduce="sum_positive")
    raw = attribution.compute("input_x_gradient", net, x, 1, raw=True)
    assert np.all(np.asarray(pos)[np.asarray(raw.sum(-1)) <= 0] == 0)
    # make_fn: a hot-loop function with the same output; CAM names are cam.compute's maps
    graphdef, state = nnx.split(net)
    out, valid = attribution.make_fn("saliency", graphdef, target_class=1)(state, jnp.asarray(x))
    np.testing.assert_allclose(out, attribution.compute("saliency", net, x, 1), atol=1e-7)
    assert bool(valid.all())
    m = models.resnet_small(2, widths=(4, 8, 8), rngs=nnx.Rngs(0))
    m.eval()
    np.testing.assert_array_equal(attribution.compute("eigencam", m, x), cam.compute("eigencam", m, x))


def test_integrated_gradients_completeness_quadrature_and_chunks():
    """Completeness (sum of IG = f(x) - f(b)) with Gauss-Legendre; captum's trapezoid weights sum
    to (n - 1) / n, so its sum is that fraction of the difference; chunked steps = vmapped."""
    net, x = PixelNet(), _images(2).astype(np.float32)
    base = np.full_like(x, 0.3)
    diff = np.asarray(net(jnp.asarray(x))[:, 1] - net(jnp.asarray(base))[:, 1])
    gl = attribution.compute("integrated_gradients", net, x, 1, raw=True, baselines=base, n_steps=16)
    np.testing.assert_allclose(gl.sum(axis=(1, 2, 3)), diff, rtol=1e-4)
    n = 64
    tr = attribution.compute("integrated_gradients", net, x, 1, raw=True, baselines=0.3, n_steps=n,
                             method="riemann_trapezoid")
    np.testing.assert_allclose(tr.sum(axis=(1, 2, 3)), diff * (n - 1) / n, rtol=1e-3)
    chunked = attribution.compute("integrated_gradients", net, x, 1, raw=True, baselines=0.3, n_steps=n,
                                  method="riemann_trapezoid", internal_batch_size=2 * 5)
    np.testing.assert_allclose(chunked, tr, rtol=1e-5, atol=1e-7)
    a, w = gradients.quadrature("gausslegendre", 5)
    assert a.min() > 0 and a.max() < 1 and w.sum() == pytest.approx(1.0)


def test_smoothgrad_noise_keys_follow_the_image_not_the_batch():
    net, x = PixelNet(), _images(3).astype(np.float32)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(7), i))(jnp.arange(100, 103))
    full = attribution.compute("smoothgrad", net, x, 1, raw=True, keys=keys, nt_samples=4)
    part = attribution.compute("smoothgrad", net, x[1:], 1, raw=True, keys=keys[1:], nt_samples=4)
    np.testing.assert_allclose(part, full[1:], rtol=1e-5, atol=1e-7)
    zero = np.zeros((2, *x.shape), np.float32)
    sal = attribution.compute("saliency", net, x, 1, raw=True)
    np.testing.assert_allclose(attribution.compute("smoothgrad", net, x, 1, raw=True, noise=zero), sal,
                               rtol=1e-5, atol=1e-7)
    signed = attribution.compute("saliency", net, x, 1, raw=True, abs=False)
    np.testing.assert_allclose(jnp.abs(signed), sal, atol=1e-7)
    ixg = attribution.compute("input_x_gradient", net, x, 1, raw=True)
    np.testing.assert_allclose(ixg, x * signed, rtol=1e-6, atol=1e-8)
    var = attribution.compute("smoothgrad", net, x, 1, raw=True, noise=zero, nt_type="vargrad")
    assert float(jnp.abs(var).max()) < 1e-9


PARITY = [
    ("saliency", {"abs": False}),
    ("integrated_gradients", {"method": "riemann_trapezoid", "n_steps": 8, "baselines": "array"}),
    ("integrated_gradients", {"method": "gausslegendre", "n_steps": 8, "baselines": 0.25,
                              "internal_batch_size": 4}),
    ("smoothgrad", {"noise": "explicit"}),
]


def _redrawn_vit(seed: int = 3):
    """The tiny ViT with every parameter redrawn (timm-style inits leave tokens and biases near
    zero): the parity then exercises the class token, position embedding and biases."""
    m = _tiny_vit(seed)
    r = np.random.default_rng(seed)
    graphdef, state = nnx.split(m)

    def redraw(path, v):
        if str(path[-1]) == "scale":
            return jnp.asarray(1.0 + 0.3 * r.normal(size=v.shape), v.dtype)
        fan_in = int(np.prod(v.shape[:-1])) if v.ndim >= 2 and str(path[-1]) == "kernel" else 1
        return jnp.asarray((0.3 if fan_in == 1 else 1.0 / np.sqrt(fan_in)) * r.normal(size=v.shape), v.dtype)

    return nnx.merge(graphdef, nnx.map_state(redraw, state))


@pytest.fixture(scope="module", params=["cnn", "vit"])
def parity_pair(request):
    """(ibo_jax model with float64 parameters, its torch twin in float64): the demo's resnet_small
    and a tiny ViT (class token, GELU; `ibo_jax_testing.attribution_reference.TorchViT`)."""
    pytest.importorskip("torch")
    pytest.importorskip("captum")
    import torch

    from ibo_jax_testing import attribution_reference as ref

    if request.param == "cnn":
        widths = (4, 8, 8)
        m = ref.randomize_batchnorm(models.resnet_small(2, widths=widths, rngs=nnx.Rngs(3)), seed=3)
        m.eval()
        t = ref.twin(m, widths=widths)
    else:
        m = _redrawn_vit()
        t = ref.vit_twin(m, dtype=torch.float64)
    with jax.enable_x64(True):
        graphdef, state = nnx.split(m)
        state = jax.tree.map(lambda v: v.astype("float64") if v.dtype.kind == "f" else v, state)
        return nnx.merge(graphdef, state), t


@pytest.mark.interop
@pytest.mark.parametrize("name,options", PARITY, ids=[f"{n}-{o.get('method', '')}" for n, o in PARITY])
def test_gradient_parity_with_captum(parity_pair, name, options):
    import torch

    from ibo_jax_testing import attribution_reference as ref

    jm, tm = parity_pair
    x = _images(2, 16, seed=5)
    r = np.random.default_rng(9)
    ours_opts, theirs_opts = dict(options), dict(options)
    if options.get("baselines") == "array":
        ours_opts["baselines"] = theirs_opts["baselines"] = r.uniform(size=x.shape)
    if name == "smoothgrad":
        noise = 0.1 * r.normal(size=(3, *x.shape))
        ours_opts = {"noise": noise}
        theirs_opts = {"noise": noise, "abs": True}
    with jax.enable_x64(True):
        with torch.no_grad():
            logits = tm(ref.to_nchw(x)).numpy()
        np.testing.assert_allclose(np.asarray(jm(x)), logits, rtol=1e-9, atol=1e-9)
        ours = np.asarray(attribution.compute(name, jm, x, 1, raw=True, **ours_opts))
    assert ours.dtype == np.float64
    theirs = ref.captum_raw(name, tm, x, 1, **theirs_opts)
    scale = np.abs(theirs).max()
    assert scale > 0
    # captum rounds its step sizes (and the trapezoid's alphas) to float32: ~1e-7 relative
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 * scale)


def test_vit_gradient_methods():
    """The gradient methods run on a ViT through __call__: integrated gradients are complete (the
    ViT is smooth: GELU, softmax, LayerNorm), so the input gradients are the model's."""
    vit = _tiny_vit()
    x = _images(3).astype(np.float32)
    ig = attribution.compute("integrated_gradients", vit, x, 1, raw=True, n_steps=16)
    forward = jax.jit(lambda v: vit(v)[:, 1])
    diff = np.asarray(forward(jnp.asarray(x)) - forward(jnp.zeros_like(x)))
    np.testing.assert_allclose(ig.sum(axis=(1, 2, 3)), diff, rtol=2e-3, atol=1e-5)
    heat, info = attribution.compute("saliency", vit, x, 1, return_info=True)  # compiled once for the cascade too
    assert heat.shape == (3, 16, 16) and info["n_invalid"] == 0


def test_randomization_cascade_covers_gradient_methods():
    from ibo_jax.trust import randomization

    kw = dict(widths=(4, 8, 8), layers=(1, 1, 1), strides=(2, 2, 2))
    model = models.resnet_small(2, rngs=nnx.Rngs(0), **kw)
    model.eval()
    x = _images(4, 16, seed=2).astype(np.float32)
    res = randomization.cascade(model, lambda s: models.resnet_small(2, rngs=nnx.Rngs(50 + s), **kw), x,
                                methods=("saliency", "smoothgrad"), method_options={"smoothgrad": {"nt_samples": 2}})
    assert res["steps"][0]["randomized"] == "fc" and res["groups_forward_order"][0] == "conv1"
    assert set(res["floor"]) == {"saliency", "smoothgrad"}
    last = res["steps"][-1]["similarity"]["saliency"]["spearman"]
    assert last < 0.9  # a fully re-initialized model's saliency is not the trained one's


def test_randomization_vit_cascade_head_blocks_backwards_patch_embed():
    from ibo_jax.trust import randomization

    vit = _tiny_vit()
    x = _images(3).astype(np.float32)
    units = dict(randomization.cascade_steps(vit, x[:1]))
    assert list(units) == ["patch_embed", "blocks.0", "blocks.1", "head"]
    assert {"patch_embed", "cls_token", "pos_embed"} <= set(units["patch_embed"])
    assert {"norm", "fc"} <= set(units["head"])
    with pytest.raises(ValueError, match="methods: 'rollout'|unknown attribution method 'rollout'"):
        randomization.cascade(PixelNet(), _tiny_vit, x, methods=("rollout",))
    res = randomization.cascade(vit, _tiny_vit, x, methods=("saliency",))
    assert [s["randomized"] for s in res["steps"]] == ["head", "blocks.1", "blocks.0", "patch_embed"]
    assert res["resolution"] == [2, 2]
    sims = [s["similarity"]["saliency"]["spearman"] for s in res["steps"]]
    assert sims[-1] < 0.9
