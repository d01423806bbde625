"""Score summaries (ScoreTable) on synthetic score arrays, the tidy CSV, and the report."""

import csv

import numpy as np
import pytest

from ibo_jax import io as ibo_io
from ibo_jax.evaluation.scores import ScoreTable
from ibo_jax.reporting import report

M = ["gradcam", "gradcam++", "xgradcam", "ablationcam", "fullgrad", "scorecam", "eigencam", "random", "oracle"]
QUALITY = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.05, 1.0])  # GT order = list order


def make_study(n=10, n_masks=4, seed=0, strategies=(("ibo", 0.0), ("blackening", 0.6)), drop=None):
    rng = np.random.default_rng(seed)
    m = len(M)
    areas = np.broadcast_to(np.linspace(0.1, 0.4, n_masks), (n, m, n_masks)).copy()
    valid = np.ones((n, m), bool)
    valid[0, 1] = False  # one excluded heatmap
    gt_iou = np.clip(QUALITY[None] * 0.6 + 0.01 * rng.normal(size=(n, m)), 0, 1)
    p0 = rng.uniform(0.9, 0.99, n)
    st = ScoreTable(image_id=np.arange(100, 100 + n), label=np.ones(n, np.int32), methods=M,
               controls=["random", "oracle"], areas={"morf": areas}, valid=valid,
               gt_iou=np.where(valid, gt_iou, np.nan), p0=p0, logit0=np.log(p0 / (1 - p0)),
               fractions={"fixed": [0.1, 0.2, 0.3, 0.4][:n_masks]})
    for strategy, noise in strategies:
        for curve in ("morf", "fixed"):
            pos, meth, mask = (g.ravel() for g in np.meshgrid(np.arange(n), np.arange(m), np.arange(1, n_masks + 1), indexing="ij"))
            p = p0[pos] * np.exp(-3 * QUALITY[meth] * mask)  # better methods fall faster
            p = np.clip(p + noise * rng.uniform(size=p.size), 0, 1)
            keep = np.ones(p.size, bool) if drop is None else ~((np.array(M)[meth] == drop) & (pos == 1))
            rows = {"pos": pos[keep], "method": np.array(M)[meth][keep], "mask": mask[keep],
                    "draw": np.zeros(keep.sum(), np.int64), "p": p[keep],
                    "logit": np.log(np.clip(p, 1e-9, 1) / np.clip(1 - p, 1e-9, 1))[keep],
                    "ssim": (1 - 0.1 * mask * (1 + noise))[keep], "psnr": (30.0 - mask)[keep],
                    "feat": rng.normal(size=(int(keep.sum()), 4)) + noise * mask[keep, None]}
            st.add(strategy, curve, rows)
    return st


def test_summary_rankings_agreement_and_controls():
    st = make_study()
    s = st.summarize(n_boot=100, seed=0)
    assert s["methods"] == M[:7] and s["controls"] == ["random", "oracle"]
    assert s["gt"]["ranking"] == {m: i + 1 for i, m in enumerate(M[:7])}
    ibo = s["strategies"]["ibo"]["morf"]
    assert ibo["ranking"] == s["gt"]["ranking"]  # noise-free: the GT order exactly
    assert ibo["agreement"]["mard"] == 0 and ibo["agreement"]["exact_match"] == 1
    assert "random" not in ibo["ranking"] and "oracle" in ibo["auc"]
    assert ibo["auc"]["random"]["mean"] > ibo["auc"]["gradcam"]["mean"] > ibo["auc"]["oracle"]["mean"]
    assert ibo["auc"]["gradcam++"]["n"] == 9  # the excluded heatmap
    assert s["strategies"]["blackening"]["morf"]["agreement"]["mard"] > 0
    test = s["paired_mard_tests"]["ibo<blackening"]
    assert test["mard_diff"] < 0 and test["p_value"] < 0.5
    assert len(ibo["realism"]["ssim"]) == 4 and ibo["realism"]["ssim"][0]["mean"] == pytest.approx(0.9)
    assert ibo["area"]["gradcam"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert s["strategies"]["ibo"]["fixed"]["mean_curve"]["gradcam"]["x"] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    kid = st.kid(np.random.default_rng(0).normal(size=(10, 4)))
    assert kid["blackening"][-1] > kid["ibo"][-1]


def test_missing_method_counted_and_bad_input():
    st = make_study(strategies=(("ibo", 0.0),), drop="xgradcam")
    s = st.summarize(n_boot=20)
    assert s["strategies"]["ibo"]["morf"]["missing"] == 1
    assert s["strategies"]["ibo"]["morf"]["auc"]["xgradcam"]["n"] == 9
    with pytest.raises(ValueError, match=r"p_tumor of ibo/morf.*\[0, 1\]"):
        st.add("ibo", "morf", {"pos": [0], "method": ["gradcam"], "mask": [1], "draw": [0], "p": [1.5], "logit": [0.0]})
    with pytest.raises(ValueError, match="unknown methods"):
        st.add("ibo", "morf", {"pos": [0], "method": ["nope"], "mask": [1], "draw": [0], "p": [0.5], "logit": [0.0]})


def test_tidy_csv(tmp_path):
    st = make_study(n=3, strategies=(("mean", 0.1),))
    st.write_csv(tmp_path / "scores.csv")
    with open(tmp_path / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(M) * 2 * 5  # images x methods x curves x (original + 4 masks)
    for col in ("image_id", "method", "strategy", "mask", "fraction", "p_tumor", "logit", "area"):
        assert col in rows[0]
    orig = [r for r in rows if r["mask"] == "0"]
    assert all(r["fraction"] == "0" and r["ssim"] == "" for r in orig)
    r = next(r for r in rows if r["curve"] == "morf" and r["mask"] == "4" and r["method"] == "gradcam")
    assert float(r["fraction"]) == 1 and float(r["area"]) == pytest.approx(0.4) and r["image_id"] == "100"


def test_report_from_what_it_is_given(tmp_path):
    st = make_study()
    s = st.summarize(n_boot=50)
    s.update(kid=st.kid(np.zeros((10, 4)) + 0.1), n_images=10, misclassified=1, lpips_available=False)
    (tmp_path / "occlude").mkdir()
    (tmp_path / "occlude" / "grid.png").write_bytes(b"\x89PNG fake")
    rng = np.random.default_rng(0)
    ev = {"image": rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8), "tumor_mask": rng.uniform(size=(2, 16, 16)) > 0.5}
    hm = {"methods": np.array(M[:3]), "levels": rng.integers(1, 6, (2, 3, 16, 16)).astype(np.int8)}
    out = report.write_report(tmp_path / "report", summary=s, classifier_metrics={"test_accuracy": 0.97, "note": "demo"},
                              explain=(ev, hm), upstream_figures=[(tmp_path / "occlude" / "grid.png", "grid"),
                                                                  (tmp_path / "nowhere.png", "missing")],
                              ground_truth=report.ground_truth_kind(tmp_path / "data" / "dataset.json"),
                              config={"occlude": {"ibo": {"t_T": 20, "jump_length": 5}}})
    text = (tmp_path / "report" / "report.md").read_text()
    for png in ("deletion_curves.png", "realism.png", "rank_agreement.png", "levels.png", "occlude_grid.png"):
        assert (tmp_path / "report" / png).exists() and f"]({png})" in text
    assert (tmp_path / "report" / "rank_agreement.png").read_bytes()[:4] == b"\x89PNG"
    assert "**ibo**" in text and "LPIPS: **unavailable**" in text and "t_T | 20" in text
    assert "test_accuracy | 0.9700" in text and "10 tumor patches" in text
    assert out["figures"] >= 6 and "nowhere" not in text
    assert "ground-truth masks | tumor masks of the patch dataset" in text  # no dataset.json
    ibo_io.write_json(tmp_path / "data" / "dataset.json", {"source": {"name": "pcam", "mask": "center"}})
    assert "centre 32x32 px label region" in report.ground_truth_kind(tmp_path / "data" / "dataset.json")


def test_report_without_a_gt_ranking_gives_no_verdict():
    """Only one method with a valid heatmap (an untrained model's constant maps, say): the others
    are 'unranked', not 'control', and a MARD of 0 over one method is no verdict."""
    st = make_study(strategies=(("ibo", 0.0), ("blackening", 0.6)))
    st.valid[:, 1:] = False
    st.gt_iou[:, 1:] = np.nan
    s = st.summarize(n_boot=20)
    assert list(s["gt"]["ranking"]) == [M[0]]
    text = report.render_markdown(s)
    assert "No verdict in this run:** only 1 method could be ranked" in text and "Plausibility verdict" not in text
    assert f"| {M[1]} | n/a | 0 | unranked (no valid patch) |" in text and "| random |" in text
    ext = {"path": "maps.npz", "methods": ["mymap"], "resized": {"from": [16, 16], "to": [64, 64], "method": "bilinear"}}
    text = report.render_markdown(s, external=ext)
    assert "| maps computed elsewhere | mymap from maps.npz, resized bilinear from 16x16 to 64x64; no randomization" in text


def _tiny_classifier():
    from flax import nnx

    class Tiny(nnx.Module):
        def __init__(self):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0))
            self.lin = nnx.Linear(4, 2, rngs=nnx.Rngs(1))

        def features(self, x, *, normalized=False):
            return nnx.relu(self.conv(x))

        def head(self, a):
            return self.lin(a.mean(axis=(1, 2)))

        def __call__(self, x):
            return self.head(self.features(x))

    return Tiny()


def test_scoring_library_end_to_end_and_resume(tmp_path):
    """Re-predict blocks of occluded images with any predict_fn, resume from finished chunks, then
    the study, the tidy table and the report."""
    from ibo_jax.evaluation import geometry, progressive_masks, scoring
    from ibo_jax.evaluation.predict import make_predict_fn
    from ibo_jax.io import ChunkDir

    n, h, methods = 3, 16, ["gradcam", "eigencam", "random"]
    r = np.random.default_rng(0)
    images = r.integers(0, 255, (n, h, h, 3), dtype=np.uint8)
    levels = r.integers(1, 6, (n, len(methods), h, h)).astype(np.int8)
    levels[2, 1] = 1  # constant heatmap -> excluded
    valid = np.ones((n, len(methods)), bool)
    valid[2, 1] = False
    ev = {"index": np.arange(n) + 7, "image": images, "label": np.ones(n, np.int32),
          "tumor_mask": r.uniform(size=(n, h, h)) > 0.5}
    geo = geometry.compute(None, levels, None, valid, ev["tumor_mask"], n_masks=4)
    masks = progressive_masks(levels.reshape(-1, h, h), n=4).reshape(n, len(methods), 4, h, h)

    def blocks():
        for strategy in ("blackening", "mean"):
            for i in range(n):
                j, k = (g.ravel() for g in np.meshgrid(np.arange(len(methods)), np.arange(4), indexing="ij"))
                m = masks[i, j, k][..., None]  # [R, H, W, 1]
                fill = 0 if strategy == "blackening" else images[i].mean(axis=(0, 1))
                img = np.where(m, fill, images[i][None]).astype(np.uint8)
                yield {"strategy": strategy, "curve": "morf", "name": f"img{i}", "pos": np.full(j.size, i),
                       "method": np.array(methods)[j], "mask": k + 1, "draw": np.zeros(j.size, np.int64), "image": img}

    calls = []
    inner = make_predict_fn(_tiny_classifier())
    predict = lambda x: calls.append(len(x)) or inner(x)  # noqa: E731
    store = ChunkDir(tmp_path / "chunks")
    results = scoring.score_occluded(blocks(), images, predict, store=store)
    assert len(calls) == 6 and len(list((tmp_path / "chunks").iterdir())) == 6
    study, summary = scoring.summarize_run(ev, geo, results, predict, methods=methods, controls=["random"], n_boot=30)
    assert set(summary["strategies"]) == {"blackening", "mean"}
    assert summary["methods"] == ["gradcam", "eigencam"] and summary["controls"] == ["random"]
    assert summary["exclusions"]["invalid_heatmap"] == 1 and summary["n_images"] == 3
    assert summary["lpips_available"] is False and len(summary["kid"]["mean"]) == 4
    study.write_csv(tmp_path / "scores.csv")
    with open(tmp_path / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["image_id"] for r in rows} == {"7", "8", "9"}
    assert all(0 <= float(r["p_tumor"]) <= 1 for r in rows)
    calls.clear()  # a rerun (a killed run resuming) reuses every finished chunk
    again = scoring.score_occluded(blocks(), images, predict, store=store)
    assert calls == [] and all(np.array_equal(again[k]["p"], results[k]["p"]) for k in results)
    _, summary2 = scoring.summarize_run(ev, geo, again, predict, methods=methods, controls=["random"], n_boot=30)
    assert summary2 == summary
    report.write_report(tmp_path / "report", summary=summary)
    assert "blackening" in (tmp_path / "report" / "report.md").read_text()


def test_insertion_curve_higher_is_better():
    st = make_study()
    n, m = st.valid.shape
    rng = np.random.default_rng(3)
    pos, meth, mask = (g.ravel() for g in np.meshgrid(np.arange(n), np.arange(m), np.arange(1, 6), indexing="ij"))
    # point 1 = fully occluded (p low); better methods restore p(tumor) faster as M1..M4 come back
    p = np.clip(0.05 + 0.9 * (1 - np.exp(-3 * QUALITY[meth] * (mask - 1))) + 0.001 * rng.uniform(size=pos.size), 0, 1)
    st.add("blackening", "insertion", {"pos": pos, "method": np.array(M)[meth], "mask": mask,
                                       "draw": np.zeros(pos.size, np.int64), "p": p,
                                       "logit": np.log(p / (1 - p))})
    x = st.x("insertion", 5)
    assert x.shape[-1] == 6 and np.all(x[..., 0] == 1) and np.all(x[st.valid][..., 1] == 0)
    s = st.summarize(n_boot=50, seed=0)["strategies"]["blackening"]["insertion"]
    assert s["lower_is_better"] is False
    assert s["ranking"] == {mm: i + 1 for i, mm in enumerate(M[:7])}  # best (fastest restore) first
    aucs = st.aucs("blackening", "insertion")["p"]
    assert np.nanmean(aucs[:, 0]) > np.nanmean(aucs[:, 6])


def test_rival_section_lists_in_distribution_bias_controls_and_ffidelity():
    from ibo_jax.reporting.trust import rival_section

    trust = {"in_distribution": {"strategies": {"mean": {"ood_percentile": 41.9, "r_oms": 0.981},
                                                "counterfactual": {"ood_percentile": 27.7, "r_oms": 1.0}}},
             "blur_bias": {"curve": "fixed", "curves": {"fixed": {"strategies": {
                 "mean": {"gain": {"mean": 0.1, "lo": 0.0, "hi": 0.2}, "excess": {"mean": 0.05, "lo": 0.01, "hi": 0.09}}}}}},
             "shuffle": {"curve": "fixed", "curves": {"fixed": {"mean": {"spearman": 0.83}}}}}
    summary = {"ffidelity": {"ffid_plus": {"by_method": {"gradcam": {"mean": 0.4}, "random": {"mean": 0.1}},
                                           "ranking": {"gradcam": 1}}}}
    text = "".join(rival_section(trust, summary))
    assert "| mean | 42 | 0.981 | 0.050 [0.010, 0.090] | 0.83 |" in text
    assert "| counterfactual | 28 | 1.000 | - | n/a |" in text
    assert "ffid_plus: gradcam 0.400" in text and "random" not in text.split("F-Fidelity")[1]
    assert rival_section({}, {}) == []


def test_known_answer_table_gains_rival_columns_and_roar_kar_rows(tmp_path):
    from ibo_jax.reporting.trust import trust_section

    entry = {"mard": 0.5, "mard_boot": {"mean": 0.5, "lo": 0.2, "hi": 0.8}, "kendall_decided": 0.6,
             "within_patch": {"mean": 0.3, "lo": 0.2, "hi": 0.4}, "patch_spearman_median": 0.4}
    trust = {"counterfactual": {"twin_check": {"share_twins_called_normal": 0.9, "share_normal_called_normal": 0.95},
                                "curves": {"morf": {"n_decided_pairs": 4, "n_pairs": 6,
                                                    "strategies": {"mean": entry, "ffidelity": entry}},
                                           "fixed": {"n_decided_pairs": 4, "n_pairs": 6, "strategies": {"mean": entry}}}},
             "in_distribution": {"strategies": {"mean": {"ood_percentile": 41.9, "r_oms": 0.981}}},
             "shuffle": {"curve": "fixed", "curves": {"fixed": {"mean": {"spearman": 0.83}}}}}
    roar = {"fractions": [0.1, 0.5], "beside": {"curve": "morf", "kendall_tau": {"mean": 0.33, "roar": -0.2, "kar": 0.47}},
            "leakage_fraction": 0.3, "leakage": {"methods": {"gradcam": {"verdict": "confounded"}, "random": {"verdict": "clean"}}},
            "cost": {"n_retrainings": 57, "seconds_retraining": 3600.0, "n_maps": 21000, "seconds_maps": 120.0},
            "scores": {"notes": ["ROAR orders 2 of 6 method pairs otherwise"]}}
    lines, _ = trust_section(trust, {"strategies": {}}, tmp_path, roar=roar)
    text = "".join(lines)
    morf = text.split("**morf**")[1].split("**fixed**")[0]
    assert "Kendall (all pairs) | OOD percentile | R-OMS" in morf
    assert "| mean | 0.50 |" in morf and "| 0.33 | 42 | 0.981 | 0.83 |" in morf and "blur excess" not in morf
    assert "| ffidelity |" in morf and "| ROAR | - | - | - | - | - | - | -0.20 | - | - | - |" in morf and "| KAR |" in morf
    assert "confounded for gradcam" in morf and "57 retrainings" in morf and "otherwise" in morf
    fixed = text.split("**fixed**")[1]
    assert "OOD percentile |" not in fixed.split("\n\n")[1] and "ROAR |" not in fixed
    assert "The known-answer table's last columns" in text  # the legend, not a second table
    lines, _ = trust_section(trust, {"strategies": {}}, tmp_path)  # no roar stage: no such column or rows
    assert "Kendall (all pairs)" not in "".join(lines) and "| ROAR |" not in "".join(lines)
