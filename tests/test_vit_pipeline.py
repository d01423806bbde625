"""The pipeline's side of ViTs and of heatmaps from elsewhere: `explain.heatmaps_npz` scored exactly
like computed maps, the `token_drop` strategy (a token goes when at least half of its pixels are
removed), linear probes and fine-tuning of a ViT in `train_classifier`."""

import csv

import numpy as np
import pytest

from ibo_jax import pipeline

S = 32


def _own_resnet(tmp_path):
    from flax import nnx

    from ibo_jax import models
    from ibo_jax.models.convert import to_torchvision_state_dict

    model = models.resnet18(num_classes=2, rngs=nnx.Rngs(1), strides=(1, 1, 1, 1))
    np.savez(tmp_path / "resnet.npz", **to_torchvision_state_dict("resnet18", model))
    return tmp_path / "resnet.npz"


def _registry():
    """data, train_classifier, explain, occlude (without the DDPM: no 'ibo'), score."""
    reg = {n: pipeline.STAGES[n] for n in ("data", "train_classifier", "explain", "score")}
    reg["occlude"] = pipeline.Stage("occlude", "ibo_jax.stages.occlude", deps=("explain",))
    return {n: reg[n] for n in ("data", "train_classifier", "explain", "occlude", "score")}


def _config(tmp_path, weights, methods=("gradcam",), heatmaps_npz=""):
    c = pipeline.default_config(("data", "train_classifier", "explain", "occlude", "score"))
    c.image_size = S
    c.data.source, c.data.npz_path, c.data.n_examples = "npz", str(tmp_path / "patches.npz"), 0
    t = c.train_classifier
    t.arch, t.model_kwargs, t.epochs, t.init_weights = "resnet18", {"strides": (1, 1, 1, 1)}, 0, str(weights)
    c.explain.n_images, c.explain.methods, c.explain.controls = 4, methods, ()
    c.explain.heatmaps_npz = heatmaps_npz
    c.occlude.curves, c.occlude.strategies, c.occlude.residual = ("morf", "fixed"), ("blackening",), False
    c.occlude.fixed_strategies = ()
    c.score.n_boot = 20
    return c


def _scores(workdir, method):
    with open(workdir / "score" / "scores.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == method]
    return sorted(rows, key=lambda r: (r["image_id"], r["curve"], int(r["mask"])))


def test_heatmaps_from_elsewhere_are_scored_like_computed_ones(tmp_path):
    from ibo_jax import artifacts
    from ibo_jax_testing import write_patches_npz

    write_patches_npz(tmp_path / "patches.npz", n=12, size=S, splits={"val": 4, "test": 8})
    weights = _own_resnet(tmp_path)
    reg, w = _registry(), tmp_path / "w"
    up_to_explain = ("data", "train_classifier", "explain")
    # a run with gradcam gives the maps that an outside tool "computed"
    pipeline.run(_config(tmp_path, weights), w, registry=reg, stages=up_to_explain)
    ev, hm = artifacts.read_explained(w / "explain")
    grad = hm["heatmaps"][:, 0].astype(np.float32)  # [N, H, W]
    # rows in another order plus one patch not in the evaluation set; an affine change of the values
    extra = np.arange(S * S, dtype=np.float32).reshape(1, S, S)
    order = [2, 0, 3, 1]
    ext = {"index": np.concatenate([ev["index"][order], [999_999]]), "methods": np.array(["ext_gradcam"]),
           "heatmaps": np.concatenate([3.0 * grad[order] - 1.0, extra])[:, None]}
    np.savez(tmp_path / "ext.npz", **ext)
    summary = pipeline.run(_config(tmp_path, weights, heatmaps_npz=str(tmp_path / "ext.npz")), w, registry=reg)
    ran = {r["stage"]: r for r in summary["stages"]}
    assert ran["train_classifier"]["status"] == "skipped"
    out = ran["explain"]["summary"]["external"]
    assert out["methods"] == ["ext_gradcam"] and out["resized"] is None
    assert "cannot be recomputed" in out["randomization"]["unavailable"]
    _, hm_c = artifacts.read_explained(w / "explain")
    assert list(hm_c["methods"]) == ["gradcam", "ext_gradcam"]
    np.testing.assert_array_equal(hm_c["levels"][:, 0], hm_c["levels"][:, 1])
    a, b = _scores(w, "gradcam"), _scores(w, "ext_gradcam")
    assert len(a) == len(b) > 0
    for col in ("image_id", "curve", "mask", "fraction", "p_tumor"):
        assert [r[col] for r in a] == [r[col] for r in b], col

    # maps at half the resolution, alone (no computed method), are resized bilinearly, and said so
    half = {**ext, "heatmaps": ext["heatmaps"][..., ::2, ::2]}
    np.savez(tmp_path / "half.npz", **half)
    c = _config(tmp_path, weights, methods=(), heatmaps_npz=str(tmp_path / "half.npz"))
    summary = pipeline.run(c, w, registry=reg, stages=up_to_explain)
    out = {r["stage"]: r for r in summary["stages"]}["explain"]["summary"]["external"]
    assert out["resized"]["from"] == [S // 2, S // 2] and out["resized"]["to"] == [S, S]


@pytest.mark.parametrize("bad,message", [
    ({"index": None}, "missing array(s) ['index']"),
    ({"index": "short"}, "evaluation patches are missing"),
    ({"methods": np.array(["gradcam"])}, "not used by a registered method"),
    ({"heatmaps": "3d"}, "expected float [N="),
])
def test_heatmaps_npz_bad_inputs_are_one_line(tmp_path, bad, message):
    from ibo_jax import attribution
    from ibo_jax.stages import explain

    index = np.arange(10, 14)
    arrays = {"index": index, "methods": np.array(["mine"]), "heatmaps": np.random.rand(4, 1, S, S)}
    for k, v in bad.items():
        if v is None:
            del arrays[k]
        elif v == "short":
            arrays[k] = index[:3]
            arrays["heatmaps"] = arrays["heatmaps"][:3]
        elif v == "3d":
            arrays[k] = arrays[k][:, 0]
        else:
            arrays[k] = v
    np.savez(tmp_path / "x.npz", **arrays)
    with pytest.raises(ValueError) as e:
        explain.read_external(str(tmp_path / "x.npz"), index, (S, S), attribution.METHODS)
    assert message in str(e.value) and "explain.heatmaps_npz" in str(e.value) and "\n" not in str(e.value)


def _tiny_vit(seed=0, **fields):
    from flax import nnx

    from ibo_jax import models

    cfg = models.ViTConfig(**{"img_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2,
                              "mlp_hidden": 32, **fields})
    return models.vit(cfg, rngs=nnx.Rngs(seed))


def test_token_drop_drops_a_token_when_at_least_half_its_pixels_are_removed():
    from ibo_jax.occlusion.token_drop import kept_tokens

    remove = np.zeros((1, 8, 8), bool)  # a 2x2 grid of 4x4 patches (16 pixels each)
    remove[0, :2, :4] = True            # patch (0, 0): 8 of 16 removed -> dropped
    remove[0, :2, 4:7] = True           # patch (0, 1): 6 of 16 -> kept
    remove[0, 2, 4] = True              # ... 7 of 16 -> still kept
    remove[0, 4:, :] = True             # patches (1, 0), (1, 1): all removed -> dropped
    np.testing.assert_array_equal(kept_tokens(remove, (2, 2)), [[False, True, False, False]])
    remove[0, 3, 4] = True              # patch (0, 1): 8 of 16 -> dropped
    np.testing.assert_array_equal(kept_tokens(remove, (2, 2)), [[False, False, False, False]])
    with pytest.raises(ValueError, match="do not split into the ViT's 3x3 token grid"):
        kept_tokens(remove, (3, 3))


def test_token_drop_is_the_vit_predicting_without_the_removed_tokens():
    import jax

    from ibo_jax import occlusion
    from ibo_jax.occlusion.token_drop import kept_tokens

    model = _tiny_vit(global_pool="avg", reg_tokens=1)
    x = np.random.default_rng(0).random((3, 16, 16, 3)).astype(np.float32)
    remove = np.zeros((3, 16, 16), bool)
    remove[1, :8, :8] = True            # four whole patches
    remove[2, :, :2] = True             # half of every patch of the first column
    out = occlusion.apply("token_drop", x, remove, model=model, tumor_class=1)
    keep = kept_tokens(remove, model.grid_size)
    assert keep[0].all() and keep[1].sum() == 12 and keep[2].sum() == 12
    lp = np.asarray(jax.nn.log_softmax(model(x, keep=keep), -1), np.float64)
    np.testing.assert_allclose(out["p"], np.exp(lp[:, 1]), rtol=1e-5)
    np.testing.assert_allclose(out["logit"], lp[:, 1] - lp[:, 0], rtol=1e-4, atol=1e-5)
    # nothing removed: the plain prediction of the original image
    np.testing.assert_allclose(out["p"][0], jax.nn.softmax(model(x[:1]), -1)[0, 1], rtol=1e-5)
    assert abs(out["p"][1] - out["p"][0]) > 1e-6  # dropping tokens changes the prediction
    assert occlusion.predicted_by("token_drop") == "stored"


def test_token_drop_refuses_a_cnn():
    from ibo_jax import occlusion
    from ibo_jax_testing.models import colour_classifier

    x, remove = np.zeros((1, 16, 16, 3), np.float32), np.zeros((1, 16, 16), bool)
    with pytest.raises(ValueError, match="only ViT classifiers drop tokens"):
        occlusion.apply("token_drop", x, remove, model=colour_classifier())
