"""The statistics kit: paired bootstrap, means with intervals, Holm, rank data, paired MARD tests.

    idx = stats.bootstrap_indices(n_patches, n_boot, seed)   # [n_boot, n] rows, the same for every column
    ci  = stats.bootstrap_mean_ci(values, n_boot=1000, seed=0)  # mean, lo, hi, n per column
    m   = stats.nanmean(x, axis)                             # NaN-aware mean, no all-NaN warning
    adj = stats.holm(p_values)                               # Holm-Bonferroni adjusted p-values
    r   = stats.rankdata(x)                                  # average ranks (ties shared)
    t   = stats.paired_mard_test(auc_a, auc_b, ref, methods) # paired bootstrap test of MARD_A < MARD_B

Bootstraps resample patches (rows) with a numpy Generator seeded by the caller; every column,
strategy and reference of one call sees the same rows (paired). Ordinal ranks of methods break
ties by the order of `ibo_jax.cam.METHODS` (names outside it follow, in the order given), the
convention of `evaluation.ranking`. Pure numpy; `evaluation.ranking`, `evaluation.study` and
`trust.checks` re-export the names they had.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] row indices drawn with replacement (numpy Generator from the seed)."""
    if n < 1:
        raise ValueError("bootstrap: need at least one patch")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def nanmean(x: np.ndarray, axis) -> np.ndarray:
    """np.nanmean without the RuntimeWarning for all-NaN slices (they stay NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def col_means(x: np.ndarray) -> np.ndarray:
    """nanmean over the patch axis (-2), no warning for all-NaN columns."""
    return nanmean(x, -2)


def finite_mean_ci(v: np.ndarray, idx: np.ndarray, alpha: float = 0.05) -> dict:
    """Mean of the finite entries of v [P] with the percentile interval of the resampled means
    (`idx` [n_boot, P]); NaN (not None) where nothing is finite: {mean, lo, hi} (the sweep's rows)."""
    v = np.asarray(v, np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan")}
    with np.errstate(invalid="ignore"):
        boots = np.nanmean(np.where(ok[idx], v[idx], np.nan), axis=1)
    return {"mean": float(np.nanmean(v)), "lo": float(np.nanquantile(boots, alpha / 2)),
            "hi": float(np.nanquantile(boots, 1 - alpha / 2))}


def interval(values: np.ndarray, alpha: float = 0.05) -> dict:
    """Percentile interval {lo, hi} of the finite values (None, None when there is none)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"lo": None, "hi": None}
    return {"lo": float(np.quantile(v, alpha / 2)), "hi": float(np.quantile(v, 1 - alpha / 2))}


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, np.ndarray]:
    """Mean per column with a percentile bootstrap CI over rows (patches); NaN entries ignored.

    values: [P, M] (or [P]). Returns dict mean, lo, hi, n (non-NaN count), each [M] (or scalar).
    """
    v = np.asarray(values, np.float64)
    squeeze = v.ndim == 1
    v = v[:, None] if squeeze else v
    idx = bootstrap_indices(v.shape[0], n_boot, seed)
    boots = col_means(v[idx])  # [n_boot, M]
    with warnings.catch_warnings():  # a column without any finite value: NaN interval, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(boots, alpha / 2, axis=0), np.nanquantile(boots, 1 - alpha / 2, axis=0)
    out = {"mean": col_means(v), "lo": lo, "hi": hi, "n": np.sum(np.isfinite(v), axis=0)}
    return {k: (x[0] if squeeze else x) for k, x in out.items()}


def mean_ci(x: np.ndarray, idx: np.ndarray, alpha: float = 0.05) -> dict:
    """Mean over rows (patches) of x [P, ...] (non-finite entries ignored; extra axes averaged per row first) with
    the percentile interval of the means over the resampled rows `idx` [n_boot, P]. Plain floats:
    {mean, lo, hi, n} (None where there is no finite row)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    rows = nanmean(np.where(np.isfinite(x), x, np.nan), 1) if x.shape[1] > 1 else x[:, 0]
    ok = np.isfinite(rows)
    if not ok.any():
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    boots = col_means(rows[idx][..., None])[:, 0] if idx.size else np.array([])
    return {"mean": float(np.nanmean(rows)), **interval(boots, alpha), "n": int(ok.sum())}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(p_values, np.float64)
    order = np.argsort(p)
    adj = np.empty_like(p)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (len(p) - i) * p[j]))
        adj[j] = running
    return adj.tolist()


def rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks 0..n-1 of a 1-D array (tied values share the mean of their ranks), for
    Spearman correlations over patches or pixels (a constant shift does not change them)."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), np.float64)
    r[order] = np.arange(len(x), dtype=np.float64)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    return sums[inv] / counts[inv]


def rank_step(n_methods: int) -> float | None:
    """The smallest change of a MARD over `n_methods` ranked methods: swapping two neighbours moves
    two ranks by one, so 2 / M (2/7 for the study's seven CAMs); None below two methods."""
    return 2.0 / n_methods if n_methods >= 2 else None


def method_order() -> tuple[str, ...]:
    """`ibo_jax.cam.METHODS`: the tie-break order of ordinal ranks."""
    from ibo_jax import cam

    return tuple(cam.METHODS)


def tie_key(names: Sequence[str]) -> dict[str, int]:
    """Position of each name in the tie-break order; unknown names follow in the given order."""
    known = {m: i for i, m in enumerate(method_order())}
    out, nxt = {}, len(known)
    for n in names:
        if n in known:
            out[n] = known[n]
        else:
            out[n], nxt = nxt, nxt + 1
    return out


def ranks_array(means: np.ndarray, methods: Sequence[str], ascending: bool) -> np.ndarray:
    """Ordinal ranks [..., M] of column means (NaN last, cam.METHODS tie-break), vectorized."""
    tie = tie_key(list(methods))
    tie_arr = np.array([tie[m] for m in methods], np.float64)
    v = np.asarray(means, np.float64)
    v = v if ascending else -v
    v2 = np.where(np.isfinite(v), v, np.inf).reshape(-1, v.shape[-1])  # NaN ranks last
    order = np.lexsort((np.broadcast_to(tie_arr, v2.shape), v2), axis=-1)  # value, then tie
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(1, v2.shape[-1] + 1), order.shape), axis=-1)
    return ranks.reshape(v.shape)


def paired_mard_test(
    auc_a: np.ndarray,
    auc_b: np.ndarray,
    iou_values: np.ndarray,
    methods: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    ascending: bool = True,
    gt_ascending: bool = False,
) -> dict[str, float]:
    """Paired bootstrap test of MARD(strategy A) < MARD(strategy B) against the GT ranking.

    ascending: lower AUC ranks first (deletion); gt_ascending: the reference's direction (False
    for the IoU ground truth; True for a reference strategy's deletion AUCs).

    All three tables [P, M] share rows (patches); each resample uses the same rows for A, B and
    the GT. Returns the observed difference MARD_A - MARD_B, its CI, and p_value = share of
    resamples with MARD_A >= MARD_B (small = A agrees with the GT better than B beyond noise).
    """
    a = np.asarray(auc_a, np.float64)
    b = np.asarray(auc_b, np.float64)
    g = np.asarray(iou_values, np.float64)
    if not (a.shape == b.shape == g.shape) or a.ndim != 2:
        raise ValueError(f"auc_a {a.shape}, auc_b {b.shape}, iou {g.shape}: expected equal [P, M]")
    obs = ranks_array(col_means(np.stack([a, b])), methods, ascending)  # [2, M]
    obs_g = ranks_array(col_means(g), methods, gt_ascending)  # [M]
    diff = np.mean(np.abs(obs[0] - obs_g)) - np.mean(np.abs(obs[1] - obs_g))
    idx = bootstrap_indices(a.shape[0], n_boot, seed)
    rg = ranks_array(col_means(g[idx]), methods, gt_ascending)
    ra = ranks_array(col_means(a[idx]), methods, ascending)
    rb = ranks_array(col_means(b[idx]), methods, ascending)
    d = np.mean(np.abs(ra - rg), axis=1) - np.mean(np.abs(rb - rg), axis=1)  # [n_boot]
    return {
        "mard_diff": float(diff),
        "lo": float(np.quantile(d, alpha / 2)),
        "hi": float(np.quantile(d, 1 - alpha / 2)),
        "p_value": float(np.mean(d >= 0)),
        "p_two_sided": float(min(1.0, 2.0 * min(np.mean(d >= 0), np.mean(d <= 0)))),
    }


# ------------------------------------------------------------------ pairwise verdicts (decisive or not)

#: Equivalence margin of the within-patch rank agreement (Kendall's tau, in [-1, 1]), fixed before
#: looking at any result: two strategies whose mean agreement differs by less than this order the
#: methods alike for every practical purpose (a tenth of tau's half-range).
TAU_MARGIN = 0.1


def kendall_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between the rows of a and b [P, M] (per patch, across the M methods; NaN
    entries dropped pairwise): [P], NaN where fewer than 2 methods are finite or a row is constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = np.full(a.shape[0], np.nan)
    iu = np.triu_indices(a.shape[1], 1)
    for p in range(a.shape[0]):
        da = np.sign(a[p][:, None] - a[p][None, :])[iu]
        db = np.sign(b[p][:, None] - b[p][None, :])[iu]
        ok = np.isfinite(da) & np.isfinite(db)
        da, db = da[ok], db[ok]
        na, nb = np.sum(da != 0), np.sum(db != 0)
        if na and nb:
            out[p] = float(np.sum(da * db) / np.sqrt(na * nb))
    return out


def crossed_indices(n_seeds: int, n_patches: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap rows for seeds x patches crossed (the same patches under every seed): seeds
    [n_boot, S] and patches [n_boot, P], resampled independently (a seed level that disagrees
    widens the interval; with one seed the seed level is fixed)."""
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds)) if n_seeds > 1 else np.zeros((n_boot, 1), np.int64)
    return seeds, rng.integers(0, n_patches, size=(n_boot, n_patches))


def _boot_means(x: np.ndarray, seeds: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """Means of x [S, P] over resampled seeds and patches: [n_boot] (NaN entries left out)."""
    out = np.empty(len(seeds))
    for i, (s, p) in enumerate(zip(seeds, patches)):
        out[i] = nanmean(x[np.ix_(s, p)].reshape(-1), 0)
    return out


def pairwise_verdicts(values: dict[str, np.ndarray], *, margin: float = TAU_MARGIN, n_boot: int = 1000,
                      seed: int = 0, alpha: float = 0.05) -> list[dict]:
    """Every pair of `values` (name -> per-patch statistic [P], or [S, P] for S seeds crossed with
    the same P patches, higher = better): the paired difference a - b with its 1 - alpha interval
    (bootstrap over seeds and patches), a two-sided bootstrap p-value, Holm-adjusted over the pairs,
    and the verdict: 'separated' (Holm-adjusted p < alpha: the interval at the adjusted level
    excludes 0; wins if equivalence also holds), 'equivalent' (the 1 - 2 alpha interval lies inside
    +-margin: two one-sided tests) or 'undecided'."""
    names = list(values)
    arr = {k: np.atleast_2d(np.asarray(v, np.float64)) for k, v in values.items()}
    shapes = {v.shape for v in arr.values()}
    if len(shapes) != 1:
        raise ValueError(f"pairwise_verdicts: every statistic needs the same [seeds, patches] shape, got {shapes}")
    (n_seeds, n_patches), = shapes
    seeds, patches = crossed_indices(n_seeds, n_patches, n_boot, seed)
    rows = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = names[i], names[j]
            d = arr[a] - arr[b]
            boots = _boot_means(d, seeds, patches)
            boots = boots[np.isfinite(boots)]
            est = float(nanmean(d.reshape(-1), 0))
            if not boots.size or not np.isfinite(est):
                rows.append({"a": a, "b": b, "difference": None, "p": None, "verdict": "undecided"})
                continue
            p = float(min(1.0, 2 * min(np.mean(boots <= 0), np.mean(boots >= 0))))
            lo90, hi90 = np.quantile(boots, [alpha, 1 - alpha])
            rows.append({"a": a, "b": b, "difference": est, "lo": float(np.quantile(boots, alpha / 2)),
                         "hi": float(np.quantile(boots, 1 - alpha / 2)), "lo_equiv": float(lo90),
                         "hi_equiv": float(hi90), "p": p, "equivalent": bool(-margin < lo90 and hi90 < margin)})
    tested = [r for r in rows if r["p"] is not None]
    for r, adj in zip(tested, holm([r["p"] for r in tested])):
        r["p_holm"] = adj
        r["verdict"] = "separated" if adj < alpha else "equivalent" if r["equivalent"] else "undecided"
    return rows
