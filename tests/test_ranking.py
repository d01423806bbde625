"""Rankings, MARD and agreement numbers, IoU, bootstrap CIs and the paired MARD test."""

import numpy as np
import pytest

from ibo_jax import evaluation
from ibo_jax.evaluation import ranking

M7 = ("gradcam", "gradcam++", "xgradcam", "ablationcam", "fullgrad", "scorecam", "eigencam")


def test_rank_order_and_ties_follow_cam_methods():
    scores = {"scorecam": 0.2, "gradcam": 0.2, "eigencam": 0.1, "xgradcam": 0.5}
    assert evaluation.rank(scores) == {"eigencam": 1, "gradcam": 2, "scorecam": 3, "xgradcam": 4}
    assert evaluation.rank(scores, ascending=False) == {"xgradcam": 1, "gradcam": 2, "scorecam": 3, "eigencam": 4}
    # names outside cam.METHODS follow, in the order given
    assert evaluation.rank({"zzz": 1.0, "gradcam": 1.0, "aaa": 1.0}) == {"gradcam": 1, "zzz": 2, "aaa": 3}
    with pytest.raises(ValueError, match="nan"):
        evaluation.rank({"gradcam": float("nan")})


def test_mard_and_study_numbers():
    gt = {m: i + 1 for i, m in enumerate(M7)}
    ibo = dict(gt)
    ibo["gradcam"], ibo["gradcam++"] = 2, 1  # one swap: 2 of 7 off by one
    assert evaluation.mard(ibo, gt) == pytest.approx(2 / 7)  # the study's 0.2857
    assert evaluation.exact_match_share(ibo, gt) == pytest.approx(5 / 7)  # the study's 71%
    rev = {m: 8 - r for m, r in gt.items()}
    assert evaluation.spearman(rev, gt) == pytest.approx(-1)
    assert evaluation.kendall(rev, gt) == pytest.approx(-1)
    assert evaluation.kendall(gt, gt) == pytest.approx(1)
    with pytest.raises(ValueError, match="different methods"):
        evaluation.mard({"gradcam": 1}, {"eigencam": 1})


def test_kendall_spearman_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for _ in range(5):
        a = dict(zip(M7, rng.permutation(7) + 1, strict=True))
        b = dict(zip(M7, rng.permutation(7) + 1, strict=True))
        x, y = [a[m] for m in M7], [b[m] for m in M7]
        assert evaluation.kendall(a, b) == pytest.approx(stats.kendalltau(x, y).statistic)
        assert evaluation.spearman(a, b) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_iou():
    m = np.zeros((3, 4, 4), bool)
    g = np.zeros((3, 4, 4), bool)
    m[0, :2], g[0, 1:3] = True, True  # inter 4, union 12
    m[1], g[1] = True, True
    got = evaluation.iou(m, g)
    assert got[0] == pytest.approx(4 / 12) and got[1] == 1 and np.isnan(got[2])
    with pytest.raises(ValueError, match="H, W"):
        evaluation.iou(m, g[:, :3])


def test_bootstrap_ci_is_deterministic_and_covers_mean():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(200, 3)) + np.array([0, 1, 2])
    v[0, 0] = np.nan
    a = evaluation.bootstrap_mean_ci(v, n_boot=300, seed=3)
    b = evaluation.bootstrap_mean_ci(v, n_boot=300, seed=3)
    np.testing.assert_array_equal(a["lo"], b["lo"])
    assert np.all(a["lo"] < a["mean"]) and np.all(a["mean"] < a["hi"])
    assert a["n"].tolist() == [199, 200, 200]
    assert np.all(a["hi"] - a["lo"] < 0.5)


def test_bootstrap_rankings_and_paired_test():
    rng = np.random.default_rng(0)
    p = 60
    iou = np.linspace(0.7, 0.1, 7)[None] + 0.05 * rng.normal(size=(p, 7))
    good = 1 - iou + 0.02 * rng.normal(size=(p, 7))  # AUC falls with IoU: agrees with GT
    bad = rng.uniform(size=(p, 7))  # unrelated to GT
    br = evaluation.bootstrap_rankings(good, iou, M7, n_boot=200, seed=0)
    assert br["rank_freq"].shape == (7, 7)
    np.testing.assert_allclose(br["rank_freq"].sum(axis=1), 1)
    assert br["rank_freq"][0, 0] > 0.9 and br["mard"].mean() < 0.2
    t = evaluation.paired_mard_test(good, bad, iou, M7, n_boot=200, seed=0)
    assert t["mard_diff"] < 0 and t["p_value"] < 0.05 and t["hi"] < 0
    same = evaluation.paired_mard_test(good, good, iou, M7, n_boot=50, seed=0)
    assert same["mard_diff"] == 0 and same["p_value"] == 1


def test_ranks_array_matches_rank():
    rng = np.random.default_rng(2)
    means = np.round(rng.uniform(size=(20, 7)), 1)  # many ties
    arr = ranking.ranks_array(means, M7, True)
    for row, r in zip(means, arr, strict=True):
        assert evaluation.rank(dict(zip(M7, row, strict=True))) == dict(zip(M7, r.tolist(), strict=True))
