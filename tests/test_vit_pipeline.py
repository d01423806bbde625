"""The pipeline's side of ViTs and of heatmaps from elsewhere: `explain.heatmaps_npz` scored exactly
like computed maps, the `token_drop` strategy (a token goes when at least half of its pixels are
removed), linear probes and fine-tuning of a ViT in `train_classifier`."""

import csv

import numpy as np
import pytest

from ibo_jax import io as ibo_io
from ibo_jax import pipeline

S = 32


def _registry():
    """data, train_classifier, explain, occlude (without the DDPM: no 'ibo'), score."""
    reg = {n: pipeline.STAGES[n] for n in ("data", "train_classifier", "explain", "score")}
    reg["occlude"] = pipeline.Stage("occlude", "ibo_jax.stages.occlude", deps=("explain",))
    return {n: reg[n] for n in ("data", "train_classifier", "explain", "occlude", "score")}


def _scores(workdir, method):
    with open(workdir / "score" / "scores.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == method]
    return sorted(rows, key=lambda r: (r["image_id"], r["curve"], int(r["mask"])))


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
    from flax import nnx

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
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda st, x, keep: jax.nn.log_softmax(nnx.merge(graphdef, st)(x, keep=keep), -1))
    lp = np.asarray(forward(state, x, keep), np.float64)
    np.testing.assert_allclose(out["p"], np.exp(lp[:, 1]), rtol=1e-5)
    np.testing.assert_allclose(out["logit"], lp[:, 1] - lp[:, 0], rtol=1e-4, atol=1e-5)
    # nothing removed: the plain prediction of the original image
    np.testing.assert_allclose(out["p"][0], np.exp(forward(state, x[:1], None)[0, 1]), rtol=1e-5)
    assert abs(out["p"][1] - out["p"][0]) > 1e-6  # dropping tokens changes the prediction
    assert occlusion.predicted_by("token_drop") == "stored"


def test_token_drop_refuses_a_cnn():
    from ibo_jax import occlusion
    from ibo_jax_testing.models import colour_classifier

    x, remove = np.zeros((1, 16, 16, 3), np.float32), np.zeros((1, 16, 16), bool)
    with pytest.raises(ValueError, match="only ViT classifiers drop tokens"):
        occlusion.apply("token_drop", x, remove, model=colour_classifier())


TINY = {"img_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_hidden": 32}


def test_vit_linear_probe_explained_and_token_dropped_end_to_end(tmp_path):
    """A linear probe on a (random) ViT backbone: features cached, only fc trained; explained by a
    CAM and a gradient method, occluded by pixels and by token dropping, scored; heatmaps from
    elsewhere scored exactly like computed ones; then the ViT fine-tuned instead."""
    from ibo_jax import artifacts
    from ibo_jax.models import loaders
    from ibo_jax.train.probe import embed_features
    from ibo_jax_testing import write_patches_npz

    write_patches_npz(tmp_path / "patches.npz", n=40, size=16, splits={"train": 24, "val": 8, "test": 8})
    c = pipeline.default_config(("data", "train_classifier", "explain", "occlude", "score"))
    c.image_size = 16
    c.data.source, c.data.npz_path, c.data.n_examples = "npz", str(tmp_path / "patches.npz"), 0
    t = c.train_classifier
    t.arch, t.model_kwargs, t.freeze_backbone = "vit", dict(TINY, global_pool="avg"), True
    t.epochs, t.batch_size, t.lr, t.eval_batch_size = 3, 8, 0.05, 16
    c.explain.n_images, c.explain.methods, c.explain.controls = 3, ("gradcam", "saliency"), ("random",)
    c.occlude.curves, c.occlude.strategies, c.occlude.residual = ("morf",), ("blackening", "token_drop"), False
    c.score.n_boot = 20
    summary = pipeline.run(c, tmp_path / "w", registry=_registry())
    w = tmp_path / "w"
    ran = {r["stage"]: r["summary"] for r in summary["stages"]}
    assert ran["train_classifier"]["freeze_backbone"] and ran["train_classifier"]["arch"]["vit"]["depth"] == 1
    assert (w / "train_classifier" / "probe_features.npz").is_file()
    probe = loaders.load_classifier(w / "train_classifier")
    fresh = loaders.fresh_classifier(w / "train_classifier", 0)
    assert type(probe).__name__ == "VisionTransformer"
    # only the head moved: the backbone is the (random) initialization the stage drew
    feats = ibo_io.read_npz(w / "train_classifier" / "probe_features.npz")["train"]
    train = np.load(tmp_path / "patches.npz")["image"][:24]
    np.testing.assert_allclose(embed_features(probe, train[:2]), feats[:2], rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.asarray(probe.fc.kernel[...]), np.asarray(fresh.fc.kernel[...]))
    layout = artifacts.read_layout(w / "occlude")
    assert layout["predicted_by"]["token_drop"] == "stored"
    s = ibo_io.read_json(w / "score" / "summary.json")
    assert set(s["strategies"]) == {"blackening", "token_drop"}
    rows = [r for r in csv.DictReader(open(w / "score" / "scores.csv")) if r["strategy"] == "token_drop"]
    assert rows and {r["method"] for r in rows} >= {"gradcam", "saliency"}

    # heatmaps from elsewhere: the saliency maps written out by "another tool" (rows in another
    # order, one patch not in the evaluation set, an affine change of the values) score exactly
    # like the saliency maps computed here
    ev, hm = artifacts.read_explained(w / "explain")
    sal = hm["heatmaps"][:, list(hm["methods"]).index("saliency")].astype(np.float32)
    order = [2, 0, 1]
    ext = {"index": np.concatenate([ev["index"][order], [999_999]]), "methods": np.array(["ext_saliency"]),
           "heatmaps": np.concatenate([3.0 * sal[order] - 1.0, np.ones((1, 16, 16))])[:, None]}
    np.savez(tmp_path / "ext.npz", **ext)
    c.explain.heatmaps_npz = str(tmp_path / "ext.npz")
    summary = pipeline.run(c, w, registry=_registry())
    ran = {r["stage"]: r for r in summary["stages"]}
    assert ran["train_classifier"]["status"] == "skipped"
    out = ran["explain"]["summary"]["external"]
    assert out["methods"] == ["ext_saliency"] and out["resized"] is None
    assert "cannot be recomputed" in out["randomization"]["unavailable"]
    _, hm = artifacts.read_explained(w / "explain")
    assert list(hm["methods"]) == ["gradcam", "saliency", "ext_saliency", "random"]
    np.testing.assert_array_equal(hm["levels"][:, 1], hm["levels"][:, 2])
    a, b = _scores(w, "saliency"), _scores(w, "ext_saliency")
    assert len(a) == len(b) > 0
    for col in ("image_id", "strategy", "curve", "mask", "fraction", "p_tumor"):
        assert [r[col] for r in a] == [r[col] for r in b], col
    # maps at half the resolution, alone (no computed method): resized bilinearly, and said so
    np.savez(tmp_path / "half.npz", **{**ext, "heatmaps": ext["heatmaps"][..., ::2, ::2]})
    c.explain.heatmaps_npz, c.explain.methods = str(tmp_path / "half.npz"), ()
    summary = pipeline.run(c, w, registry=_registry(), stages=("explain",))
    out = {r["stage"]: r for r in summary["stages"]}["explain"]["summary"]["external"]
    assert out["resized"]["from"] == [8, 8] and out["resized"]["to"] == [16, 16]

    # the same ViT fine-tuned (every weight trained) instead: only train_classifier reruns
    t.freeze_backbone, t.epochs = False, 1
    summary = pipeline.run(c, w, registry=_registry(), stages=("train_classifier",))
    tuned = loaders.load_classifier(w / "train_classifier")
    assert not {r["stage"]: r for r in summary["stages"]}["train_classifier"]["summary"]["freeze_backbone"]
    assert not np.allclose(np.asarray(tuned.patch_embed.proj.kernel[...]),
                           np.asarray(probe.patch_embed.proj.kernel[...]))


def test_vit_arch_specs_and_configs():
    from ibo_jax.train import classifier as tc

    spec = tc.model_spec("tiny", 3, {"depth": 2})
    assert spec.arch == "vit" and spec.num_classes == 3 and spec.kwargs["depth"] == 2
    assert tc.model_spec("vit", 2, dict(TINY)).kwargs["patch_size"] == 4
    assert tc.model_spec({"preset": "tiny", "depth": 1}, 2).kwargs["embed_dim"] == 64
    assert tc.model_spec("resnet18", 2, {"strides": (1, 1, 1, 1)}).arch == "resnet18"
    for arch, kwargs, message in (("vit", {"depht": 2}, "['depht'] are not ViTConfig fields"),
                                  ("tiny", {"img_size": 60}, "ViTConfig.img_size"),
                                  ("resnet_big", {}, "a ViT preset of")):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            tc.model_spec(arch, 2, kwargs)
    vit_demo = pipeline.config_from_file(pipeline.Path(__file__).parent.parent / "configs" / "vit_demo.py")
    assert "token_drop" in vit_demo.occlude.strategies and {"saliency", "gradcam"} <= set(vit_demo.explain.methods)
    own = pipeline.config_from_file(pipeline.Path(__file__).parent.parent / "configs" / "own_models.py", "probe,cpu")
    assert own.train_classifier.freeze_backbone and own.train_classifier.epochs > 0 and own.explain.n_images == 8


def test_explain_refuses_a_method_the_classifier_family_lacks():
    from ibo_jax.stages import explain
    from ibo_jax_testing.models import colour_classifier

    cnn = colour_classifier()
    explain.check_methods(("gradcam", "saliency"), cnn)
    with pytest.raises(ValueError, match=r"explain.methods: \['rollout'\] do not support this cnn classifier") as e:
        explain.check_methods(("gradcam", "rollout"), cnn)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown method 'gradcan'"):
        explain.check_methods(("gradcan",), cnn)


def test_linear_probe_on_a_timm_checkpoint_keeps_its_backbone(tmp_path):
    """init_weights = a timm-layout foundation checkpoint without a head (.npz here; .bin/.pth/
    .safetensors read the same way): the probe's backbone is the checkpoint's, only fc is new."""
    import jax

    from ibo_jax import models
    from ibo_jax.models.vit_import import expected_shapes
    from ibo_jax.train import classifier as tc
    from ibo_jax.train.probe import embed_features, train_linear_probe

    config = models.ViTConfig(**TINY, num_classes=2)
    rng = np.random.default_rng(0)
    sd = {k: rng.normal(0, 0.2, s).astype(np.float32) for k, s in expected_shapes(config).items()
          if not k.startswith("head.")}
    np.savez(tmp_path / "backbone.npz", **sd)
    x = rng.integers(0, 255, (16, 16, 16, 3), dtype=np.uint8)
    y = np.arange(16) % 2
    summary = train_linear_probe(tc.model_spec("vit", 2, TINY), tc.TrainConfig(epochs=2, batch_size=8),
                                 train=(x, y), val=(x, y), workdir=tmp_path / "w", key=jax.random.key(0),
                                 init_weights=str(tmp_path / "backbone.npz"))
    assert summary["best"]["linear_probe"] and len(summary["history"]) == 2
    got = tc.load_classifier(tmp_path / "w")
    want = models.from_timm(config, str(tmp_path / "backbone.npz"), num_classes=2)
    np.testing.assert_allclose(embed_features(got, x[:4]), embed_features(want, x[:4]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="init_weights: cannot load the checkpoint into vit"):
        tc.initial_model(tc.model_spec("vit", 2, dict(TINY, depth=2)), str(tmp_path / "backbone.npz"),
                         jax.random.key(0))
    # the new head comes from the classifier's key (train_classifier.seed), the backbone from the file
    spec = tc.model_spec("vit", 2, TINY)
    heads = [np.asarray(tc.initial_model(spec, str(tmp_path / "backbone.npz"), jax.random.key(k))[0].fc.kernel[...])
             for k in (0, 0, 1)]
    np.testing.assert_array_equal(heads[0], heads[1])
    assert np.abs(heads[0] - heads[2]).max() > 1e-4


@pytest.mark.interop
def test_init_weights_reads_a_hugging_face_vit_folder_with_its_own_config(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")  # transformers refuses to import without it
    import json

    import jax
    from safetensors.numpy import save_file

    from ibo_jax import models
    from ibo_jax.train import classifier as tc
    from ibo_jax.train.probe import embed_features
    from ibo_jax_testing import vit_reference as vr

    tr = vr.import_transformers()
    hf = tr.ViTModel(tr.ViTConfig(hidden_size=128, num_hidden_layers=1, num_attention_heads=2, image_size=16,
                                  patch_size=4, intermediate_size=64), add_pooling_layer=False)
    hf = vr.randomize_(hf, seed=0)
    (tmp_path / "phikon").mkdir()
    save_file({k: v.detach().numpy() for k, v in hf.state_dict().items()}, str(tmp_path / "phikon" / "model.safetensors"))
    (tmp_path / "phikon" / "config.json").write_text(json.dumps(hf.config.to_dict(), default=str))
    # the stage's arch (here the tiny preset at 16 px) is replaced by the checkpoint's own config
    model, spec = tc.initial_model(tc.model_spec("vit", 2, TINY), str(tmp_path / "phikon"), jax.random.key(0))
    assert spec.kwargs["embed_dim"] == 128 and spec.kwargs["norm_eps"] == hf.config.layer_norm_eps
    want = models.from_hf_vit(tmp_path / "phikon", num_classes=2)
    x = np.random.default_rng(0).integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(embed_features(model, x), embed_features(want, x), rtol=1e-6, atol=1e-6)
    assert spec.build().config == model.config  # what model_config.json rebuilds
