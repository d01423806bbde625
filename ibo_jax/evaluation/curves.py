"""The curve registry: which pixels each point of a curve removes, where it sits on the x axis,
which direction of its area is better, and how the report names it.

    curve = CURVES["fixed"]
    masks = curve.masks(heat, levels, n_levels, n_masks=4, fractions=(0.1, 0.25, 0.5))  # [B, n, H, W]
    x = curve.x({"morf": areas_morf, "fixed": areas_fixed}, fractions, n_points)      # [N, M, 1, n+1]

Adding a curve is one `Curve(...)` here: the occlude stage draws its masks, the score stage its
x positions and AUC direction, the report its section and figure, all from this table. Which
curve is the study's (`PRIMARY`: realism is measured on it, its ranking against the IoU ranking is
the plausibility verdict, the power check reads it), which carries the known answer of the graded
controls (`KNOWN_ANSWER`), which curves the trust checks rank (`ranked`) and which pairs SRG
combines (`srg_partner`) are properties of the entries, not literals elsewhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ibo_jax.evaluation import deletion
from ibo_jax.evaluation import levels as lv

MaskFn = Callable[[np.ndarray, np.ndarray, np.ndarray, int, Sequence[float]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Curve:
    """One deletion-curve variant.

    masks(heat [B,H,W], levels [B,H,W], n_levels [B], n_masks, fractions) -> bool [B, n, H, W];
    n_points(n_masks, fractions) -> n (occluded images per heatmap, the original not counted);
    x(areas {curve: [N, M, n]}, fractions, n) -> [N, M or 1, 1, n+1] with point 0 the original;
    first: index of the curve's first point (insertion: 1, the fully occluded image);
    area_is_x: the tidy table's `area` column is x (the fixed fraction q) instead of the mask area.
    """

    name: str
    title: str
    caption: str
    x_label: str
    lower_is_better: bool
    masks: MaskFn
    n_points: Callable[[int, Sequence[float]], int]
    x: Callable[[Mapping[str, np.ndarray], Sequence[float], int], np.ndarray]
    first: int = 0
    area_is_x: bool = False
    uses_fractions: bool = False
    primary: bool = False  # the study's curve (exactly one)
    known_answer: bool = False  # the graded controls' known order holds on it (exactly one)
    ranked: bool = False  # the trust checks compare strategies' rankings on it
    srg_partner: str | None = None  # the LeRF curve SRG pairs with this MoRF-type curve
    figure: str | None = None  # the report's deletion-curve figure for it
    figure_caption: str = ""


def _own_x(name: str):
    """x_i = |M_i| / |M_n| of the curve's own masks, x_0 = 0 (the study's MoRF convention)."""
    def x(areas, fractions, n):
        fr, _ = deletion.mask_fractions(np.asarray(areas[name], np.float64)[..., :n])
        return fr[:, :, None, :]

    return x


def _insertion_x(areas, fractions, n):
    """Point 0 is the original (x = 1, kept for the tidy table but not part of the curve), point 1
    has everything removed (x = 0), point i+1 has M_i back (x = |M_i| / |M_n|)."""
    fr, _ = deletion.mask_fractions(np.asarray(areas["morf"], np.float64)[..., : n - 1])
    return np.concatenate([np.ones(fr.shape[:-1] + (1,)), fr], -1)[:, :, None, :]


def _fixed_x(areas, fractions, n):
    q = fractions
    q = np.linspace(0, 1, n + 1)[1:] if q is None or len(q) != n else np.asarray(q, np.float64)
    return np.concatenate([[0.0], q])[None, None, None, :]


def _morf_masks(heat, levels, n_levels, n_masks, fractions):
    return lv.progressive_masks(levels, n_masks, n_levels)


def _fixed_masks(heat, levels, n_levels, n_masks, fractions):
    return lv.fraction_masks(heat, fractions)


def _fixed_lerf_masks(heat, levels, n_levels, n_masks, fractions):
    return lv.fraction_masks(-np.asarray(heat, np.float32), fractions)  # the bottom q by heat value


def _lerf_masks(heat, levels, n_levels, n_masks, fractions):
    return deletion.lerf_masks(levels, n_masks)


def _insertion_masks(heat, levels, n_levels, n_masks, fractions):
    return deletion.insertion_masks(lv.progressive_masks(levels, n_masks, n_levels))


CURVES: dict[str, Curve] = {c.name: c for c in (
    Curve("morf", "Deletion AUC per method and strategy (MoRF, x = |Mi|/|M4|)",
          "Lower = the method's most important pixels really drove the prediction.",
          "removed fraction p_i = |Mi|/|M4|", True, _morf_masks, lambda n, q: n, _own_x("morf"),
          primary=True, ranked=True, figure="deletion_curves.png",
          figure_caption="Mean deletion curves per strategy (dashed: controls)."),
    Curve("fixed", "Fixed-fraction deletion AUC (top q of the pixels, same q for every method)",
          "Lower = the method's most important pixels really drove the prediction.",
          "removed fraction q", True, _fixed_masks, lambda n, q: len(q), _fixed_x, area_is_x=True,
          uses_fractions=True, known_answer=True, ranked=True, srg_partner="fixed_lerf",
          figure="deletion_curves_fixed.png",
          figure_caption="Fixed-fraction deletion curves (same q grid for every method)."),
    Curve("fixed_lerf", "Fixed-fraction LeRF AUC (the least important q of the pixels removed first)",
          "Higher = removing the pixels the method calls least important leaves the prediction intact.",
          "removed fraction q (least important first)", False, _fixed_lerf_masks, lambda n, q: len(q), _fixed_x,
          area_is_x=True, uses_fractions=True),
    Curve("lerf", "LeRF deletion AUC (least relevant levels removed first)",
          "Higher = removing the pixels the method calls least important leaves the prediction intact.",
          "removed fraction (least relevant first)", False, _lerf_masks, lambda n, q: n, _own_x("lerf")),
    Curve("insertion", "Insertion AUC (from a fully occluded image, M1..M4 put back)",
          "Higher = putting the method's most important pixels back first restores the prediction fastest.",
          "restored fraction |Mi|/|M4|", False, _insertion_masks, lambda n, q: n + 1, _insertion_x, first=1),
)}


def _one(prop: str) -> str:
    found = [c.name for c in CURVES.values() if getattr(c, prop)]
    if len(found) != 1:
        raise RuntimeError(f"curve registry: exactly one curve must be {prop}, found {found}")
    return found[0]


PRIMARY: str = _one("primary")  # the study's MoRF curve
KNOWN_ANSWER: str = _one("known_answer")  # the fixed-fraction curve
RANKED: tuple[str, ...] = tuple(c.name for c in CURVES.values() if c.ranked)


def get(name: str) -> Curve:
    if name not in CURVES:
        raise ValueError(f"unknown curve {name!r}; expected one of {tuple(CURVES)}")
    return CURVES[name]
