"""The statistics kit: paired bootstrap, means with intervals, Holm, rank data, paired MARD tests.

    idx = stats.bootstrap_indices(n_patches, n_boot, seed)   # [n_boot, n] rows, the same for every column
    ci  = stats.bootstrap_mean_ci(values, n_boot=1000, seed=0)  # mean, lo, hi, n per column
    m   = stats.nanmean(x, axis)                             # NaN-aware mean, no all-NaN warning
    adj = stats.holm(p_values)                               # Holm-Bonferroni adjusted p-values
    r   = stats.rankdata(x)                                  # average ranks (ties shared)
    t   = stats.paired_mard_test(auc_a, auc_b, ref, methods) # paired bootstrap test of MARD_A < MARD_B
    tau = stats.kendall_rows(a, ref, tie_tol=1e-9)           # within-patch Kendall tau-b [..., P]
    c   = stats.decided_rows(a, ref, tie_tol=1e-9)           # concordance on the pairs ref decides [..., P]
    v   = stats.pairwise_verdicts({name: tau_sp})            # separated / equivalent / undecided per pair
    v   = stats.pairwise_mard({name: auc_spm}, ref_spm)      # the same verdicts on the MARD of mean ranks
    pc  = stats.power_curve(fn, n_patches, ns)               # how fast pairs resolve as patches grow

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


def _pair_signs(x: np.ndarray, tie_tol: float) -> np.ndarray:
    """sign(x_i - x_j) for the method pairs i < j of x [..., M]: [..., M (M - 1) / 2]; differences
    with |d| <= tie_tol are ties (0), NaN where either entry is NaN (or both are the same infinity)."""
    i, j = np.triu_indices(x.shape[-1], 1)
    with np.errstate(invalid="ignore"):
        d = x[..., i] - x[..., j]
        s = np.sign(d)
        if tie_tol > 0:
            s = np.where(np.abs(d) <= tie_tol, 0.0, s)
    return s


def kendall_rows(a: np.ndarray, b: np.ndarray, *, tie_tol: float = 0.0) -> np.ndarray:
    """Kendall's tau-b between the rows of a and b [P, M] (per patch, across the M methods; NaN
    entries dropped pairwise): [P], NaN where fewer than 2 methods are finite or a row is constant.

    tie_tol: differences with |a_i - a_j| <= tie_tol (and likewise in b) count as ties (sign 0),
    so near-ties that could swap between CPUs or BLAS builds do not count as orderings; 0 (the
    default) counts only exact ties. Vectorized: any leading axes ([S, P, M] -> [S, P]); a and b
    broadcast against each other."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    da, db = _pair_signs(a, tie_tol), _pair_signs(b, tie_tol)
    ok = np.isfinite(da) & np.isfinite(db)
    da, db = np.where(ok, da, 0.0), np.where(ok, db, 0.0)
    na, nb = np.sum(da != 0, axis=-1), np.sum(db != 0, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.sum(da * db, axis=-1) / np.sqrt(na * nb)
    return np.where((na > 0) & (nb > 0), tau, np.nan)


def decided_rows(a: np.ndarray, ref: np.ndarray, *, tie_tol: float = 0.0) -> np.ndarray:
    """Concordance of a with ref [P, M] on the method pairs the reference decides, per patch: over
    the pairs with both ref entries finite and |ref_i - ref_j| > tie_tol, (concordant - discordant)
    / n_decided, where a pair that a orders within tie_tol counts 0 (neither). [P] in tau's units
    ([-1, 1]); pairs with a non-finite entry of a are left out (missing, not a failed ordering); NaN
    where no such pair remains (the reference decides none). Unlike tau-b, the reference's ties
    neither dilute nor inflate it. Leading axes and broadcasting as in `kendall_rows`."""
    a, ref = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(ref, np.float64))
    sa = _pair_signs(np.where(np.isfinite(a), a, np.nan), tie_tol)
    sr = _pair_signs(np.where(np.isfinite(ref), ref, np.nan), tie_tol)
    ok = np.isfinite(sa) & np.isfinite(sr) & (sr != 0)
    n = np.sum(ok, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.sum(np.where(ok, sa * sr, 0.0), axis=-1) / n
    return np.where(n > 0, c, np.nan)


def crossed_indices(n_seeds: int, n_patches: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap rows for seeds x patches crossed (the same patches under every seed): seeds
    [n_boot, S] and patches [n_boot, P], resampled independently (a seed level that disagrees
    widens the interval; with one seed the seed level is fixed)."""
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds)) if n_seeds > 1 else np.zeros((n_boot, 1), np.int64)
    return seeds, rng.integers(0, n_patches, size=(n_boot, n_patches))


def _boot_means(x: np.ndarray, seeds: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """Means of x [S, P] over resampled seeds and patches: [n_boot] (NaN entries left out).
    Gathers [chunk, S, P] grids (at most ~4M entries at a time) and averages each flattened grid,
    the same sums in the same order as one replicate at a time."""
    out = np.empty(len(seeds))
    chunk = max(1, (1 << 22) // max(1, seeds.shape[1] * patches.shape[1]))
    for c in range(0, len(seeds), chunk):
        s, p = seeds[c:c + chunk], patches[c:c + chunk]
        out[c:c + chunk] = nanmean(x[s[:, :, None], p[:, None, :]].reshape(len(s), -1), 1)
    return out


def _verdict_row(a: str, b: str, est: float, boots: np.ndarray, margin: float, alpha: float) -> dict:
    """One row of the pairwise verdicts from the observed difference and its bootstrap replicates
    (non-finite replicates dropped); p None (undecided) where nothing is finite."""
    boots = boots[np.isfinite(boots)]
    if not boots.size or not np.isfinite(est):
        return {"a": a, "b": b, "difference": None, "p": None, "verdict": "undecided"}
    p = float(min(1.0, 2 * min(np.mean(boots <= 0), np.mean(boots >= 0))))
    lo90, hi90 = np.quantile(boots, [alpha, 1 - alpha])
    return {"a": a, "b": b, "difference": float(est), "lo": float(np.quantile(boots, alpha / 2)),
            "hi": float(np.quantile(boots, 1 - alpha / 2)), "lo_equiv": float(lo90),
            "hi_equiv": float(hi90), "p": p, "equivalent": bool(-margin < lo90 and hi90 < margin)}


def _holm_verdicts(rows: list[dict], alpha: float) -> list[dict]:
    """Holm over the tested rows (p not None), then the verdict of each (in place; returns rows)."""
    tested = [r for r in rows if r["p"] is not None]
    for r, adj in zip(tested, holm([r["p"] for r in tested])):
        r["p_holm"] = adj
        r["verdict"] = "separated" if adj < alpha else "equivalent" if r["equivalent"] else "undecided"
    return rows


def pairwise_verdicts(values: dict[str, np.ndarray], *, margin: float = TAU_MARGIN, n_boot: int = 1000,
                      seed: int = 0, alpha: float = 0.05) -> list[dict]:
    """Every pair of `values` (name -> per-patch statistic [P], or [S, P] for S seeds crossed with
    the same P patches, higher = better): the paired difference a - b with its 1 - alpha interval
    (bootstrap over seeds and patches), a two-sided bootstrap p-value, Holm-adjusted over the pairs,
    and the verdict: 'separated' (Holm-adjusted p < alpha: the interval at the adjusted level
    excludes 0; wins if equivalence also holds), 'equivalent' (the 1 - 2 alpha interval lies inside
    +-margin: two one-sided tests) or 'undecided'.

    Resampling (`crossed_indices`): each replicate draws S seeds from the S with replacement and,
    independently, P patches from the P with replacement, and averages the difference over that
    S x P grid (NaN entries left out); every pair sees the same draws. The seed level is thus a
    random effect: seeds that disagree about a - b widen the interval. With one seed ([P] input or
    S = 1) the seed is fixed and only patches are resampled."""
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
            rows.append(_verdict_row(a, b, float(nanmean(d.reshape(-1), 0)), _boot_means(d, seeds, patches),
                                     margin, alpha))
    return _holm_verdicts(rows, alpha)


#: Equivalence margin of a MARD difference (mean absolute rank difference of the M methods' ranks
#: by mean AUC, against the reference's), in rank units, fixed before looking at any result: two
#: strategies whose MARDs differ by less than half a rank per method rank the methods alike for
#: every practical purpose. One swap of two neighbours moves a MARD by 2 / M (`rank_step`: 0.29
#: for the study's seven CAMs, 0.33 for six), so the margin is under two neighbour swaps.
MARD_MARGIN = 0.5


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of 0..n-1 occurs in each row of idx [n_boot, k]: [n_boot, n] float."""
    rows = np.arange(idx.shape[0])[:, None] * n
    return np.bincount((rows + idx).reshape(-1), minlength=idx.shape[0] * n).reshape(idx.shape[0], n).astype(np.float64)


def _crossed_col_means(x: np.ndarray, seeds: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """Mean per method of x [S, P, M] over the resampled seeds x patches grid of each replicate
    (`crossed_indices`), non-finite entries left out: [n_boot, M] (NaN where none is finite).
    Weighted by the draw counts, so no [n_boot, S, P, M] copy is made."""
    n_seeds, n_patches, n_methods = x.shape
    ok = np.isfinite(x)
    cs, cp = _counts(seeds, n_seeds), _counts(patches, n_patches)  # [B, S], [B, P]

    def grid_sum(v):  # sum_s cs[b, s] sum_p cp[b, p] v[s, p, m]
        t = (cp @ v.transpose(1, 0, 2).reshape(n_patches, n_seeds * n_methods)).reshape(-1, n_seeds, n_methods)
        return np.einsum("bs,bsm->bm", cs, t)

    tot, cnt = grid_sum(np.where(ok, x, 0.0)), grid_sum(ok.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, tot / cnt, np.nan)


def pairwise_mard(aucs: dict[str, np.ndarray], ref: np.ndarray, *, lower_is_better: bool = True,
                  margin: float = MARD_MARGIN, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> list[dict]:
    """`pairwise_verdicts` on the MARD instead of a per-patch statistic: every pair of strategies
    (name -> AUCs [S, P, M] or [P, M], the same shape as the reference `ref`), difference =
    MARD_a - MARD_b (lower MARD = the strategy's ranking of the M methods by mean AUC over seeds
    and patches agrees better with the reference's ranking of them), with the same row format
    (plus mard_a, mard_b) and verdict rules: two-sided bootstrap p, Holm over the pairs, separated /
    equivalent within +-margin (rank units, `MARD_MARGIN`) / undecided.

    Each replicate resamples seeds and patches crossed (`crossed_indices`, the same draws for every
    strategy and the reference), ranks the methods by their mean over the resampled seeds x
    patches (`ranks_array`, ties broken by method position 0..M-1; lower_is_better for both the
    strategies and the reference) and takes each strategy's MARD against the reference's ranks."""
    ref = np.asarray(ref, np.float64)
    ref = ref[None] if ref.ndim == 2 else ref
    if ref.ndim != 3:
        raise ValueError(f"pairwise_mard: ref {ref.shape}, expected [S, P, M] or [P, M]")
    arr = {}
    for k, v in aucs.items():
        v = np.asarray(v, np.float64)
        v = v[None] if v.ndim == 2 else v
        if v.shape != ref.shape:
            raise ValueError(f"pairwise_mard: {k} {v.shape} against the reference {ref.shape}")
        arr[k] = v
    n_seeds, n_patches, n_methods = ref.shape
    methods = list(range(n_methods))
    seeds, patches = crossed_indices(n_seeds, n_patches, n_boot, seed)
    obs_ref = ranks_array(col_means(ref.reshape(-1, n_methods)), methods, lower_is_better)
    boot_ref = ranks_array(_crossed_col_means(ref, seeds, patches), methods, lower_is_better)  # [B, M]
    obs, boot = {}, {}
    for k, v in arr.items():
        obs[k] = float(np.mean(np.abs(ranks_array(col_means(v.reshape(-1, n_methods)), methods, lower_is_better)
                                      - obs_ref)))
        boot[k] = np.mean(np.abs(ranks_array(_crossed_col_means(v, seeds, patches), methods, lower_is_better)
                                 - boot_ref), axis=-1)
    names = list(arr)
    rows = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = names[i], names[j]
            row = _verdict_row(a, b, obs[a] - obs[b], boot[a] - boot[b], margin, alpha)
            row.update(mard_a=obs[a], mard_b=obs[b])
            rows.append(row)
    return _holm_verdicts(rows, alpha)


def power_curve(verdict_fn, n_patches: int, ns: Sequence[int], *, repeats: int = 10, seed: int = 0,
                focus: str | None = None) -> list[dict]:
    """How fast a statistic resolves pairs as patches grow. For each n in ns (1 <= n <= n_patches):
    `repeats` random subsets of n patch indices drawn without replacement (sorted; one
    np.random.default_rng(seed) for the whole curve), or the single subset of all patches where
    n == n_patches; `verdict_fn(subset_indices)` returns rows like `pairwise_verdicts`'.

    Per n: {n, repeats (subsets used), half_width_median (median over repeats and pairs of
    (hi - lo) / 2; None where no row has an interval), decided_share (share of pairs separated or
    equivalent, averaged over repeats), separated_share, equivalent_share, pairs (pairs per
    repeat)}, counting only the pairs that involve `focus` when given."""
    rng = np.random.default_rng(seed)
    out = []
    for n in ns:
        n = int(n)
        if not 1 <= n <= n_patches:
            raise ValueError(f"power_curve: n = {n} outside 1..{n_patches}")
        subsets = ([np.arange(n_patches)] if n == n_patches else
                   [np.sort(rng.choice(n_patches, size=n, replace=False)) for _ in range(repeats)])
        halves, shares, pairs = [], {"separated": [], "equivalent": []}, 0
        for idx in subsets:
            rows = [r for r in verdict_fn(idx) if focus is None or focus in (r["a"], r["b"])]
            pairs = max(pairs, len(rows))
            if not rows:
                continue
            halves += [(r["hi"] - r["lo"]) / 2 for r in rows if r.get("lo") is not None]
            for v in shares:
                shares[v].append(float(np.mean([r["verdict"] == v for r in rows])))
        mean = {v: (float(np.mean(x)) if x else None) for v, x in shares.items()}
        decided = (None if mean["separated"] is None else
                   float(np.mean(np.add(shares["separated"], shares["equivalent"]))))
        out.append({"n": n, "repeats": len(subsets),
                    "half_width_median": float(np.median(halves)) if halves else None,
                    "decided_share": decided, "separated_share": mean["separated"],
                    "equivalent_share": mean["equivalent"], "pairs": pairs})
    return out
