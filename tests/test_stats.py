"""The statistics kit (`ibo_jax.stats`), the rank step of the power analysis, the markdown helper."""

import warnings

import numpy as np
import pytest

from ibo_jax import evaluation, stats
from ibo_jax import io as ibo_io
from ibo_jax.evaluation import ranking
from ibo_jax.evaluation.scores import ScoreTable
from ibo_jax.reporting import markdown as md
from ibo_jax.trust import checks as meta


def test_holm_against_a_hand_computed_case():
    # sorted p: 0.01, 0.02, 0.03, 0.04 -> 4*0.01=0.04, 3*0.02=0.06, 2*0.03=0.06, 1*0.04=0.04 -> max so far 0.06
    adj = stats.holm([0.03, 0.01, 0.04, 0.02])
    assert adj == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert stats.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_rankdata_shares_ranks_between_ties():
    r = stats.rankdata(np.array([3.0, 1.0, 3.0, 2.0, 3.0]))
    np.testing.assert_array_equal(r, [3.0, 0.0, 3.0, 1.0, 3.0])  # the three 3s share (2 + 3 + 4) / 3


def test_bootstrap_ci_covers_a_known_mean_and_keeps_the_draws():
    rng = np.random.default_rng(1)
    noise = 0.1 * rng.normal(size=(400, 2))
    v = 0.7 + noise - noise.mean(axis=0)  # the patches' mean is exactly 0.7
    c = stats.bootstrap_mean_ci(v, n_boot=400, seed=5)
    assert np.all(c["lo"] < 0.7) and np.all(0.7 < c["hi"]) and np.all(c["hi"] - c["lo"] < 0.05)
    # the same rows as numpy's Generator draws them today (results stay byte-identical)
    expected = np.random.default_rng(5).integers(0, 400, size=(400, 400))
    np.testing.assert_array_equal(stats.bootstrap_indices(400, 400, 5), expected)
    assert stats.bootstrap_mean_ci(v[:, 0], n_boot=400, seed=5)["lo"] == pytest.approx(c["lo"][0])  # 1-D: column 0


def test_nanmean_all_nan_rows_stay_nan_without_a_warning():
    x = np.array([[np.nan, np.nan], [1.0, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = stats.nanmean(x, 1)
    assert np.isnan(out[0]) and out[1] == 1.0


def test_mean_ci_ignores_non_finite_and_handles_nothing():
    idx = stats.bootstrap_indices(4, 50, 0)
    c = stats.mean_ci(np.array([[1.0, np.inf], [2.0, 2.0], [3.0, np.nan], [4.0, 4.0]]), idx)
    assert c["mean"] == pytest.approx(2.5) and c["n"] == 4 and c["lo"] <= c["mean"] <= c["hi"]
    assert stats.mean_ci(np.full(4, np.nan), idx) == {"mean": None, "lo": None, "hi": None, "n": 0}


def test_old_names_are_the_stats_functions():
    assert evaluation.bootstrap_mean_ci is stats.bootstrap_mean_ci
    assert evaluation.paired_mard_test is stats.paired_mard_test
    assert ranking.bootstrap_indices is stats.bootstrap_indices and ranking.holm is stats.holm
    assert ranking.ranks_array is stats.ranks_array and ranking.col_means is stats.col_means


def _study(methods, n=16, seed=0):
    r = np.random.default_rng(seed)
    m = len(methods)
    quality = np.linspace(0.6, 0.4, m)
    st = ScoreTable(image_id=np.arange(n), label=np.ones(n, np.int32), methods=list(methods), controls=[],
               areas={"morf": np.broadcast_to(np.linspace(0.1, 0.4, 4), (n, m, 4)).copy()},
               valid=np.ones((n, m), bool), gt_iou=quality[None] + 0.05 * r.normal(size=(n, m)),
               p0=np.full(n, 0.95), logit0=np.full(n, 3.0))
    for strategy, noise in (("a", 0.2), ("b", 0.4)):
        pos, meth, mask = (g.ravel() for g in np.meshgrid(np.arange(n), np.arange(m), np.arange(1, 5), indexing="ij"))
        p = np.clip(0.95 * np.exp(-quality[meth] * mask) + noise * r.normal(size=pos.size), 0, 1)
        st.add(strategy, "morf", {"pos": pos, "method": meth, "mask": mask, "draw": np.zeros(pos.size, int),
                                  "p": p, "logit": np.log(np.clip(p, 1e-6, 1) / np.clip(1 - p, 1e-6, 1))})
    return st


@pytest.mark.parametrize("methods", [("gradcam", "eigencam", "scorecam"), ("gradcam", "xgradcam", "fullgrad",
                                                                           "scorecam", "eigencam")])
def test_power_rank_step_follows_the_number_of_ranked_methods(methods):
    p = meta.power(_study(methods), reference=None, n_boot=40, subsample_repeats=1)
    assert p["mard_step"] == pytest.approx(2 / len(methods))
    assert p["target_difference"] >= 2 / len(methods) - 1e-12
    assert f"one rank step is {2 / len(methods):.2f}" in p["sentence"] or p["decisive"]
    assert stats.rank_step(7) == 2.0 / 7.0 and stats.rank_step(1) is None


def test_markdown_numbers_intervals_tables():
    assert md.num(0.12345) == "0.123" and md.num(None) == "n/a" and md.num(float("nan")) == "n/a"
    assert md.mean_interval({"mean": 0.12, "lo": 0.05, "hi": 0.2}, 2) == "0.12 [0.05, 0.20]"
    assert md.mean_interval({"mean": 0.12, "lo": None, "hi": 0.2}, 2) == "0.12"
    assert md.mean_interval({"mean": None}) == "n/a" and md.interval({"lo": None}) == "n/a"
    assert md.interval({"lo": 0.05, "hi": 0.2}, 2) == "[0.05, 0.20]" == md.bracket(0.05, 0.2, 2)
    assert md.bracket(None, 1.0, 1) == "[n/a, 1.0]"
    assert md.table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |\n"


def test_plain_turns_config_dicts_into_dicts():
    import ml_collections

    c = ml_collections.ConfigDict({"a": {"b": (1, 2)}, "c": 3})
    got = ibo_io.plain(c)
    assert got == {"a": {"b": (1, 2)}, "c": 3} and type(got) is dict and type(got["a"]) is dict
    assert ibo_io.plain(ml_collections.FrozenConfigDict(c))["a"]["b"] == (1, 2)
    assert ibo_io.plain({"x": [(1,), 2]}, lists=True) == {"x": [[1], 2]}  # as JSON reads it back
    assert ibo_io.plain(5) == 5


def test_pairwise_verdicts_separated_equivalent_undecided_where_constructed():
    r = np.random.default_rng(0)
    n = 200
    a = 0.8 + r.normal(0, 0.05, n)
    values = {"A": a, "B": 0.2 + r.normal(0, 0.05, n),  # far below A: separated
              "C": a + r.normal(0, 0.01, n),  # A up to tiny noise: equivalent
              "D": a + 0.05 + r.normal(0, 1.5, n)}  # a small shift under large noise: undecided
    rows = {(x["a"], x["b"]): x for x in stats.pairwise_verdicts(values, n_boot=500, seed=1)}
    assert rows[("A", "B")]["verdict"] == "separated" and rows[("A", "B")]["lo"] > 0.5
    assert rows[("A", "C")]["verdict"] == "equivalent"
    assert -stats.TAU_MARGIN < rows[("A", "C")]["lo_equiv"] <= rows[("A", "C")]["hi_equiv"] < stats.TAU_MARGIN
    assert rows[("A", "D")]["verdict"] == "undecided"
    d = rows[("A", "D")]
    assert d["lo"] < 0 < d["hi"] and d["hi_equiv"] - d["lo_equiv"] > 2 * stats.TAU_MARGIN  # too wide to be equivalent
    assert all(x["p_holm"] >= x["p"] for x in rows.values())  # Holm over the six pairs


def test_seed_level_widens_the_interval_when_seeds_disagree():
    r = np.random.default_rng(2)
    n = 100
    shift = np.array([0.3, 0.0, -0.2])[:, None]  # the seeds disagree about A - B
    a = 0.5 + shift + r.normal(0, 0.05, (3, n))
    b = 0.45 + r.normal(0, 0.05, (3, n))
    crossed = stats.pairwise_verdicts({"A": a, "B": b}, n_boot=400, seed=0)[0]
    pooled = stats.pairwise_verdicts({"A": a.reshape(1, -1), "B": b.reshape(1, -1)}, n_boot=400, seed=0)[0]
    assert crossed["difference"] == pytest.approx(pooled["difference"])
    assert (crossed["hi"] - crossed["lo"]) > 3 * (pooled["hi"] - pooled["lo"])
    assert pooled["verdict"] == "separated" and crossed["verdict"] == "undecided"


def test_kendall_rows_per_patch():
    a = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [1.0, np.nan, 3.0]])
    b = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [0.0, 5.0, 2.0]])
    got = stats.kendall_rows(a, b)
    np.testing.assert_allclose(got[:2], [1.0, -1.0])
    assert np.isnan(got[2]) and got[3] == pytest.approx(1.0)  # constant row; the NaN method left out
