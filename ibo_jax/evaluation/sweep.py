"""Deprecated: the sampler sweep moved to `ibo_jax.generator.sweep` (and `generator.sweep_inputs`);
`Setting` is `ibo_jax.repaint.Setting`. The old names stay importable from here."""

import warnings

from ibo_jax.generator.sweep import (
    NONINFERIORITY,
    _boot_kid,
    fill_quality,
    noninferior,
    pareto_front,
    parse_grid,
    reference_quality,
)
from ibo_jax.generator.sweep_inputs import box_masks
from ibo_jax.repaint.setting import Setting
from ibo_jax.stats import finite_mean_ci as _boot_mean

warnings.warn("ibo_jax.evaluation.sweep is deprecated: use ibo_jax.generator.sweep (Setting: ibo_jax.repaint.Setting)",
              DeprecationWarning, stacklevel=2)

__all__ = ["NONINFERIORITY", "Setting", "_boot_kid", "_boot_mean", "box_masks", "fill_quality", "noninferior",
           "pareto_front", "parse_grid", "reference_quality"]
