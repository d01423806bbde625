"""Pairwise verdicts on a toy with a known answer: kendall_rows (tie_tol), decided_rows,
pairwise_verdicts (seed level), pairwise_mard and power_curve (ibo_jax.stats)."""

import numpy as np
import pytest

from ibo_jax import stats

M = 6
ORDER = np.arange(M, dtype=np.float64)  # the known answer: method m has AUC m (lower = more important)


def toy(n_seeds=3, n_patches=60, seed=0):
    """Reference and strategy AUC tables [S, P, M] with the verdicts fixed by construction:
    good ~ good2 (same order, independent noise of the same size: equivalent), inverted (reversed
    order: separated from good), mid and noisy (heavy noise, close in agreement: undecided on a
    few patches)."""
    r = np.random.default_rng(seed)
    shape = (n_seeds, n_patches, M)
    ref = ORDER + r.normal(0, 0.05, shape)
    strategies = {"good": ORDER + r.normal(0, 0.7, shape), "good2": ORDER + r.normal(0, 0.7, shape),
                  "inverted": ORDER[::-1] + r.normal(0, 0.7, shape),
                  "mid": ORDER + r.normal(0, 2.5, shape), "noisy": ORDER + r.normal(0, 3.0, shape)}
    return ref, strategies


@pytest.fixture(scope="module")
def within():
    ref, strategies = toy()
    return {k: stats.kendall_rows(v, ref) for k, v in strategies.items()}  # [S, P] each


def _kendall_loop(a, b):
    """The per-patch loop kendall_rows replaced (tie_tol = 0): the vectorized one must match it."""
    out = np.full(a.shape[0], np.nan)
    iu = np.triu_indices(a.shape[1], 1)
    for p in range(a.shape[0]):
        with np.errstate(invalid="ignore"):
            da = np.sign(a[p][:, None] - a[p][None, :])[iu]
            db = np.sign(b[p][:, None] - b[p][None, :])[iu]
        ok = np.isfinite(da) & np.isfinite(db)
        da, db = da[ok], db[ok]
        na, nb = np.sum(da != 0), np.sum(db != 0)
        if na and nb:
            out[p] = float(np.sum(da * db) / np.sqrt(na * nb))
    return out


def test_kendall_rows_vectorized_matches_the_loop_with_nans_and_ties():
    r = np.random.default_rng(3)
    a = r.integers(0, 3, (80, 5)).astype(float)  # many ties
    b = r.integers(0, 3, (80, 5)).astype(float)
    a[r.random(a.shape) < 0.2] = np.nan
    b[r.random(b.shape) < 0.2] = np.nan
    a[0] = np.nan  # nothing finite: NaN
    np.testing.assert_array_equal(stats.kendall_rows(a, b), _kendall_loop(a, b))
    assert np.isnan(stats.kendall_rows(a, b)[0])
    stacked = stats.kendall_rows(np.stack([a, b]), b)  # leading seed axis: [2, P]
    np.testing.assert_array_equal(stacked[1][np.isfinite(stacked[1])], 1.0)
    np.testing.assert_array_equal(stacked[0], _kendall_loop(a, b))


def test_tie_tol_ignores_a_tiny_perturbation_of_a_near_tie():
    ref = np.array([[1.0, 2.0, 3.0, 4.0]])
    a = np.array([[0.5, 0.5 + 1e-10, 2.0, 3.0]])  # methods 0 and 1 nearly tied, in ref's order
    bumped = a + np.array([2e-9, 0.0, 0.0, 0.0])  # a 1e-9-scale move swaps them
    assert stats.kendall_rows(a, ref)[0] != stats.kendall_rows(bumped, ref)[0]  # tie_tol = 0: it counts
    t0, t1 = stats.kendall_rows(a, ref, tie_tol=1e-6)[0], stats.kendall_rows(bumped, ref, tie_tol=1e-6)[0]
    assert t0 == t1 == pytest.approx(5 / np.sqrt(5 * 6))  # the pair is a tie either way: 5 of 6 pairs
    assert stats.decided_rows(a, ref, tie_tol=1e-6)[0] == stats.decided_rows(bumped, ref, tie_tol=1e-6)[0]


def test_decided_rows_hand_computed():
    ref = np.array([[1.0, 2.0, 3.0, 3.0],  # pair (2, 3) undecided: 5 decided pairs
                    [1.0, 2.0, 3.0, 3.0],
                    [2.0, 2.0, 2.0, 2.0],  # the reference decides nothing
                    [1.0, 2.0, 3.0, 4.0],
                    [1.0, 1.05, 3.0, 4.0]])  # (0, 1) within tie_tol = 0.1: 5 decided pairs
    a = np.array([[1.0, 3.0, 2.0, 5.0],  # (1, 2) discordant, four concordant: (4 - 1) / 5
                  [1.0, 1.0, 2.0, 5.0],  # (0, 1) tied in a: 0; four concordant: 4 / 5
                  [1.0, 2.0, 3.0, 4.0],
                  [np.nan, 1.0, 2.0, 3.0],  # method 0 missing: 3 pairs left, all concordant
                  [9.0, 1.0, 1.02, 0.0]])  # (1, 2) a tie in a (0), (0, x) and (1, 3), (2, 3) discordant
    got = stats.decided_rows(a, ref, tie_tol=0.1)
    np.testing.assert_allclose(got[[0, 1, 3, 4]], [0.6, 0.8, 1.0, -0.8])
    assert np.isnan(got[2])
    assert stats.decided_rows(a, ref)[4] == pytest.approx(-4 / 6)  # tie_tol = 0: (0, 1) decided, (1, 2) ordered


def test_verdicts_on_the_toy_where_constructed(within):
    three = {k: within[k] for k in ("good", "good2", "inverted")}
    rows = {(x["a"], x["b"]): x for x in stats.pairwise_verdicts(three, n_boot=300, seed=0)}
    assert rows[("good", "good2")]["verdict"] == "equivalent"
    assert rows[("good", "inverted")]["verdict"] == "separated" and rows[("good", "inverted")]["lo"] > 1.0
    assert rows[("good2", "inverted")]["verdict"] == "separated"
    few = {k: within[k][:, :6] for k in ("mid", "noisy")}  # heavy noise, six patches
    (row,) = stats.pairwise_verdicts(few, n_boot=300, seed=0)
    assert row["verdict"] == "undecided" and row["lo"] < 0 < row["hi"]
    assert row["hi_equiv"] - row["lo_equiv"] > 2 * stats.TAU_MARGIN


def test_seed_level_widens_the_interval_when_seeds_disagree():
    r = np.random.default_rng(5)
    a, b = 0.5 + r.normal(0, 0.05, 80), 0.4 + r.normal(0, 0.05, 80)  # the same patch data
    same = stats.pairwise_verdicts({"A": np.stack([a, a]), "B": np.stack([b, b])}, n_boot=300, seed=0)[0]
    offset = stats.pairwise_verdicts({"A": np.stack([a + 0.2, a - 0.2]), "B": np.stack([b, b])},
                                     n_boot=300, seed=0)[0]
    assert offset["difference"] == pytest.approx(same["difference"])
    assert offset["hi"] - offset["lo"] > 3 * (same["hi"] - same["lo"])


def test_pairwise_mard_on_the_toy():
    ref, strategies = toy(n_patches=30)
    aucs = {k: strategies[k] for k in ("good", "good2", "inverted")}
    rows = {(x["a"], x["b"]): x for x in stats.pairwise_mard(aucs, ref, n_boot=200, seed=0)}
    gi = rows[("good", "inverted")]
    assert gi["verdict"] == "separated" and gi["mard_a"] == 0.0 and gi["mard_b"] == 3.0  # |2r - 7| over r = 1..6
    assert gi["difference"] == -3.0 and gi["hi"] < -stats.MARD_MARGIN
    assert rows[("good", "good2")]["verdict"] == "equivalent"
    assert all(x["p_holm"] >= x["p"] for x in rows.values())
    with pytest.raises(ValueError):
        stats.pairwise_mard({"good": strategies["good"][:, :5]}, ref)


def test_power_curve_resolves_more_pairs_with_more_patches(within):
    def fn(idx):
        return stats.pairwise_verdicts({k: v[:, idx] for k, v in within.items()}, n_boot=150, seed=0)

    curve = stats.power_curve(fn, 60, [4, 15, 60], repeats=4, seed=0)
    assert [c["n"] for c in curve] == [4, 15, 60] and [c["repeats"] for c in curve] == [4, 4, 1]
    assert all(c["pairs"] == 10 for c in curve)
    decided = [c["decided_share"] for c in curve]
    half = [c["half_width_median"] for c in curve]
    assert decided[0] < decided[-1] and decided == sorted(decided)
    assert half[0] > half[1] > half[2]
    for c in curve:
        assert c["decided_share"] == pytest.approx(c["separated_share"] + c["equivalent_share"])
    focus = stats.power_curve(fn, 60, [60], focus="noisy")
    assert focus[0]["pairs"] == 4
    with pytest.raises(ValueError):
        stats.power_curve(fn, 60, [61])
