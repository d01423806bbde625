"""Stage `report`: `report/report.md` and its PNG figures, from the files its inputs wrote.

Reads, through `ibo_jax.artifacts`: score's summary (required), the classifier's metrics, the
evaluation set and heatmaps, the data set's description (what the GT masks are) and, when the
config has those stages, the summaries of ddpm_check and the trust checks (the report then opens
with "Can this verdict be trusted?"; ROAR / KAR's rows join its known-answer table when the `roar`
stage ran) and the sampler sweep; the figures other stages drew
(`artifacts.FIGURES`) are copied beside the report. The run's configuration
(evaluation set size, RePaint schedule) is stated in the report. Only process 0 writes.
"""

from __future__ import annotations

import time

import ml_collections

from ibo_jax import artifacts
from ibo_jax import io as ibo_io
from ibo_jax.reporting import report


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.title = ""  # optional first line above the report's own title
    return c


def run(ctx) -> dict:
    t0 = time.time()
    if ctx.process_index != 0:
        return {"skipped": "not process 0"}
    inputs = ctx.inputs  # the declared inputs the config has
    optional = {stage: artifacts.read_summary(inputs[stage], required=False) if stage in inputs else None
                for stage in ("ddpm_check", "trust", "roar")}
    data_dir = ctx.input_dir("data")
    out = report.write_report(
        ctx.dir, summary=artifacts.read_summary(ctx.input_dir("score")),
        classifier_metrics=artifacts.read_json(artifacts.CLASSIFIER_METRICS, ctx.input_dir("train_classifier"),
                                               required=False),
        ddpm_check=optional["ddpm_check"], trust=optional["trust"], roar=optional["roar"],
        external=(artifacts.read_summary(ctx.input_dir("explain"), required=False) or {}).get("external"),
        sweep=artifacts.read_json(artifacts.SWEEP_JSON, inputs["repaint_sweep"], required=False)
        if "repaint_sweep" in inputs else None,
        slides=artifacts.read_json(artifacts.SLIDES, data_dir, required=False),
        explain=artifacts.read_explained(ctx.input_dir("explain"), need=("levels",)),
        upstream_figures=artifacts.figures(inputs),
        ground_truth=report.ground_truth_kind(artifacts.read_json(artifacts.DATASET, data_dir, required=False)),
        config=ibo_io.plain(ctx.config))
    if ctx.cfg.title:
        path = ctx.dir / "report.md"
        ibo_io.write_text(path, f"{ctx.cfg.title}\n\n" + path.read_text())
    out["seconds"] = round(time.time() - t0, 2)
    return out
