"""Mask geometry, computed once: which (image, method) pairs are scored, how large every curve's
masks are, and how well the combined mask overlaps the annotation (the plausibility GT).

    geo = geometry.compute(heat, levels, n_levels, cam_valid, tumor_mask,
                           curves=(curve_registry.PRIMARY, curve_registry.KNOWN_ANSWER), n_masks=4, fractions=(0.1, 0.25, 0.5))
    geometry.save(path, geo)      # the occlude stage writes occlude/masks.npz
    geo = geometry.load(path)     # the score stage reads it; areas(geo, curve_registry.PRIMARY) -> [N, M, n]

Pixel counts are stored (int32) and divided by H*W on reading, so areas are exact float64 on every
image size. `valid` [N, M]: the heatmap is usable (CAM map not degenerate, >= 2 importance levels)
and its combined mask M_n is not empty; `gt_iou` is NaN where not valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ibo_jax import io as ibo_io
from ibo_jax.evaluation import curves as curve_registry
from ibo_jax.evaluation import levels as lv
from ibo_jax.evaluation import ranking


def curve_masks(curve: str, heat: np.ndarray, levels: np.ndarray, n_levels: np.ndarray, n_masks: int,
                fractions: Sequence[float]) -> np.ndarray:
    """Remove-masks of one curve for heatmaps [B, H, W] -> bool [B, n, H, W]."""
    return curve_registry.get(curve).masks(heat, levels, n_levels, n_masks, fractions)


def morf_masks(levels: np.ndarray, n_levels: np.ndarray | None, n_masks: int) -> np.ndarray:
    """The study's progressive masks M_1..M_n for levels [N, M, H, W] -> bool [N, M, n, H, W]."""
    n, m, h, w = levels.shape
    flat = None if n_levels is None else np.asarray(n_levels).reshape(-1)
    return lv.progressive_masks(levels.reshape(n * m, h, w), n=n_masks, n_levels=flat).reshape(n, m, n_masks, h, w)


def compute(heat: np.ndarray, levels: np.ndarray, n_levels: np.ndarray | None, cam_valid: np.ndarray | None,
            tumor_mask: np.ndarray, *, curves: Sequence[str] = (curve_registry.PRIMARY,), n_masks: int = 4,
            fractions: Sequence[float] = (), keep_masks: bool = False) -> dict:
    """Geometry of every curve for heat / levels [N, M, H, W] and tumor masks [N, H, W].

    Returns counts {curve: int32 [N, M, n]}, hw, valid bool [N, M], gt_iou [N, M], n_levels int32
    [N, M] and excluded {'invalid_heatmap', 'empty_m4'} counts; with keep_masks also morf_masks
    bool [N, M, n, H, W]. `heat` is only read for curves other than the primary (MoRF) one.
    """
    n, m, h, w = levels.shape
    if n_levels is None:
        n_levels = levels.reshape(n, m, -1).max(-1)
    n_levels = np.asarray(n_levels, np.int32).reshape(n, m)
    cam_valid = np.ones((n, m), bool) if cam_valid is None else np.asarray(cam_valid, bool).reshape(n, m)
    morf = morf_masks(levels, n_levels, n_masks)  # [N, M, n, H, W]
    empty = ~morf[:, :, -1].any(axis=(-2, -1))
    valid = cam_valid & ~empty
    gt_iou = np.where(valid, ranking.iou(morf[:, :, -1], np.asarray(tumor_mask, bool)[:, None]), np.nan)
    counts = {}
    for name in dict.fromkeys((curve_registry.PRIMARY, *curves)):
        if name == curve_registry.PRIMARY:
            counts[name] = morf.sum(axis=(-2, -1)).astype(np.int32)
            continue
        npts = curve_registry.get(name).n_points(n_masks, fractions)
        c = np.zeros((n, m, npts), np.int32)
        for p in range(n):
            c[p] = curve_masks(name, heat[p], levels[p], n_levels[p], n_masks, fractions).sum(axis=(-2, -1))
        counts[name] = c
    out = {"counts": counts, "hw": h * w, "valid": valid, "gt_iou": gt_iou, "n_levels": n_levels,
           "n_masks": int(n_masks), "fractions": [float(q) for q in fractions],
           "excluded": {"invalid_heatmap": int(np.sum(~cam_valid)), "empty_m4": int(np.sum(cam_valid & empty))}}
    if keep_masks:
        out["morf_masks"] = morf
    return out


def areas(geo: dict, curve: str) -> np.ndarray:
    """|mask| / HW of every point of a curve: float64 [N, M, n]."""
    if curve not in geo["counts"]:
        raise KeyError(f"geometry has no curve {curve!r} (has {sorted(geo['counts'])})")
    return geo["counts"][curve].astype(np.float64) / float(geo["hw"])


def all_areas(geo: dict) -> dict[str, np.ndarray]:
    return {c: areas(geo, c) for c in geo["counts"]}


def save(path: str | Path, geo: dict, *, methods: Sequence[str]) -> None:
    arrays = {"methods": np.asarray(list(methods)), "hw": np.int64(geo["hw"]), "valid": geo["valid"],
              "gt_iou": geo["gt_iou"], "n_levels": geo["n_levels"], "n_masks": np.int32(geo["n_masks"]),
              "fractions": np.asarray(geo["fractions"], np.float64),
              "excluded_invalid_heatmap": np.int64(geo["excluded"]["invalid_heatmap"]),
              "excluded_empty_m4": np.int64(geo["excluded"]["empty_m4"])}
    arrays.update({f"counts_{c}": v for c, v in geo["counts"].items()})
    ibo_io.write_npz(path, arrays)


def load(path: str | Path) -> dict:
    z = ibo_io.read_npz(path)
    need = ("methods", "hw", "valid", "gt_iou", "n_levels", "n_masks", "counts_morf")
    missing = [k for k in need if k not in z]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing} (written by an older occlude stage? rerun it)")
    return {"methods": [str(x) for x in z["methods"]], "hw": int(z["hw"]), "valid": z["valid"].astype(bool),
            "gt_iou": z["gt_iou"], "n_levels": z["n_levels"], "n_masks": int(z["n_masks"]),
            "fractions": z["fractions"].tolist(),
            "counts": {k[len("counts_"):]: v for k, v in z.items() if k.startswith("counts_")},
            "excluded": {"invalid_heatmap": int(z["excluded_invalid_heatmap"]), "empty_m4": int(z["excluded_empty_m4"])}}
