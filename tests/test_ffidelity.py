"""F-Fidelity: the stochastic removal strategy (`occlusion.ffidelity`), the fine-tune stage
(`finetune_ffidelity`) and the label-based scores FFid+ / FFid- (`evaluation.scoring`). Tiny shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ibo_jax import occlusion
from ibo_jax.evaluation import levels as lv
from ibo_jax.evaluation.predict import make_predict_fn
from ibo_jax.occlusion import ffidelity as ff

S = 16
SMALL = {"widths": (8, 8, 16), "layers": (1, 1, 1), "strides": (2, 2, 2)}


@pytest.fixture(scope="module")
def tiny_resnet():
    from flax import nnx

    from ibo_jax.models.resnet import resnet_small

    model = resnet_small(2, rngs=nnx.Rngs(3), **SMALL)
    model.eval()
    return model


def _keys(n, seed=0):
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))


def _patches(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, S, S, 3)).astype(np.float32)
    x[::2, 4:12, 4:12] = [0.85, 0.1, 0.15]  # a red "tumor" square on every other patch
    return x


def _morf_rows(images, seed=0, n_masks=4):
    """Plain MoRF rows: the progressive masks M1..Mn of a random heatmap per image."""
    rng = np.random.default_rng(seed)
    heat = rng.random((len(images), S, S)).astype(np.float32)
    levels, n_levels, _ = lv.importance_levels_info(heat, 5)
    masks = lv.progressive_masks(levels, n_masks, n_levels)  # [B, n, H, W]
    b, n = masks.shape[:2]
    return np.repeat(images, n, axis=0), masks.reshape(b * n, S, S)


@pytest.mark.parametrize("which", ["colour", "resnet"])
def test_alpha_1_one_sample_no_cap_is_plain_mean_fill_morf(which, colour_classifier, tiny_resnet):
    """alpha = 1, N = 1, no cap: the only sub-mask is the set itself, so F-Fidelity is plain MoRF
    deletion with the fill, re-predicted by the same model (the mean strategy's fill given per row)."""
    model = colour_classifier if which == "colour" else tiny_resnet
    images, remove = _morf_rows(_patches(3))
    keys = _keys(len(images))
    fill = np.asarray(jnp.mean(jnp.asarray(images), axis=(1, 2)))  # the mean strategy's own fill, per row
    got = occlusion.apply("ffidelity", images, remove, key=keys, model=model, fill=fill, n_samples=1, alpha=1.0,
                          beta=None, batch_size=4)
    p, logit, _ = make_predict_fn(model)(np.asarray(occlusion.apply("mean", images, remove)))
    np.testing.assert_allclose(got["p"], p, atol=1e-6, rtol=0)
    # the logit is log p - log(1 - p) of float32 log-probabilities: 1e-7 in log p is ~1e-4 in the
    # logit where p is near 1; equal to float32 precision
    np.testing.assert_allclose(got["logit"], logit, atol=2e-4, rtol=1e-5)
    # and with one fill for every row (the dataset mean of the fine-tune) the same as filling by hand
    one = (0.6, 0.4, 0.7)
    got1 = ff.ffidelity(images, remove, key=keys, model=model, fill=one, n_samples=1, alpha=1.0, beta=0)
    filled = np.where(remove[..., None], np.asarray(one, np.float32), images)
    np.testing.assert_allclose(got1["p"], make_predict_fn(model)(filled)[0], atol=1e-6, rtol=0)


def test_cap_holds_and_submasks_are_subsets():
    rng = np.random.default_rng(1)
    remove = rng.random((6, S, S)) < np.array([0.05, 0.3, 0.6, 0.9, 1.0, 0.0])[:, None, None]
    keys = _keys(6, seed=4)
    cap = int(np.floor(0.1 * S * S))
    assert ff.cap_pixels(0.1, S, S) == cap == 25 and ff.cap_pixels(None, S, S) is None and ff.cap_pixels(0, S, S) is None
    for alpha in (0.5, 0.9, 1.0):
        sm = ff.submasks(remove, keys, n_samples=20, alpha=alpha, beta=0.1)  # [U, N, H, W]
        assert sm.shape == (6, 20, S, S) and sm.dtype == bool
        counts = sm.sum(axis=(2, 3))
        assert counts.max() <= cap  # no sub-mask removes more than beta of the image
        assert not (sm & ~remove[:, None]).any()  # sub-masks lie inside the row's set
        assert counts[5].max() == 0
    # alpha = 1: a set larger than the cap gives exactly the cap, a random subset each time
    sm = ff.submasks(remove, keys, n_samples=20, alpha=1.0, beta=0.1)
    big = remove.sum(axis=(1, 2)) > cap
    assert big[1:5].all() and (sm.sum(axis=(2, 3))[big] == cap).all()
    assert len({m.tobytes() for m in sm[3]}) > 1
    # a set smaller than the cap is removed whole with alpha = 1, never capped
    assert remove[0].sum() <= cap and (sm[0] == remove[0]).all()
    # alpha: each pixel of the set removed with probability alpha (no cap)
    many = ff.submasks(remove[3:4], keys[3:4], n_samples=200, alpha=0.5, beta=None)
    share = many.sum() / (200 * remove[3].sum())
    assert abs(share - 0.5) < 0.02
    with pytest.raises(ValueError, match="alpha"):
        ff.submasks(remove, keys, alpha=0.0)
    with pytest.raises(ValueError, match="beta"):
        ff.submasks(remove, keys, beta=1.5)


def test_results_do_not_depend_on_batching(colour_classifier):
    images, remove = _morf_rows(_patches(3, seed=2), seed=2)
    keys = _keys(len(images), seed=7)
    kw = dict(model=colour_classifier, fill=(0.5, 0.5, 0.5), n_samples=5, alpha=0.5, beta=0.1)
    # the draws are the same bits whatever the batching (each row's own key) ...
    a = ff.submasks(remove, keys, n_samples=5, alpha=0.5, beta=0.1)
    perm = np.random.default_rng(0).permutation(len(images))
    b = ff.submasks(remove[perm], keys[perm], n_samples=5, alpha=0.5, beta=0.1)
    np.testing.assert_array_equal(a[perm], b)
    # ... and the predictions agree to XLA:CPU's float noise (a batch's shape can change the order
    # of a reduction: ~1e-6 here, where the colour classifier's weights of 17.5 amplify it)
    outs = [ff.ffidelity(images, remove, key=keys, batch_size=bs, **kw) for bs in (1, 3, 16)]
    for o in outs[1:]:
        np.testing.assert_allclose(o["p"], outs[0]["p"], atol=1e-5, rtol=0)
    o = ff.ffidelity(images[perm], remove[perm], key=keys[perm], batch_size=1, **kw)
    np.testing.assert_allclose(o["p"], outs[0]["p"][perm], atol=1e-12, rtol=0)  # same shape: identical


def test_mean_over_the_samples_is_the_mean_of_their_predictions(tiny_resnet):
    images, remove = _morf_rows(_patches(2, seed=3), seed=3, n_masks=2)
    keys = _keys(len(images), seed=9)
    fill, n = np.array([0.55, 0.45, 0.6], np.float32), 6
    got = ff.ffidelity(images, remove, key=keys, model=tiny_resnet, fill=fill, n_samples=n, alpha=0.5, beta=0.1,
                       batch_size=3)
    sm = ff.submasks(remove, keys, n_samples=n, alpha=0.5, beta=0.1)  # [U, N, H, W]
    filled = np.where(sm[..., None], fill, images[:, None]).reshape((-1, S, S, 3))
    p_each = make_predict_fn(tiny_resnet)(filled)[0].reshape(len(images), n)
    assert np.ptp(p_each, axis=1).max() > 0  # the samples really differ
    np.testing.assert_allclose(got["p"], p_each.mean(axis=1), atol=1e-6, rtol=0)
    np.testing.assert_allclose(got["logit"], np.log(got["p"] / (1 - got["p"])), rtol=1e-6, atol=1e-9)
    lp = ff.sample_log_probs(images, remove, key=keys, model=tiny_resnet, fill=fill, n_samples=n, alpha=0.5,
                             beta=0.1, batch_size=3)
    np.testing.assert_allclose(np.exp(lp), p_each, atol=1e-6, rtol=0)


def test_bad_options(colour_classifier):
    images, remove = _patches(2), np.zeros((2, S, S), bool)
    with pytest.raises(ValueError, match="ffidelity model: required"):
        occlusion.apply("ffidelity", images, remove, key=_keys(2), fill=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="ffidelity fill"):
        occlusion.apply("ffidelity", images, remove, key=_keys(2), model=colour_classifier, fill=(0.5, 2.0, 0.5))
    with pytest.raises(ValueError, match="this function is random"):
        occlusion.apply("ffidelity", images, remove, model=colour_classifier, fill=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="n_samples"):
        occlusion.apply("ffidelity", images, remove, key=_keys(2), model=colour_classifier, fill=(0.5,) * 3, n_samples=0)
    assert occlusion.predicted_by("ffidelity") == "stored"


def test_training_removal_is_exact_and_per_image():
    from ibo_jax.stages import finetune_ffidelity as stage

    x = np.full((4, S, S, 3), 0.2, np.float32)
    x[:, :, :, 1] = np.linspace(0.1, 0.3, S)[None, :, None]
    fill = (0.9, 0.8, 0.7)
    size = stage.removal_size(0.1, S, S)
    ids = np.array([[0, 10], [0, 11], [0, 12], [1, 10]])
    key = jax.random.key(5)
    out = stage.random_removal(x, ids, key, fill, size)
    filled = np.all(np.isclose(out, fill), axis=-1)
    assert size == 25 and (filled.sum(axis=(1, 2)) == size).all()
    assert (filled[0] != filled[3]).any() and (filled[0] != filled[1]).any()  # per image, per epoch
    perm = [2, 0, 3, 1]
    np.testing.assert_array_equal(stage.random_removal(x[perm], ids[perm], key, fill, size), out[perm])
    np.testing.assert_array_equal(out[~filled], x[~filled])


# ------------------------------------------------------------------ the fine-tune stage, end to end


def _config(tmp):
    from ibo_jax import pipeline

    c = pipeline.default_config(("data", "train_classifier"))
    c.image_size = S
    c.data.source, c.data.npz_path, c.data.n_examples = "npz", str(tmp / "patches.npz"), 0
    t = c.train_classifier
    t.arch, t.model_kwargs = "resnet_small", dict(SMALL)
    t.epochs, t.batch_size, t.lr, t.warmup_steps, t.eval_batch_size = 6, 8, 1e-2, 2, 32
    c.finetune_ffidelity = pipeline.STAGES["finetune_ffidelity"].load().default_config()
    f = c.finetune_ffidelity
    f.batch_size, f.eval_batch_size = 8, 32
    return c


def _registry():
    from ibo_jax import pipeline

    return {n: pipeline.STAGES[n] for n in ("data", "train_classifier", "finetune_ffidelity")}


@pytest.fixture(scope="module")
def finetuned_run(tmp_path_factory):
    """data + train_classifier + finetune_ffidelity through pipeline.run on 48 tiny patches."""
    import os

    from ibo_jax import pipeline
    from ibo_jax_testing import write_patches_npz

    os.environ["IBO_JAX_NO_PROGRESS"] = "1"
    tmp = tmp_path_factory.mktemp("ffid")
    write_patches_npz(tmp / "patches.npz", n=48, size=S, splits={"train": 32, "val": 8, "test": 8})
    config = _config(tmp)
    summary = pipeline.run(config, tmp / "w", registry=_registry())
    return tmp, config, summary


def test_finetune_stage_writes_both_accuracies_and_a_loadable_model(finetuned_run):
    from ibo_jax import io as ibo_io
    from ibo_jax import pipeline
    from ibo_jax.models import loaders
    from ibo_jax.train import classifier as tc

    tmp, config, summary = finetuned_run
    w = tmp / "w"
    ran = {r["stage"]: r for r in summary["stages"]}
    assert [r["stage"] for r in summary["stages"]] == ["data", "train_classifier", "finetune_ffidelity"]
    print(f"finetune_ffidelity stage: {ran['finetune_ffidelity']['seconds']:.1f} s")
    m = ff.read_metrics(w / "finetune_ffidelity")
    assert m["epochs"] == 1 and m["lr"] == 1e-4 and m["beta"] == 0.1 and m["pixels_removed_per_image"] == 25
    for split in ("val", "test", "val_removed"):
        acc = m[f"{split}_accuracy"]
        assert acc["original"] is not None and acc["finetuned"] is not None
        assert acc["difference_points"] == pytest.approx(100 * (acc["finetuned"] - acc["original"]))
    assert m["original"]["test"]["n"] == 8 and isinstance(m["test_accuracy"]["within_2_points"], bool)
    assert m["val_accuracy"]["original"] > 0.5  # the original learned: the comparison means something
    # the fill is the per-channel mean of the training patches in [0, 1]
    z = ibo_io.read_npz(tmp / "patches.npz")
    train = z["image"][np.asarray(z["split"]) == "train"].astype(np.float64) / 255.0
    np.testing.assert_allclose(m["fill"], train.mean(axis=(0, 1, 2)), atol=1e-6)
    # loadable like a trained classifier, same architecture; started from the trained weights
    model, fill = ff.load_finetuned(w / "finetune_ffidelity")
    assert fill == tuple(m["fill"])
    assert ibo_io.read_json(w / "finetune_ffidelity" / "model_config.json") == \
        ibo_io.read_json(w / "train_classifier" / "model_config.json")
    original = loaders.load_classifier(w / "train_classifier")
    fresh = loaders.fresh_classifier(w / "train_classifier", seed=123)
    from flax import nnx

    def dist(a, b):
        pa, pb = nnx.state(a, nnx.Param), nnx.state(b, nnx.Param)
        return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
                   for u, v in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)))

    assert 0 < dist(model, original) < 0.1 * dist(fresh, original)
    x = z["image"][np.asarray(z["split"]) == "test"]
    probs = tc.predict(model, x)
    assert m["finetuned"]["test"]["accuracy"] == tc.classification_metrics(z["label"][40:], probs)["accuracy"]
    # finished: a second run skips it
    again = pipeline.run(config, w, stages=["finetune_ffidelity"], registry=_registry())
    assert [r["status"] for r in again["stages"]] == ["skipped"]


def test_occlude_runs_ffidelity_with_the_finetuned_model_and_score_reports_ffid(finetuned_run, tmp_path,
                                                                               monkeypatch, stage_context):
    from ibo_jax import artifacts
    from ibo_jax.evaluation import scoring
    from ibo_jax.models import loaders
    from ibo_jax.stages import occlude
    from ibo_jax_testing import write_explained

    monkeypatch.setenv("IBO_JAX_NO_PROGRESS", "1")
    tmp, _, _ = finetuned_run
    rng = np.random.default_rng(0)
    n = 3
    images = (_patches(n, seed=5) * 255).astype(np.uint8)
    heat = rng.random((n, 2, S, S)).astype(np.float32)
    write_explained(tmp_path / "explain", image=images, tumor_mask=np.zeros((n, S, S), bool), heat=heat,
                    methods=["gradcam", "eigencam"], label=np.array([1, 0, 1]))
    cfg = occlude.default_config()
    cfg.strategies, cfg.curves, cfg.fixed_strategies = ("mean", "ffidelity"), ("fixed", "fixed_lerf"), ()
    cfg.residual, cfg.grid_patches = False, 0
    cfg.strategy_options = ml_collections.ConfigDict({"ffidelity": {"n_samples": 4, "alpha": 0.5, "beta": 0.1}})
    config = ml_collections.ConfigDict({"tumor_class": 1})
    ctx = stage_context("occlude", tmp_path, cfg, config, key=jax.random.key(0),
                        inputs={"explain": tmp_path / "explain"})
    with pytest.raises(ValueError, match="no 'finetune_ffidelity' section"):
        occlude.run(ctx)
    ctx = stage_context("occlude", tmp_path, cfg, config, key=jax.random.key(0),
                        inputs={"explain": tmp_path / "explain", "finetune_ffidelity": tmp / "w" / "finetune_ffidelity"})
    occlude.run(ctx)
    d = tmp_path / "occlude"
    assert artifacts.read_layout(d)["predicted_by"]["ffidelity"] == "stored"
    blocks = list(artifacts.occluded_blocks(d))
    mine = [b for b in blocks if b["strategy"] == "ffidelity"]
    assert {b["curve"] for b in mine} == {"fixed", "fixed_lerf"} and all("image" not in b for b in mine)
    ev, hm = artifacts.read_explained(tmp_path / "explain")
    predict = make_predict_fn(loaders.load_classifier(tmp / "w" / "train_classifier"))
    res = scoring.score_occluded(artifacts.occluded_blocks(d), ev["image"], predict)
    study, summary = scoring.summarize_run(ev, artifacts.read_geometry(d), res, predict, methods=hm["methods"],
                                           controls=hm["controls"], fractions=artifacts.read_layout(d)["fractions"],
                                           n_boot=20)
    assert {"mean", "ffidelity"} <= set(summary["strategies"])
    assert "auc" in summary["strategies"]["ffidelity"]["fixed"]
    f = summary["ffidelity"]
    assert f["omitted"] == {} and set(f["ffid_plus"]["by_method"]) == {"gradcam", "eigencam"}
    per = scoring.ffidelity_per_patch(study, "fixed")
    assert f["ffid_plus"]["by_method"]["gradcam"]["mean"] == pytest.approx(np.nanmean(per[:, 0]))
    from ibo_jax.reporting import report  # the strategy is listed in the report like any other

    assert "ffidelity" in report.render_markdown(summary)


def _table(p_fixed, p_lerf, p0, label):
    """A ScoreTable by hand: N patches, M methods, the fixed-fraction curves with 2 fractions."""
    from ibo_jax.evaluation.scores import ScoreTable

    n, m, q = p_fixed.shape
    study = ScoreTable(image_id=np.arange(n), label=np.asarray(label), methods=["gradcam", "eigencam", "random"][:m],
                       controls=["random"], areas={"morf": np.full((n, m, 4), 0.1)}, valid=np.ones((n, m), bool),
                       gt_iou=np.full((n, m), 0.5), p0=np.asarray(p0, float), logit0=np.zeros(n),
                       fractions={"fixed": [0.1, 0.5], "fixed_lerf": [0.1, 0.5]})
    pos, meth, mask = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(m), np.arange(1, q + 1), indexing="ij"))
    for curve, p in (("fixed", p_fixed), ("fixed_lerf", p_lerf)):
        if p is not None:
            study.add("ffidelity", curve, {"pos": pos, "method": meth, "mask": mask, "draw": np.zeros_like(pos),
                                           "p": p.ravel(), "logit": np.zeros(p.size)})
    return study


def test_ffid_plus_minus_on_a_hand_built_table():
    from ibo_jax.evaluation import scoring

    label = [1, 1, 0]
    p0 = [0.9, 0.4, 0.2]  # correct, wrong, correct
    # [patch, method, q]
    p_fixed = np.array([[[0.3, 0.2], [0.8, 0.4], [0.9, 0.9]],
                        [[0.6, 0.3], [0.3, 0.2], [0.6, 0.6]],
                        [[0.7, 0.8], [0.1, 0.6], [0.3, 0.3]]])
    p_lerf = np.array([[[0.9, 0.8], [0.7, 0.2], [0.9, 0.4]],
                       [[0.2, 0.3], [0.7, 0.3], [0.2, 0.2]],
                       [[0.3, 0.4], [0.2, 0.7], [0.6, 0.6]]])
    study = _table(p_fixed, p_lerf, p0, label)
    s = scoring.ffidelity_scores(study, n_boot=50)
    # by hand: correct0 = [1, 0, 1]; correct after removal per (patch, method, q)
    # FFid+ gradcam: patch0 (1-0 + 1-0)/2 = 1; patch1 (0-1 + 0-0)/2 = -0.5; patch2 (1-0 + 1-0)/2 = 1
    #        eigencam: patch0 (1-1 + 1-0)/2 = .5; patch1 (0-0 + 0-0)/2 = 0; patch2 (1-1 + 1-0)/2 = .5
    plus = s["ffid_plus"]["by_method"]
    assert plus["gradcam"]["mean"] == pytest.approx((1 - 0.5 + 1) / 3)
    assert plus["eigencam"]["mean"] == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert plus["random"]["mean"] == pytest.approx((0 - 1 + 0) / 3)  # a control: scored, not ranked
    # FFid- gradcam: patch0 (1-1 + 1-1)/2 = 0; patch1 (0-0 + 0-0) = 0; patch2 (1-1 + 1-1) = 0
    #        eigencam: patch0 (1-1 + 1-0)/2 = .5; patch1 (0-1 + 0-0)/2 = -.5; patch2 (1-1 + 1-0)/2 = .5
    minus = s["ffid_minus"]["by_method"]
    assert minus["gradcam"]["mean"] == pytest.approx(0.0)
    assert minus["eigencam"]["mean"] == pytest.approx((0.5 - 0.5 + 0.5) / 3)
    assert s["ffid_minus"]["ranking"] == {"gradcam": 1, "eigencam": 2}  # lower FFid- is better
    assert plus["gradcam"]["n"] == 3 and s["ffid_plus"]["fractions"] == [0.1, 0.5]
    assert s["ffid_plus"]["ranking"] == {"gradcam": 1, "eigencam": 2}  # higher FFid+ is better
    assert s["ffid_plus"]["higher_is_better"] and not s["ffid_minus"]["higher_is_better"]
    # omitted with the reason when a curve or the strategy did not run
    only_plus = scoring.ffidelity_scores(_table(p_fixed, None, p0, label), n_boot=10)
    assert "ffid_minus" not in only_plus and "fixed_lerf" in only_plus["omitted"]["ffid_minus"]
    study.dense.clear()
    assert "ran no 'ffidelity'" in scoring.ffidelity_scores(study)["omitted"]


def test_finetune_killed_mid_way_resumes_to_the_same_model(finetuned_run, tmp_path, monkeypatch):
    """A fine-tune killed after 2 of its 4 steps resumes from its checkpoint (same folder, same
    fingerprint) and ends with the uninterrupted run's model."""
    import shutil

    from ibo_jax import io as ibo_io
    from ibo_jax import pipeline
    from ibo_jax.train import classifier as tc

    tmp, config, _ = finetuned_run
    w = tmp_path / "w"
    for stage in ("data", "train_classifier"):  # finished inputs, same config: skipped
        shutil.copytree(tmp / "w" / stage, w / stage, symlinks=True)
    train = tc.train

    def killed(*args, **kwargs):
        train(*args, **kwargs, max_steps=2)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(tc, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(config, w, registry=_registry())
    monkeypatch.setattr(tc, "train", train)
    summary = pipeline.run(config, w, registry=_registry())
    assert [r["status"] for r in summary["stages"]] == ["skipped", "skipped", "resumed"]
    assert summary["stages"][-1]["summary"]["steps"] == 4
    z = ibo_io.read_npz(tmp / "patches.npz")
    a, _ = ff.load_finetuned(tmp / "w" / "finetune_ffidelity")
    b, _ = ff.load_finetuned(w / "finetune_ffidelity")
    np.testing.assert_allclose(tc.predict(b, z["image"]), tc.predict(a, z["image"]), atol=1e-5)
