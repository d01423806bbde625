"""Importance levels (1-D k-means on heatmap values) and the masks built from them.

`importance_levels(heat, k)` clusters each heatmap's pixel values with 1-D k-means (Lloyd's
algorithm, batched and jitted, deterministic initialization) and labels each pixel with its
cluster's rank by centroid: level 1 = highest centroid = most important, level L = least.
`progressive_masks(levels, n)` gives the nested deletion masks M1..Mn (docs/method.md, Pipeline):
Mi = levels 1..min(i, L-1), so the least important level is never removed.
`fraction_masks(heat, fractions)` gives the fixed-fraction variant (top q of pixels by value).

Degenerate heatmaps never crash:
- fewer than k distinct values: every distinct value is its own level (L < k levels);
- a constant heatmap: L = 1, every Mi is empty, `valid` is False (reason 'constant');
- a heatmap with NaN or inf: levels are all 0, L = 0, `valid` is False (reason 'nonfinite').

Initialization (choice): two deterministic starts, the data quantiles (j + 0.5) / k and evenly
spaced values over [min, max], each nudged to
distinct data values so that no two start equal (a heatmap with many tied zeros would otherwise
start with duplicate centroids and lose a cluster). Lloyd's iterations then run until the
partition no longer changes, as scikit-learn's `KMeans(init=..., n_init=1, tol=0)` does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

EXCLUSION_REASONS = ("nonfinite", "constant")


def _check_heat(heat) -> np.ndarray:
    heat = np.asarray(heat)
    if heat.ndim != 3:
        raise ValueError(f"heat: expected a [B, H, W] array of heatmaps, got shape {heat.shape}")
    if not np.issubdtype(heat.dtype, np.floating) and not np.issubdtype(heat.dtype, np.integer):
        raise ValueError(f"heat: expected a float array, got dtype {heat.dtype}")
    return heat.astype(np.float32)


def _init_centroids(uniq: jax.Array, n_distinct: jax.Array, c: jax.Array) -> jax.Array:
    """Distinct starting centroids from guesses c [k] ascending (maybe tied), on data values.

    uniq: sorted distinct values [P], +inf padded. Returns [k] ascending, inactive ones +inf;
    with n_distinct <= k each distinct value is a centroid.
    """
    p, k = uniq.shape[0], c.shape[0]
    c = uniq[jnp.clip(jnp.searchsorted(uniq, c, side="left"), 0, jnp.maximum(n_distinct - 1, 0))]

    def next_above(v):
        return uniq[jnp.clip(jnp.searchsorted(uniq, v, side="right"), 0, p - 1)]

    def next_below(v):
        return uniq[jnp.clip(jnp.searchsorted(uniq, v, side="left") - 1, 0, p - 1)]

    # Forward pass: strictly increasing (may run past the largest value -> +inf).
    cs = [c[0]]
    for j in range(1, k):
        above = jnp.where(jnp.searchsorted(uniq, cs[-1], side="right") < n_distinct,
                          next_above(cs[-1]), jnp.inf)
        cs.append(jnp.maximum(c[j], above))
    # Backward pass: pull overflowing centroids down below the next one.
    vmax = uniq[jnp.maximum(n_distinct - 1, 0)]
    cs[-1] = jnp.minimum(cs[-1], vmax)
    for j in range(k - 2, -1, -1):
        cs[j] = jnp.minimum(cs[j], next_below(cs[j + 1]))
    spread = jnp.stack(cs)
    # Few distinct values: the distinct values themselves, the rest inactive (+inf).
    few = jnp.where(jnp.arange(k) < n_distinct, uniq[jnp.minimum(jnp.arange(k), p - 1)], jnp.inf)
    return jnp.where(n_distinct <= k, few, spread)


def _assign(x: jax.Array, c: jax.Array) -> jax.Array:
    """Nearest centroid for ascending centroids c [k] (ties -> lower index, as argmin)."""
    mids = 0.5 * (c[:-1] + c[1:])  # [k-1]; inf where the upper centroid is inactive
    return jnp.sum(x[..., None] > mids, axis=-1).astype(jnp.int32)


def _lloyd(x: jax.Array, c0: jax.Array, k: int, max_iter: int, xs: jax.Array | None = None,
           prefix: jax.Array | None = None):
    """Lloyd's iterations from ascending centroids c0 [k] -> (labels [P], centroids, inertia).

    In 1-D every cluster is a run of the sorted values, so an iteration only needs the k - 1 cut
    points (binary search) and prefix sums: O(k log P) instead of O(k P). xs: sorted x;
    prefix: [P + 1] pairwise prefix sums of xs (computed if not given).
    """
    p = x.shape[0]
    if xs is None:
        xs = jnp.sort(x)
    if prefix is None:
        prefix = _prefix_sums(xs)
    active = jnp.isfinite(c0)

    def cuts(c):  # cluster j = sorted values [cut_j, cut_{j+1}); ties at a midpoint go down
        mids = 0.5 * (c[:-1] + c[1:])
        inner = jnp.searchsorted(xs, mids, side="right").astype(jnp.int32)
        return jnp.concatenate([jnp.zeros(1, jnp.int32), inner, jnp.full(1, p, jnp.int32)])

    def body(state):
        it, cut, c, _ = state
        counts = cut[1:] - cut[:-1]
        sums = prefix[cut[1:]] - prefix[cut[:-1]]
        c_new = jnp.where(active & (counts > 0), sums / jnp.maximum(counts, 1), c)
        c_new = jnp.sort(jnp.where(active, c_new, jnp.inf))  # an emptied cluster may fall out of order
        cut_new = cuts(c_new)
        return it + 1, cut_new, c_new, jnp.any(cut_new != cut)

    _, _, c, _ = jax.lax.while_loop(
        lambda s: (s[0] < max_iter) & s[3], body, (0, cuts(c0), c0, jnp.array(True))
    )
    labels = _assign(x, c)
    onehot = labels[:, None] == jnp.arange(k)[None, :]  # [P, k], once: exact means and inertia
    counts = jnp.sum(onehot, axis=0)
    means = jnp.sum(jnp.where(onehot, x[:, None], 0.0), axis=0) / jnp.maximum(counts, 1)
    inertia = jnp.sum((x - means[labels]) ** 2)
    return labels, c, inertia


def _prefix_sums(xs: jax.Array) -> jax.Array:
    """[P] -> [P + 1] prefix sums, tree-ordered (associative scan) to keep float32 error small."""
    return jnp.concatenate([jnp.zeros(1, xs.dtype), jax.lax.associative_scan(jnp.add, xs)])


def _kmeans_one(x: jax.Array, k: int, max_iter: int) -> tuple[jax.Array, jax.Array]:
    """1-D k-means of one flattened heatmap x [P] -> (labels int32 [P] ascending, centroids [k]).

    Two deterministic starts (data quantiles; evenly spaced values), the lower inertia wins.
    """
    p = x.shape[0]
    xs = jnp.sort(x)
    n_distinct = 1 + jnp.sum(xs[1:] > xs[:-1])
    uniq = jnp.unique(xs, size=p, fill_value=jnp.inf)  # [P] ascending, +inf padded
    quant = xs[jnp.clip(((jnp.arange(k) + 0.5) / k * p).astype(jnp.int32), 0, p - 1)]
    lin = xs[0] + (jnp.arange(k) + 0.5) / k * (xs[-1] - xs[0])
    c_q = _init_centroids(uniq, n_distinct, quant)
    c_l = _init_centroids(uniq, n_distinct, lin)
    prefix = _prefix_sums(xs)
    la, ca, ia = _lloyd(x, c_q, k, max_iter, xs, prefix)
    lb, cb, ib = _lloyd(x, c_l, k, max_iter, xs, prefix)
    first = ia <= ib
    return jnp.where(first, la, lb), jnp.where(first, ca, cb)


@functools.partial(jax.jit, static_argnames=("k", "max_iter"))
def _levels_batch(heat: jax.Array, k: int, max_iter: int):
    b = heat.shape[0]
    x = heat.reshape(b, -1)  # [B, P]
    finite = jnp.all(jnp.isfinite(x), axis=1)  # [B]
    x = jnp.where(finite[:, None], x, 0.0)
    labels, _ = jax.vmap(lambda v: _kmeans_one(v, k, max_iter))(x)  # [B, P] ascending cluster
    counts = jnp.sum(labels[:, :, None] == jnp.arange(k), axis=1)  # [B, k]
    nonempty = counts > 0
    # Level of cluster j = number of non-empty clusters at or above j (1 = highest centroid).
    rank_from_top = jnp.cumsum(nonempty[:, ::-1], axis=1)[:, ::-1]  # [B, k]
    levels = jnp.take_along_axis(rank_from_top, labels, axis=1)  # [B, P]
    n_levels = jnp.sum(nonempty, axis=1).astype(jnp.int32)
    levels = jnp.where(finite[:, None], levels, 0).astype(jnp.int8)
    n_levels = jnp.where(finite, n_levels, 0)
    return levels.reshape(heat.shape), n_levels


def importance_levels_info(
    heat, k: int = 5, *, max_iter: int = 300, chunk: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Importance levels with their count and validity.

    heat: [B, H, W] float (float16 is fine; computed in float32).
    Returns levels int8 [B, H, W] (1 = most important, 0 = excluded heatmap), n_levels int32 [B]
    (number of distinct levels L <= k; 0 = non-finite heatmap) and valid bool [B] (L >= 2, i.e.
    M4 is non-empty). Batches are padded to `chunk` so one program serves every batch size.
    """
    if not isinstance(k, (int, np.integer)) or k < 2 or k > 127:
        raise ValueError(f"k: expected an int in [2, 127] (number of importance levels), got {k!r}")
    heat = _check_heat(heat)
    b = heat.shape[0]
    levels = np.zeros(heat.shape, np.int8)
    n_levels = np.zeros((b,), np.int32)
    step = max(1, min(chunk, b))
    for s in range(0, b, step):
        part = heat[s : s + step]
        n = part.shape[0]
        if n < step:
            part = np.concatenate([part, np.zeros((step - n,) + part.shape[1:], np.float32)])
        lv, nl = _levels_batch(jnp.asarray(part), int(k), int(max_iter))
        levels[s : s + n] = np.asarray(lv)[:n]
        n_levels[s : s + n] = np.asarray(nl)[:n]
    return levels, n_levels, n_levels >= 2


def importance_levels(heat, k: int = 5, **options) -> np.ndarray:
    """[B, H, W] heatmaps -> int8 levels [B, H, W], 1 = most important ... L <= k least."""
    return importance_levels_info(heat, k, **options)[0]


def exclusion_counts(n_levels) -> dict[str, int]:
    """Counts of excluded heatmaps by reason: 'nonfinite' (L = 0) and 'constant' (L = 1)."""
    n_levels = np.asarray(n_levels)
    return {"nonfinite": int(np.sum(n_levels == 0)), "constant": int(np.sum(n_levels == 1))}


def progressive_masks(levels, n: int = 4, n_levels=None) -> np.ndarray:
    """Nested deletion masks: [B, H, W] levels -> [B, n, H, W] bool, True = removed.

    Mi = levels 1..min(i, L - 1); L is `n_levels` [B] if given, else each map's largest level.
    Level L is never removed; level 0 (an excluded heatmap) never is either.
    """
    levels = np.asarray(levels)
    if levels.ndim != 3:
        raise ValueError(f"levels: expected [B, H, W] ints, got shape {levels.shape}")
    if not np.issubdtype(levels.dtype, np.integer):
        raise ValueError(f"levels: expected an integer array, got dtype {levels.dtype}")
    if n < 1:
        raise ValueError(f"n: expected >= 1 masks, got {n}")
    if n_levels is None:
        n_levels = levels.reshape(levels.shape[0], -1).max(axis=1, initial=0)
    n_levels = np.asarray(n_levels).astype(np.int32).reshape(-1)
    if n_levels.shape[0] != levels.shape[0]:
        raise ValueError(f"n_levels: expected [{levels.shape[0]}], got {n_levels.shape}")
    top = np.minimum(np.arange(1, n + 1)[None, :], n_levels[:, None] - 1)  # [B, n]
    lv = levels[:, None].astype(np.int32)  # [B, 1, H, W]
    return (lv >= 1) & (lv <= top[:, :, None, None])


def fraction_masks(heat, fractions) -> np.ndarray:
    """Fixed-fraction masks: the top round(q * H * W) pixels by heat value for each q.

    heat [B, H, W], fractions [Q] in [0, 1] -> bool [B, Q, H, W] (True = removed). Ties are
    broken by pixel order (row-major), so each mask holds exactly that many pixels and the masks
    are nested. Non-finite heat values count as least important.
    """
    heat = _check_heat(heat)
    fractions = np.asarray(fractions, np.float64).reshape(-1)
    if np.any((fractions < 0) | (fractions > 1)) or not np.all(np.isfinite(fractions)):
        raise ValueError(f"fractions: expected values in [0, 1], got {fractions.tolist()}")
    b, h, w = heat.shape
    x = np.where(np.isfinite(heat), heat, -np.inf).reshape(b, -1)
    order = np.argsort(-x, axis=1, kind="stable")  # [B, P] most important first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(h * w)[None, :].repeat(b, 0), axis=1)
    counts = np.round(fractions * h * w).astype(np.int64)  # [Q]
    masks = rank[:, None, :] < counts[None, :, None]  # [B, Q, P]
    return masks.reshape(b, len(fractions), h, w)
