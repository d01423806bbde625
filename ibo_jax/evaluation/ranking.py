"""Ground truth IoU, rankings of CAM methods, rank agreement and its uncertainty.

Conventions (docs/method.md, Pipeline): ranks are ordinal 1..N; ties are broken by the fixed order of
`ibo_jax.cam.METHODS` (names outside it follow, in the order given). Strategy rankings sort mean
deletion AUC ascending (lower = better); the GT ranking sorts mean IoU of M_n with the tumor mask
descending. MARD = mean |rank_GT - rank_strategy|. Controls ('random', 'oracle') are scored beside
the methods by the caller but never passed in here as ranked methods.

Uncertainty: bootstrap over patches (rows) with a numpy Generator seeded by the caller, the same
resampled rows for every method and strategy (paired), so CIs and tests reflect patch sampling.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

CONTROLS = ("random", "oracle")


def method_order() -> tuple[str, ...]:
    """`ibo_jax.cam.METHODS`: the tie-break order."""
    from ibo_jax import cam

    return tuple(cam.METHODS)


def _tie_key(names: Sequence[str]) -> dict[str, int]:
    """Position of each name in the tie-break order; unknown names follow in the given order."""
    known = {m: i for i, m in enumerate(method_order())}
    out, nxt = {}, len(known)
    for n in names:
        if n in known:
            out[n] = known[n]
        else:
            out[n], nxt = nxt, nxt + 1
    return out


def rank(scores_by_method: Mapping[str, float], ascending: bool = True) -> dict[str, int]:
    """Ordinal ranks 1..N of methods by score; ties broken by the order of `cam.METHODS`.

    ascending=True: the lowest score gets rank 1 (deletion AUC); False: the highest (IoU).
    """
    if not scores_by_method:
        raise ValueError("scores_by_method: empty; need at least one method")
    names = list(scores_by_method)
    vals = {}
    for n in names:
        v = float(scores_by_method[n])
        if not np.isfinite(v):
            raise ValueError(f"scores_by_method[{n!r}]: score is {v}; exclude the method or fix its inputs")
        vals[n] = v if ascending else -v
    tie = _tie_key(names)
    ordered = sorted(names, key=lambda n: (vals[n], tie[n]))
    return {n: i + 1 for i, n in enumerate(ordered)}


def _aligned(ranks_a: Mapping[str, int], ranks_b: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    if set(ranks_a) != set(ranks_b):
        raise ValueError(
            f"rankings cover different methods: only in a {sorted(set(ranks_a) - set(ranks_b))}, "
            f"only in b {sorted(set(ranks_b) - set(ranks_a))}"
        )
    if not ranks_a:
        raise ValueError("rankings are empty")
    names = sorted(ranks_a)
    return (np.array([ranks_a[n] for n in names], np.float64), np.array([ranks_b[n] for n in names], np.float64))


def mard(ranks_a: Mapping[str, int], ranks_b: Mapping[str, int]) -> float:
    """Mean absolute rank difference over the methods both rankings share (they must match)."""
    a, b = _aligned(ranks_a, ranks_b)
    return float(np.mean(np.abs(a - b)))


def exact_match_share(ranks_a: Mapping[str, int], ranks_b: Mapping[str, int]) -> float:
    """Share of methods with the same rank in both rankings (the study: IBO 5 of 7)."""
    a, b = _aligned(ranks_a, ranks_b)
    return float(np.mean(a == b))


def spearman(ranks_a: Mapping[str, int], ranks_b: Mapping[str, int]) -> float:
    """Spearman's rho of two ordinal rankings (no ties): 1 - 6 sum d^2 / (n (n^2 - 1))."""
    a, b = _aligned(ranks_a, ranks_b)
    n = a.size
    if n < 2:
        return float("nan")
    return float(1 - 6 * np.sum((a - b) ** 2) / (n * (n * n - 1)))


def kendall(ranks_a: Mapping[str, int], ranks_b: Mapping[str, int]) -> float:
    """Kendall's tau of two ordinal rankings (no ties, so tau-a = tau-b)."""
    a, b = _aligned(ranks_a, ranks_b)
    n = a.size
    if n < 2:
        return float("nan")
    sa = np.sign(a[:, None] - a[None, :])
    sb = np.sign(b[:, None] - b[None, :])
    return float(np.sum(np.triu(sa * sb, 1)) / (n * (n - 1) / 2))


def agreement(ranks: Mapping[str, int], gt_ranks: Mapping[str, int]) -> dict[str, float]:
    """All agreement numbers of one ranking against the GT ranking."""
    return {
        "mard": mard(ranks, gt_ranks),
        "exact_match": exact_match_share(ranks, gt_ranks),
        "spearman": spearman(ranks, gt_ranks),
        "kendall": kendall(ranks, gt_ranks),
    }


def iou(masks: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of bool masks [..., H, W] with tumor masks [..., H, W] (broadcast). NaN if both empty."""
    m = np.asarray(masks, bool)
    g = np.asarray(gt, bool)
    if m.shape[-2:] != g.shape[-2:]:
        raise ValueError(f"masks {m.shape} and gt {g.shape}: last two axes (H, W) must match")
    inter = np.sum(m & g, axis=(-2, -1)).astype(np.float64)
    union = np.sum(m | g, axis=(-2, -1)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)


def _col_means(x: np.ndarray) -> np.ndarray:
    """nanmean over the patch axis (-2) without the all-NaN warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=-2)


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] row indices drawn with replacement (numpy Generator from the seed)."""
    if n < 1:
        raise ValueError("bootstrap: need at least one patch")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


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
    boots = _col_means(v[idx])  # [n_boot, M]
    with warnings.catch_warnings():  # a column without any finite value: NaN interval, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(boots, alpha / 2, axis=0), np.nanquantile(boots, 1 - alpha / 2, axis=0)
    out = {"mean": _col_means(v), "lo": lo, "hi": hi, "n": np.sum(np.isfinite(v), axis=0)}
    return {k: (x[0] if squeeze else x) for k, x in out.items()}


def ranks_array(means, methods, ascending: bool):
    """Ordinal ranks [..., M] of column means (NaN last, cam.METHODS tie-break), vectorized."""
    return _ranks_array(means, methods, ascending)


def col_means(x: np.ndarray) -> np.ndarray:
    """nanmean over the patch axis (-2), no warning for all-NaN columns."""
    return _col_means(x)


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


def _ranks_array(means: np.ndarray, methods: Sequence[str], ascending: bool) -> np.ndarray:
    """Ordinal ranks [..., M] of column means with the cam.METHODS tie-break (vectorized)."""
    tie = _tie_key(list(methods))
    tie_arr = np.array([tie[m] for m in methods], np.float64)
    v = np.asarray(means, np.float64)
    v = v if ascending else -v
    v2 = np.where(np.isfinite(v), v, np.inf).reshape(-1, v.shape[-1])  # NaN ranks last
    order = np.lexsort((np.broadcast_to(tie_arr, v2.shape), v2), axis=-1)  # value, then tie
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(1, v2.shape[-1] + 1), order.shape), axis=-1)
    return ranks.reshape(v.shape)


def bootstrap_rankings(
    auc: np.ndarray,
    iou_values: np.ndarray,
    methods: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ascending: bool = True,
    gt_ascending: bool = False,
) -> dict[str, np.ndarray]:
    """Rank stability of one strategy: resample patches, rank methods by mean AUC and by mean IoU.

    auc, iou_values: [P, M] per patch and method (NaN = excluded). Returns
    rank_freq [M, M] (share of resamples where method m got rank r+1), gt_rank_freq [M, M],
    mard [n_boot] (MARD of the resampled strategy ranking vs the resampled GT ranking).
    """
    a = np.asarray(auc, np.float64)
    g = np.asarray(iou_values, np.float64)
    if a.shape != g.shape or a.ndim != 2 or a.shape[1] != len(methods):
        raise ValueError(f"auc {a.shape} and iou {g.shape}: expected both [P, {len(methods)}]")
    idx = bootstrap_indices(a.shape[0], n_boot, seed)
    ra = _ranks_array(_col_means(a[idx]), methods, ascending)  # [n_boot, M]
    rg = _ranks_array(_col_means(g[idx]), methods, gt_ascending)
    m = len(methods)
    freq = np.stack([np.mean(ra == r + 1, axis=0) for r in range(m)], axis=1)  # [M, M]
    gfreq = np.stack([np.mean(rg == r + 1, axis=0) for r in range(m)], axis=1)
    return {"rank_freq": freq, "gt_rank_freq": gfreq, "mard": np.mean(np.abs(ra - rg), axis=1)}


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
    obs = _ranks_array(_col_means(np.stack([a, b])), methods, ascending)  # [2, M]
    obs_g = _ranks_array(_col_means(g), methods, gt_ascending)  # [M]
    diff = np.mean(np.abs(obs[0] - obs_g)) - np.mean(np.abs(obs[1] - obs_g))
    idx = bootstrap_indices(a.shape[0], n_boot, seed)
    rg = _ranks_array(_col_means(g[idx]), methods, gt_ascending)
    ra = _ranks_array(_col_means(a[idx]), methods, ascending)
    rb = _ranks_array(_col_means(b[idx]), methods, ascending)
    d = np.mean(np.abs(ra - rg), axis=1) - np.mean(np.abs(rb - rg), axis=1)  # [n_boot]
    return {
        "mard_diff": float(diff),
        "lo": float(np.quantile(d, alpha / 2)),
        "hi": float(np.quantile(d, 1 - alpha / 2)),
        "p_value": float(np.mean(d >= 0)),
        "p_two_sided": float(min(1.0, 2.0 * min(np.mean(d >= 0), np.mean(d <= 0)))),
    }
