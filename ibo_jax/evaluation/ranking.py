"""Ground truth IoU, rankings of CAM methods, rank agreement and its uncertainty.

Conventions (docs/method.md, Pipeline): ranks are ordinal 1..N; ties are broken by the fixed order of
`ibo_jax.cam.METHODS` (names outside it follow, in the order given). Strategy rankings sort mean
deletion AUC ascending (lower = better); the GT ranking sorts mean IoU of M_n with the tumor mask
descending. MARD = mean |rank_GT - rank_strategy|. Controls ('random', 'oracle') are scored beside
the methods by the caller but never passed in here as ranked methods.

Uncertainty: bootstrap over patches (rows) with a numpy Generator seeded by the caller, the same
resampled rows for every method and strategy (paired), so CIs and tests reflect patch sampling.
The statistics themselves (bootstrap indices and CIs, Holm, vectorized ranks, the paired MARD test)
live in `ibo_jax.stats`; this module re-exports them under their old names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ibo_jax.stats import (  # noqa: F401  (re-exported: the public names of this module)
    bootstrap_indices,
    bootstrap_mean_ci,
    col_means,
    holm,
    method_order,
    paired_mard_test,
    ranks_array,
    tie_key,
)

CONTROLS = ("random", "oracle")


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
    tie = tie_key(names)
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
    ra = ranks_array(col_means(a[idx]), methods, ascending)  # [n_boot, M]
    rg = ranks_array(col_means(g[idx]), methods, gt_ascending)
    m = len(methods)
    freq = np.stack([np.mean(ra == r + 1, axis=0) for r in range(m)], axis=1)  # [M, M]
    gfreq = np.stack([np.mean(rg == r + 1, axis=0) for r in range(m)], axis=1)
    return {"rank_freq": freq, "gt_rank_freq": gfreq, "mard": np.mean(np.abs(ra - rg), axis=1)}
