"""Deletion curves and their areas: how fast p(tumor) falls as the most important pixels go.

The study's curve (docs/method.md, Pipeline): x_i = p_i = |M_i| / |M_n| with p_0 = 0 (the original
image) and p_n = 1, y_i = p(tumor) of the image with M_i removed, area by the trapezoid rule.
Lower area = better explanation (MoRF). Because x is normalized by each method's own |M_n|, a
method with larger masks can win; the fixed-fraction curve (top q of the pixels by heatmap value,
the same q grid for every method) and the mask area |M_i| / HW are reported beside it.

Variants: LeRF (least relevant first: higher area = better), insertion (start from the fully
occluded image and put the most important pixels back first: higher area = better), and any of
them on the logit instead of the probability (p(tumor) saturates near 1).
All functions here are numpy: they run on small score tables, not in hot loops. The fixed-fraction
masks themselves are `levels.fraction_masks` (re-exported by `ibo_jax.evaluation`).
"""

from __future__ import annotations

import numpy as np


def curve_auc(values: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Trapezoid area under y = values over x = fractions along the last axis.

    values: [..., n+1]; fractions: [..., n+1] or [n+1] (broadcast). NaN in, NaN out.
    """
    y = np.asarray(values, np.float64)
    x = np.broadcast_to(np.asarray(fractions, np.float64), y.shape)
    if y.ndim == 0 or y.shape[-1] < 2:
        raise ValueError(f"values: need at least 2 points on the last axis, got shape {y.shape}")
    dx = np.diff(x, axis=-1)  # [..., n]
    if np.any(dx[np.isfinite(dx)] < -1e-9):
        raise ValueError("fractions: must be non-decreasing along the last axis (nested masks)")
    return np.sum(dx * (y[..., 1:] + y[..., :-1]) * 0.5, axis=-1)


def check_probs(probs: np.ndarray, *, name: str = "probs") -> np.ndarray:
    """Returns probs as float64 or raises if any finite value lies outside [0, 1]."""
    p = np.asarray(probs, np.float64)
    finite = p[np.isfinite(p)]
    if finite.size and (finite.min() < -1e-6 or finite.max() > 1 + 1e-6):
        raise ValueError(
            f"{name}: probabilities must lie in [0, 1], got range [{finite.min():.4g}, {finite.max():.4g}] "
            "(pass softmax outputs, not logits; use curve_auc for logits)"
        )
    return p


def deletion_auc(probs: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Area under the deletion curve (trapezoid). Lower = better explanation.

    probs: [..., n+1] p(tumor) for the original (index 0) then M_1..M_n removed;
    fractions: [..., n+1] or [n+1], p_0 = 0 ... p_n = 1 (see `mask_fractions`).
    Returns [...] float64 (a scalar array for a single curve).
    """
    p = check_probs(probs)
    x = np.asarray(fractions, np.float64)
    if x.shape[-1] != p.shape[-1]:
        raise ValueError(
            f"fractions: last axis must match probs ({p.shape[-1]} points), got shape {x.shape}"
        )
    return curve_auc(p, x)


def mask_fractions(areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x positions p_i = |M_i| / |M_n| of the study's curve, with p_0 = 0 prepended.

    areas: [..., n] pixel counts (or area fractions) of the nested masks M_1..M_n.
    Returns (fractions [..., n+1], valid [...]); valid is False where M_n is empty (the patch is
    excluded for that method: its curve is undefined) and those fractions are NaN.
    """
    a = np.asarray(areas, np.float64)
    if a.ndim == 0 or a.shape[-1] < 1:
        raise ValueError(f"areas: expected [..., n] mask sizes, got shape {a.shape}")
    if np.any(np.diff(a, axis=-1) < 0):
        raise ValueError("areas: masks must be nested (|M_1| <= ... <= |M_n|)")
    last = a[..., -1:]
    valid = last[..., 0] > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(last > 0, a / np.where(last > 0, last, 1.0), np.nan)
    zeros = np.zeros(a.shape[:-1] + (1,), np.float64)
    return np.concatenate([zeros, frac], axis=-1), valid


def lerf_masks(levels: np.ndarray, n: int = 4) -> np.ndarray:
    """Least-relevant-first masks: remove the least important level first, then the next ...

    levels: int [B, H, W], 1 = most important ... L = least (0 or negative = invalid pixel).
    Mask i removes the i least important levels present in that image, capped at L - 1 so level 1
    is never removed (mirror of the MoRF convention). Returns bool [B, n, H, W], nested.
    """
    lv = np.asarray(levels)
    if lv.ndim != 3:
        raise ValueError(f"levels: expected [B, H, W], got shape {lv.shape}")
    top = lv.reshape(lv.shape[0], -1).max(axis=1)  # [B] number of levels L
    out = np.zeros((lv.shape[0], n) + lv.shape[1:], bool)
    for i in range(1, n + 1):
        keep_above = np.maximum(top - np.minimum(i, top - 1), 1)  # [B] remove levels > this
        out[:, i - 1] = (lv > keep_above[:, None, None]) & (top[:, None, None] > 1)
    return out


def insertion_masks(masks: np.ndarray) -> np.ndarray:
    """Remove-masks of the insertion curve from nested MoRF masks M_1..M_n.

    Point 0 removes everything, point i removes the complement of M_i (M_i's pixels are back),
    the last point (M_n back) is followed by the original image if the caller appends it.
    masks: bool [B, n, H, W] -> bool [B, n+1, H, W].
    """
    m = np.asarray(masks, bool)
    if m.ndim != 4:
        raise ValueError(f"masks: expected [B, n, H, W], got shape {m.shape}")
    everything = np.ones((m.shape[0], 1) + m.shape[2:], bool)
    return np.concatenate([everything, ~m], axis=1)


def mean_curve(values: np.ndarray, fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean curve over examples for a figure: mean x and mean y at each point, ignoring NaN rows.

    values, fractions: [P, n+1]. Returns (x [n+1], y [n+1]).
    """
    y = np.asarray(values, np.float64)
    x = np.broadcast_to(np.asarray(fractions, np.float64), y.shape)
    ok = np.all(np.isfinite(y), axis=-1) & np.all(np.isfinite(x), axis=-1)
    if not ok.any():
        n = y.shape[-1]
        return np.full(n, np.nan), np.full(n, np.nan)
    return x[ok].mean(axis=0), y[ok].mean(axis=0)
