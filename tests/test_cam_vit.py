"""CAM methods on ViTs equal pytorch-grad-cam 1.5.7 on the same timm weights, in float64.

The torch side is a tiny timm VisionTransformer with random weights (`ibo_jax_testing.vit_reference`
redraws LayerScale, the class/register tokens, position embeddings, biases and LayerNorm affines:
timm's near-zero defaults make every block near identity), imported with `models.from_timm`. Two
variants: a class token with GELU + LayerScale (UNI's option set) and SwiGLU with 2 register tokens
and patch-only position embeddings (UNI2-h / H-optimus' set), both with patch 14 at 70 px, a 5x5
grid. pytorch-grad-cam runs as its documentation says for ViTs: target `blocks[-1].norm1` and a
reshape transform, here one that drops *all* prefix tokens (1 + registers) and uses the real grid
(the documented one assumes one prefix token and 14x14, which breaks on register and patch-14
models); Ablation-CAM uses its `AblationLayerVit`. FullGrad is compared as pytorch-grad-cam runs it
on a ViT: it ignores the target layer and collects every biased Conv2d/BatchNorm2d, i.e. only
`patch_embed.proj`; the ViT reshape transform cannot be used with it (it is applied to that conv's
[B, C, h, w] output), so the reference runs without one.

Tolerance as the CNN parity tests (tests/test_cam_parity.py): max abs diff 1e-3 on [0, 1] maps,
both sides in float64 (JAX under `jax.enable_x64` with float64 parameters, torch `.double()`).
Eigen-CAM up to the SVD sign (ibo_jax's documented sign rule). Ablation-CAM: pytorch-grad-cam
lowers the fill of each further channel within one of its batches by 1e7 (ibo_jax keeps `min - 1e7`,
see `cam.ablationcam`); the reference runs with its batch size 1, where the two agree exactly, and
`test_ablation_fill_drift` measures how little the batch-size quirk moves its maps.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

TOL = 1e-3
TARGET = 1
METHODS = ["gradcam", "gradcam++", "xgradcam", "ablationcam", "fullgrad", "scorecam", "eigencam",
           "hirescam", "layercam"]
VARIANTS = {"cls": "gelu_ls", "reg": "swiglu_reg_noembed"}  # vit_reference.OPTION_SETS names


@pytest.fixture(autouse=True)
def _x64():
    import jax

    with jax.enable_x64(True):
        yield


def _config(variant: str):
    from ibo_jax_testing import vit_reference

    config = vit_reference.OPTION_SETS[VARIANTS[variant]]
    return dataclasses.replace(config, img_size=70, patch_size=14)


@pytest.fixture(scope="module")
def pairs():
    """variant -> (timm model in float64, ibo_jax model with float64 parameters,
    images [2, 70, 70, 3])."""
    pytest.importorskip("torch")
    # timm and pytorch-grad-cam import torchvision: a stand-in first
    pytest.importorskip("ibo_jax_testing.reference").install_torchvision_stub()
    pytest.importorskip("timm")
    pytest.importorskip("pytorch_grad_cam")
    import jax
    from flax import nnx

    from ibo_jax import models
    from ibo_jax_testing import vit_reference

    out = {}
    with jax.enable_x64(True):
        for i, variant in enumerate(VARIANTS):
            config = _config(variant)
            tmodel = vit_reference.timm_vit(config, seed=i, dtype=__import__("torch").float64)
            jmodel = models.from_timm(config, vit_reference.state_dict_timm(tmodel))
            graphdef, state = nnx.split(jmodel)
            state = jax.tree.map(lambda v: v.astype("float64") if v.dtype.kind == "f" else v, state)
            rng = np.random.default_rng(i)
            base = rng.uniform(size=(2, 5, 5, 3))
            x = np.kron(base, np.ones((1, 14, 14, 1))) + 0.1 * rng.normal(size=(2, 70, 70, 3))
            x = np.clip(x, 0, 1)
            out[variant] = (tmodel, nnx.merge(graphdef, state), x)
    return out


def _reshape(model):
    """pytorch-grad-cam reshape transform: [B, N, C] tokens -> [B, C, h, w], every prefix token
    dropped, the model's real grid."""
    h, w = model.patch_embed.grid_size
    p = model.num_prefix_tokens

    def fn(t):
        return t[:, p:, :].reshape(t.size(0), h, w, t.size(2)).permute(0, 3, 1, 2)

    return fn


def _reference(method: str, tmodel, config, x: np.ndarray, *, batch_size: int = 1) -> np.ndarray:
    import torch

    from ibo_jax_testing import reference, vit_reference

    reference.install_torchvision_stub()
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.ablation_layer import AblationLayerVit
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = getattr(pgc, reference.REFERENCE_CLASSES[method])
    kw = {"reshape_transform": None if method == "fullgrad" else _reshape(tmodel)}
    if method == "ablationcam":
        kw.update(ablation_layer=AblationLayerVit(), batch_size=batch_size)
    with cls(model=tmodel, target_layers=[tmodel.blocks[-1].norm1], **kw) as explainer:
        return explainer(input_tensor=vit_reference.to_torch(x, config, torch.float64),
                         targets=[ClassifierOutputTarget(TARGET)] * len(x))


@pytest.fixture(scope="module")
def heats(pairs):
    """variant -> {method: (ibo_jax map [2, 70, 70] float64, valid [2])}, plus "logits", "grid"
    (the target-layer grid) and "eigencam_flipped" (Eigen-CAM with the other SVD sign): every
    registered CAM function (what `cam.compute` runs) under one jit per variant, eval mode as
    `cam.compute` sets it (one compile instead of a dozen: the test's time is XLA compile time)."""
    import jax
    from flax import nnx

    from ibo_jax.cam.base import REGISTRY, finalize_layer_cam
    from ibo_jax.cam.eigencam import first_component_projection

    @functools.partial(jax.jit, static_argnames=("graphdef",))
    def run(state, x, graphdef):
        model = nnx.merge(graphdef, state)
        model.eval()
        out = {m: REGISTRY[m](model, x, TARGET) for m in METHODS}
        grid = model.features(x)
        flipped = -first_component_projection(grid)
        out["eigencam_flipped"] = finalize_layer_cam(flipped, x.shape[1:3])
        return out, model(x), grid

    out = {}
    with jax.enable_x64(True):  # module-scoped: set up before the function-scoped _x64
        for variant, (_, jmodel, x) in pairs.items():
            graphdef, state = nnx.split(jmodel)
            heat, logits, grid = run(state, x, graphdef)
            out[variant] = {m: (np.asarray(h), np.asarray(v)) for m, (h, v) in heat.items()}
            out[variant].update(logits=np.asarray(logits), grid=np.asarray(grid))
    return out


def _diff(method: str, heats: dict, ref: np.ndarray) -> float:
    per_image = np.abs(heats[method][0] - ref).max(axis=(1, 2))
    if method == "eigencam":  # up to the SVD sign
        flipped = np.abs(heats["eigencam_flipped"][0] - ref).max(axis=(1, 2))
        per_image = np.minimum(per_image, flipped)
    return float(per_image.max())


@pytest.mark.interop
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_match(pairs, heats, variant):
    import torch

    from ibo_jax_testing import vit_reference

    tmodel, _, x = pairs[variant]
    with torch.no_grad():
        ref = tmodel(vit_reference.to_torch(x, _config(variant), torch.float64)).numpy()
    assert np.abs(ref[:, TARGET]).min() > 0.05  # Ablation-CAM divides by it
    out = heats[variant]["logits"]
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.interop
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cam_parity_vit(pairs, heats, variant):
    """Every CAM method on the ViT against pytorch-grad-cam; all methods in one test per variant
    and the per-method differences printed."""
    tmodel, _, x = pairs[variant]
    config = _config(variant)
    diffs = {}
    for method in METHODS:
        ref = _reference(method, tmodel, config, x)
        heat, valid = heats[variant][method]
        assert heat.dtype == np.float64 and heat.shape == ref.shape == (2, 70, 70)
        assert valid.all() and heat.max() > 0 and ref.max() > 0, method
        diffs[method] = _diff(method, heats[variant], ref)
    print(f"{variant}: " + ", ".join(f"{m} {d:.1e}" for m, d in diffs.items()))
    bad = {m: d for m, d in diffs.items() if not d <= TOL}
    assert not bad, f"{variant}: max abs diff > {TOL}: {bad}"


@pytest.mark.interop
def test_ablation_fill_drift(pairs, heats):
    """pytorch-grad-cam at its default batch size (32) fills channel i of a batch with
    min - (i + 1) * 1e7 instead of min - 1e7: on a ViT (no ReLU) that moves its own map, by far less
    than the tolerance here since the LayerNorms after the ablated layer make the scores nearly
    invariant to the fill's scale."""
    tmodel, _, x = pairs["reg"]
    ref = _reference("ablationcam", tmodel, _config("reg"), x, batch_size=32)
    diff = float(np.abs(heats["reg"]["ablationcam"][0] - ref).max())
    print(f"ablationcam vs pytorch-grad-cam batch_size=32: max abs diff {diff:.1e}")
    assert diff <= TOL


@pytest.mark.interop
def test_reshape_drops_every_prefix_token(pairs, heats):
    """The grid a CAM sees is the norm1 patch tokens after 1 + registers prefix tokens, on the
    model's real grid (5x5 here): the same numbers as the timm block's norm1 output."""
    import torch

    from ibo_jax_testing import vit_reference

    tmodel, jmodel, x = pairs["reg"]
    assert tmodel.num_prefix_tokens == jmodel.num_prefix_tokens == 3
    seen = []
    hook = tmodel.blocks[-1].norm1.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            tmodel(vit_reference.to_torch(x, _config("reg"), torch.float64))
    finally:
        hook.remove()
    grid = _reshape(tmodel)(seen[0]).permute(0, 2, 3, 1).numpy()  # [B, 5, 5, C]
    np.testing.assert_allclose(heats["reg"]["grid"], grid, rtol=1e-9, atol=1e-9)


def test_evaluation_paths_on_a_vit():
    """The evaluation's own forwards take token models: `make_predict_fn` (p, log-odds from
    `model(x)`, KID features = `model.embed(x)`), `realism.make_feature_fn` (the same features) and
    F-Fidelity's re-prediction (`model(x)`): with an empty removal set and one sample it gives
    make_predict_fn's logit."""
    import jax
    from flax import nnx

    from ibo_jax import models
    from ibo_jax.evaluation import predict, realism
    from ibo_jax.occlusion import ffidelity

    config = models.ViTConfig(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                              reg_tokens=1, num_classes=2)
    model = models.vit(config, rngs=nnx.Rngs(3))
    x = np.random.default_rng(0).uniform(size=(3, 32, 32, 3)).astype(np.float32)
    p, logit, feat = predict.make_predict_fn(model, batch_size=4)(x)
    logits, emb = nnx.jit(lambda m, x: (m(x), m.embed(x)))(model, x)
    lp, emb = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64), np.asarray(emb)
    np.testing.assert_allclose(logit, lp[:, 1] - lp[:, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p, np.exp(lp[:, 1]), rtol=1e-5, atol=1e-6)
    assert feat.shape == (3, 16)
    np.testing.assert_allclose(feat, emb, rtol=1e-5, atol=1e-5)
    kid_feat = realism.make_feature_fn(model, batch_size=4)(x)
    np.testing.assert_allclose(kid_feat, emb, rtol=1e-5, atol=1e-5)
    out = ffidelity.ffidelity(x, np.zeros((3, 32, 32), bool), key=jax.random.key(0), model=model,
                              fill=(0.5, 0.5, 0.5), n_samples=1, beta=None, batch_size=4)
    np.testing.assert_allclose(out["logit"], logit, rtol=1e-5, atol=1e-5)
