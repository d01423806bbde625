"""The benchmark grid: the study over data regimes x architectures x classifier seeds, shared
stages computed once, cells claimed by processes, and its aggregate (`configs/benchmark.py`).

    from ibo_jax import grid
    grid.run(config, "runs/benchmark")      # every cell, then aggregate/summary.json + report.md
"""

from ibo_jax.grid.cells import Cell, cells, default_config, run

__all__ = ["Cell", "cells", "default_config", "run"]
