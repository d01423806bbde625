"""Turning heatmaps into a verdict: importance levels, deletion curves, realism, rankings, report.

    levels = evaluation.importance_levels(heat, k=5)          # [B, H, W] int8, 1 = most important
    masks  = evaluation.progressive_masks(levels, n=4)        # [B, n, H, W] bool, nested
    auc    = evaluation.deletion_auc(probs, fractions)        # trapezoid, lower = better
    ranks  = evaluation.rank(scores_by_method, ascending=True)  # name -> 1..N, ties: cam.METHODS order
    value  = evaluation.mard(ranks_a, ranks_b)                # mean absolute rank difference

The scoring library: `curves` (the curve registry), `geometry` (mask geometry, written once by the
occlude stage), `study` (dense score arrays, summaries, the tidy table), `scoring` (re-predict and
summarize a run), `predict`, `explained` (the explain stage's outputs), `ddpm_check`, `figures`.
LPIPS (`evaluation.lpips`) and the report (`evaluation.report`) are submodules imported on use.
"""

from ibo_jax.evaluation.curves import CURVES
from ibo_jax.evaluation.deletion import (
    curve_auc,
    deletion_auc,
    insertion_masks,
    lerf_masks,
    mask_fractions,
    mean_curve,
)
from ibo_jax.evaluation.levels import (
    exclusion_counts,
    fraction_masks,
    importance_levels,
    importance_levels_info,
    progressive_masks,
)
from ibo_jax.evaluation.ranking import (
    CONTROLS,
    agreement,
    bootstrap_mean_ci,
    bootstrap_rankings,
    exact_match_share,
    iou,
    kendall,
    mard,
    paired_mard_test,
    rank,
    spearman,
)
from ibo_jax.evaluation.realism import kid, make_feature_fn, pair_metrics, psnr, ssim

#: direction of each curve variant: True when a lower area means a better explanation.
LOWER_IS_BETTER = {name: c.lower_is_better for name, c in CURVES.items()}

__all__ = [
    "CONTROLS",
    "CURVES",
    "LOWER_IS_BETTER",
    "agreement",
    "bootstrap_mean_ci",
    "bootstrap_rankings",
    "curve_auc",
    "deletion_auc",
    "exact_match_share",
    "exclusion_counts",
    "fraction_masks",
    "importance_levels",
    "importance_levels_info",
    "insertion_masks",
    "iou",
    "kendall",
    "kid",
    "lerf_masks",
    "make_feature_fn",
    "mard",
    "mask_fractions",
    "mean_curve",
    "pair_metrics",
    "paired_mard_test",
    "progressive_masks",
    "psnr",
    "rank",
    "spearman",
    "ssim",
]
