"""Stage `report`: `report/report.md` and its PNG figures, from the files earlier stages wrote.

Reads score/summary.json (required) and, when present, train_classifier/metrics.json,
explain/eval_set.npz + heatmaps.npz, and the figures data/examples.png, train_ddpm/samples.png,
explain/heatmaps.png and occlude/grid.png (copied beside the report). The run's configuration
(evaluation set size, RePaint schedule) is stated in the report. Only process 0 writes.
"""

from __future__ import annotations

import time

import ml_collections

from ibo_jax.evaluation import report


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.title = ""  # optional first line above the report's own title
    return c


def _plain(value):
    if isinstance(value, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
        return {k: _plain(value[k]) for k in value.keys()}
    return value


def run(ctx) -> dict:
    t0 = time.time()
    score_dir = ctx.input_dir("score")
    if ctx.process_index != 0:
        return {"skipped": "not process 0"}
    out = report.write_report(ctx.workdir, ctx.dir, config=_plain(ctx.config))
    del score_dir  # declared input; read through the work directory
    if ctx.cfg.title:
        path = ctx.dir / "report.md"
        from ibo_jax import io as ibo_io

        ibo_io.write_text(path, f"{ctx.cfg.title}\n\n" + path.read_text())
    out["seconds"] = round(time.time() - t0, 2)
    return out
