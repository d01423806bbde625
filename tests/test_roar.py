"""ROAR / KAR (evaluation.roar, the roar stage): exact top-t masks, the fill inside (ROAR) or outside
(KAR) the masks and nothing else changed, fraction 0 reproducing the baseline, resume per chunk,
the scores against the random map, the ranking against a known answer, the leakage verdict."""

from __future__ import annotations

import csv
import os

import jax
import numpy as np
import pytest

from ibo_jax.evaluation import roar as R

S = 64
SMALL = {"widths": (8, 8, 16), "layers": (1, 1, 1), "strides": (2, 2, 2)}


# ------------------------------------------------------------------------------------ the library


def test_ties_are_broken_by_a_random_order_per_patch_not_by_raster_order():
    flat = np.zeros((3, 8, 8), np.float32)  # degenerate maps: every pixel tied
    flat[2, 0, 0] = 1.0  # one clear maximum: always chosen first
    m = R.top_fraction_mask(flat, 0.25, ids=np.array([5, 6, 7]))
    assert m.sum(axis=(1, 2)).tolist() == [16, 16, 16] and m[2, 0, 0]
    assert not m[0, :2].all()  # not the first two rows
    assert not np.array_equal(m[0], m[1])  # each patch its own order
    np.testing.assert_array_equal(m, R.top_fraction_mask(flat, 0.25, ids=np.array([5, 6, 7])))  # deterministic
    again = R.top_fraction_mask(flat[:1] + 0.5, 0.25, ids=np.array([5]))  # another method, same patch: same order
    np.testing.assert_array_equal(again[0], m[0])


def test_top_fraction_mask_picks_exactly_the_highest_pixels():
    maps = np.random.default_rng(0).random((5, 12, 10)).astype(np.float32)
    for t in (0.0, 0.1, 0.25, 0.5, 0.77, 1.0):
        m = R.top_fraction_mask(maps, t)
        k = round(t * 120)
        assert m.dtype == bool and m.shape == maps.shape
        assert (m.sum(axis=(1, 2)) == k).all()
        for i in range(len(maps)):
            if 0 < k < 120:
                assert maps[i][m[i]].min() > maps[i][~m[i]].max()
    # ties: raster order, the same every call
    flat = np.zeros((2, 4, 4), np.float32)
    flat[1, 3, 3] = 1.0
    m = R.top_fraction_mask(flat, 0.25)
    assert m[0].ravel().tolist() == [True] * 4 + [False] * 12
    assert m[1, 3, 3] and m[1].ravel()[:3].all() and m[1].sum() == 4
    np.testing.assert_array_equal(m, R.top_fraction_mask(flat, 0.25))
    with pytest.raises(ValueError, match="fraction in"):
        R.top_fraction_mask(flat, 1.5)


def test_apply_removal_fills_inside_for_roar_and_outside_for_kar_and_nothing_else():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    masks = rng.random((3, 8, 8)) < 0.3
    fill = (0.25, 0.5, 0.75)
    for keep, where in ((False, masks), (True, ~masks)):
        x = R.apply_removal(images, masks, fill, keep=keep)
        assert x.dtype == np.float32 and x.shape == images.shape
        np.testing.assert_array_equal(x[where], np.broadcast_to(np.float32(fill), (where.sum(), 3)))
        np.testing.assert_array_equal(x[~where], images[~where].astype(np.float32) / 255.0)
    with pytest.raises(ValueError, match="fill"):
        R.apply_removal(images, masks, (2.0, 0.0, 0.0))


def test_random_maps_are_smooth_keyed_by_id_and_in_range():
    key = jax.random.key(3)
    a = R.random_maps(key, 3, 16, 16, ids=[7, 8, 9])
    b = R.random_maps(key, 2, 16, 16, ids=[8, 9])
    assert a.shape == (3, 16, 16) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_allclose(a[1:], b)  # a patch's map does not depend on which others are loaded
    assert np.abs(np.diff(a, axis=-1)).mean() < 0.2  # smooth: neighbours close (pixel noise: ~0.33)
    m = R.mask_only_images(a > 0.5)
    assert m.dtype == np.uint8 and m.shape == (3, 16, 16, 3) and set(np.unique(m)) <= {0, 255}
    np.testing.assert_array_equal(m[..., 0] == 255, a > 0.5)


def _rows():
    """Hand-built: at t = 0.5, 'a' removes more than 'b' (ROAR) and keeps more (KAR); random in between."""
    rows = [{"curve": "baseline", "method": "none", "fraction": 0.0, "seed": s, "test_accuracy": 0.9,
             "mean_p_tumor": 0.8} for s in (0, 1)]
    acc = {"roar": {"a": 0.55, "b": 0.70, "random": 0.80}, "kar": {"a": 0.85, "b": 0.75, "random": 0.65}}
    for curve, by in acc.items():
        for m, v in by.items():
            for s in (0, 1):
                rows.append({"curve": curve, "method": m, "fraction": 0.0, "seed": s,
                             "test_accuracy": 0.9 if curve == "roar" else 0.5, "mean_p_tumor": 0.5})
                rows.append({"curve": curve, "method": m, "fraction": 0.5, "seed": s,
                             "test_accuracy": v + 0.01 * s, "mean_p_tumor": v - 0.1})
    rows += [{"curve": "leakage", "method": "a", "fraction": 0.5, "seed": 0, "test_accuracy": 0.95},
             {"curve": "leakage", "method": "b", "fraction": 0.5, "seed": 0, "test_accuracy": 0.55},
             {"curve": "leakage", "method": "random", "fraction": 0.5, "seed": 0, "test_accuracy": 0.5}]
    return rows


def test_scores_drop_against_random_ranking_tau_and_leakage_on_hand_built_rows():
    out = R.scores(_rows(), {"a": 2, "b": 1}, n_test=200, chance=0.5)
    roar, kar = out["curves"]["roar"], out["curves"]["kar"]
    t = roar["methods"]["a"]["per_fraction"]["0.5"]
    assert t["drop_vs_random"] == pytest.approx(0.25) and t["accuracy_drop"] == pytest.approx(0.345)
    assert t["p_tumor_drop_vs_random"] == pytest.approx(0.25)
    assert roar["methods"]["a"]["score"] == pytest.approx(0.25)  # t = 0 left out of the mean
    assert roar["methods"]["b"]["score"] == pytest.approx(0.10)
    assert kar["methods"]["a"]["score"] == pytest.approx(0.20)  # KAR: -drop_vs_random, higher is better
    assert kar["methods"]["b"]["per_fraction"]["0.5"]["drop_vs_random"] == pytest.approx(-0.10)
    assert roar["methods"]["a"]["score_sd_over_seeds"] == pytest.approx(0.0)
    assert roar["ranking"] == {"a": 1, "b": 2} and kar["ranking"] == {"a": 1, "b": 2}
    # the known answer puts b first: tau -1, the one pair listed as a disagreement (not tied)
    ka = roar["known_answer"]
    assert ka["kendall_tau"] == -1.0 and ka["n_disagreements"] == 1
    assert any(n.startswith("ROAR orders 1 of 1 method pairs otherwise") for n in out["notes"])
    assert ka["disagreements"][0] == {"better": "b", "worse": "a", "score_better": pytest.approx(0.10),
                                      "score_worse": pytest.approx(0.25), "tied": False}
    agree = R.scores(_rows(), {"a": 1, "b": 2}, n_test=200, chance=0.5)["curves"]["roar"]["known_answer"]
    assert agree["kendall_tau"] == 1.0 and agree["disagreements"] == []
    # leakage: a's masks alone predict the label -> confounded; b (0.55 < 0.5 + 0.1) and random are not
    leak = out["leakage"]["methods"]
    assert leak["a"]["verdict"] == "confounded" and leak["a"]["interval"][0] > 0.5
    assert leak["b"]["verdict"] == "not confounded" and leak["random"]["verdict"] == "not confounded"
    assert roar["confounded"] == ["a"] and any("ROAR's verdict for a is confounded" in n for n in out["notes"])
    # above the margin but on too few test patches to exclude chance: not confounded
    assert R.leakage_verdict(0.7, n_test=10, chance=0.5)["verdict"] == "not confounded"
    assert R.leakage_verdict(0.7, n_test=1000, chance=0.5)["verdict"] == "confounded"


# ------------------------------------------------------------------------------------- the stage


def _config():
    from ibo_jax import pipeline

    c = pipeline.default_config(("data", "train_classifier"))
    c.image_size = S
    c.data.n_patches, c.data.n_slides, c.data.n_examples = 96, 6, 0
    t = c.train_classifier
    t.arch, t.model_kwargs = "resnet_small", dict(SMALL)
    t.epochs, t.batch_size, t.warmup_steps, t.eval_batch_size, t.checkpoint_every = 1, 16, 2, 64, 1000
    c.roar = pipeline.STAGES["roar"].load().default_config()
    r = c.roar
    r.methods, r.fractions, r.modes, r.seeds = ("gradcam", "eigencam"), (0.0, 0.5), ("roar", "kar"), (0,)
    r.map_batch_size, r.map_chunk = 32, 32
    return c


KNOWN = {"gradcam": 1, "gradcam++": 2, "eigencam": 3}


@pytest.fixture(scope="module")
def roar_run(tmp_path_factory):
    """data + train_classifier (pipeline.run), a hand-written trust summary, the roar stage with the
    training images of every retraining captured."""
    from ibo_jax import io as ibo_io
    from ibo_jax import pipeline
    from ibo_jax.stages import roar as stage
    from ibo_jax_testing import stage_context

    os.environ["IBO_JAX_NO_PROGRESS"] = "1"
    w = tmp_path_factory.mktemp("roar") / "w"
    config = _config()
    registry = {n: pipeline.STAGES[n] for n in ("data", "train_classifier")}
    pipeline.run(config, w, registry=registry)
    ibo_io.write_json(w / "trust" / "summary.json", {"counterfactual": {"reference": "counterfactual", "curves": {
        "morf": {"reference_ranking": KNOWN, "strategies": {"mean": {"ranking": {"gradcam": 2, "gradcam++": 1,
                                                                                 "eigencam": 3}}}}}}})
    captured = {}
    real = stage.retrain

    def spy(ctx, spec, tcfg, images, data, seed, workdir):
        captured[workdir.name] = {k: np.array(v) for k, v in images.items()}
        return real(ctx, spec, tcfg, images, data, seed, workdir)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stage, "retrain", spy)
        ctx = stage_context("roar", w, config=config, inputs=("data", "train_classifier", "trust"))
        out = stage.run(ctx)
    return w, config, out, captured


def test_stage_rows_fill_baseline_and_summary(roar_run):
    from ibo_jax import artifacts
    from ibo_jax.data.patches import read_split
    from ibo_jax.stages import roar as stage
    from ibo_jax_testing import stage_context

    w, config, out, captured = roar_run
    summary = artifacts.read_summary(w / "roar")
    rows = {(r["curve"], r["method"], r["fraction"]): r for r in summary["rows"]}
    assert len(summary["rows"]) == 1 + 2 * 3 * 2 + 3  # baseline, {roar, kar} x {gradcam, eigencam, random} x 2 t, leakage
    assert set(captured) == {stage.run_name(c, m, t, 0).removesuffix(".json") for c, m, t in rows}
    # fraction 0: ROAR leaves the patches as they are, so the same seed gives the baseline's accuracy (the
    # same initialization, batches and images: identical on this CPU; one test patch of float noise allowed)
    n_test = summary["n_patches"]["test"]
    base = rows[("baseline", "none", 0.0)]
    for m in ("gradcam", "eigencam", "random"):
        assert abs(rows[("roar", m, 0.0)]["test_accuracy"] - base["test_accuracy"]) <= 1.0 / n_test
    # the training images carry the fill inside the top-t masks (ROAR), outside them (KAR), and the
    # patch's own pixels everywhere else
    train = read_split(w / "data", "train")
    fill = np.float32(summary["fill"])
    np.testing.assert_allclose(fill, train["image"].reshape(-1, 3).mean(0) / 255.0, rtol=1e-6)
    ctx = stage_context("roar", w, config=config, inputs=("data", "train_classifier", "trust"))
    data = {sp: {"label": np.zeros(summary["n_patches"][sp])} for sp in stage.SPLITS}
    masks = R.top_fraction_mask(stage.load_maps(ctx, data, "gradcam")["train"], 0.5, ids=train["index"])
    assert masks.sum() == len(masks) * round(0.5 * S * S)
    own = train["image"].astype(np.float32) / 255.0
    for curve, where in (("roar", masks), ("kar", ~masks)):
        x = captured[stage.run_name(curve, "gradcam", 0.5, 0).removesuffix(".json")]["train"]
        np.testing.assert_array_equal(x[where], np.broadcast_to(fill, (where.sum(), 3)))
        np.testing.assert_array_equal(x[~where], own[~where])
    np.testing.assert_array_equal(captured[stage.run_name("roar", "gradcam", 0.0, 0).removesuffix(".json")]["train"], own)
    leak = captured[stage.run_name("leakage", "gradcam", 0.5, 0).removesuffix(".json")]["train"]
    np.testing.assert_array_equal(leak[..., 1] == 255, masks)  # the mask alone, no pixel of the patch
    # summary: scores against the known answer, leakage, cost; the CSV
    sc = summary["scores"]
    assert set(sc["curves"]) == {"roar", "kar"}
    for curve in ("roar", "kar"):
        ka = sc["curves"][curve]["known_answer"]
        assert ka["methods"] == ["gradcam", "eigencam"] and ka["kendall_tau"] in (-1.0, 1.0)
        assert ka["n_disagreements"] == (ka["kendall_tau"] == -1.0)
    assert set(sc["leakage"]["methods"]) == {"gradcam", "eigencam", "random"} and summary["leakage"] == sc["leakage"]
    assert sc["leakage"]["chance"] == max(np.mean(read_split(w / "data", "test")["label"] == v) for v in (0, 1))
    assert summary["known_answer"]["source"].startswith("trust/summary.json counterfactual.curves.morf")
    beside = summary["beside"]  # the strategies' tau on the same two methods, beside ROAR's and KAR's
    assert beside["methods"] == ["gradcam", "eigencam"] and set(beside["kendall_tau"]) == {"mean", "roar", "kar"}
    assert beside["kendall_tau"]["mean"] == 1.0  # mean ranks gradcam 2, eigencam 3: the known order
    cost = summary["cost"]
    assert cost["seconds_maps"] > 0
    assert cost["n_maps"] == 2 * sum(summary["n_patches"].values())
    assert cost["n_retrainings"] == 16 and cost["seconds_retraining"] > 0 and out["n_retrainings_this_run"] == 16
    with open(w / "roar" / "roar.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(stage.CSV_COLUMNS) and len(table) == 16
    assert not (w / "roar" / "retrain").exists()  # the retraining folders are deleted


def test_stage_resumes_only_the_missing_chunk(roar_run):
    from ibo_jax import artifacts
    from ibo_jax.stages import roar as stage
    from ibo_jax_testing import stage_context

    w, config, _, _ = roar_run
    before = artifacts.read_summary(w / "roar")["rows"]
    gone = stage.run_name("kar", "gradcam", 0.5, 0)
    (w / "roar" / "chunks" / gone).unlink()
    calls, maps = [], []
    real, real_maps = stage.retrain, stage._compute_maps

    def count(ctx, spec, tcfg, images, data, seed, workdir):
        calls.append(workdir.name)
        return real(ctx, spec, tcfg, images, data, seed, workdir)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stage, "retrain", count)
        mp.setattr(stage, "_compute_maps", lambda *a: maps.append(1) or real_maps(*a))
        out = stage.run(stage_context("roar", w, config=config, inputs=("data", "train_classifier", "trust")))
    assert calls == [gone.removesuffix(".json")] and maps == [] and out["n_retrainings_this_run"] == 1
    after = artifacts.read_summary(w / "roar")["rows"]
    for a, b in zip(before, after, strict=True):  # the recomputed run gives the same result (deterministic)
        assert {k: v for k, v in a.items() if k != "seconds"} == pytest.approx({k: v for k, v in b.items() if k != "seconds"})


def test_benchmark_roar_config_runs_the_first_cell_and_roar():
    from ibo_jax import pipeline
    from ibo_jax_testing import ROOT

    c = pipeline.config_from_file(ROOT / "configs" / "benchmark.py", "roar")
    grid_config = pipeline.config_from_file(ROOT / "configs" / "benchmark.py")
    assert "grid" not in c
    # the grid cell's own sections (so a copied finished cell's stages are reused), then roar and report
    assert [s for s in pipeline.STAGES if s in c] == ["data", "train_classifier", "finetune_ffidelity", "train_ddpm",
                                                      "explain", "occlude", "score", "trust", "roar", "report"]
    assert c.data.cue == "local" and c.train_classifier.arch == "resnet_small" and c.train_classifier.seed == 0
    assert c.train_classifier.epochs == grid_config.train_classifier.epochs
    assert tuple(c.occlude.strategies) == tuple(grid_config.occlude.strategies) and "counterfactual" in c.occlude.strategies
    assert tuple(c.roar.modes) == ("roar", "kar") and tuple(c.roar.fractions) == (0.1, 0.3, 0.5) and c.roar.leakage
