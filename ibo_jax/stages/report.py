"""Stage `report`: `report/report.md` and its PNG figures, from the files its inputs wrote.

Reads score/summary.json (required), train_classifier/metrics.json, explain/eval_set.npz +
heatmaps.npz, data/dataset.json (what the GT masks are) and, when the config has those stages,
ddpm_check/summary.json, meta/summary.json (the report then opens with "Can this verdict be
trusted?") and repaint_sweep/sweep.json; figures other stages drew
(`evaluation.report.UPSTREAM_FIGURES`) are copied beside the report. The run's configuration
(evaluation set size, RePaint schedule) is stated in the report. Only process 0 writes.
"""

from __future__ import annotations

import time
from pathlib import Path

import ml_collections

from ibo_jax import io as ibo_io
from ibo_jax.evaluation import report


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.title = ""  # optional first line above the report's own title
    return c


def _json(path: Path):
    return ibo_io.read_json(path) if path.is_file() else None


def run(ctx) -> dict:
    t0 = time.time()
    if ctx.process_index != 0:
        return {"skipped": "not process 0"}
    inputs = ctx.inputs  # the declared inputs the config has
    summary_path = ctx.input_dir("score") / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path}: missing; run the score stage first")
    explain_dir = ctx.input_dir("explain")
    explain = None
    if (explain_dir / "eval_set.npz").is_file() and (explain_dir / "heatmaps.npz").is_file():
        explain = (ibo_io.read_npz(explain_dir / "eval_set.npz"), ibo_io.read_npz(explain_dir / "heatmaps.npz"))
    figures = [(inputs[stage] / name, cap) for stage, name, cap in report.UPSTREAM_FIGURES if stage in inputs]
    out = report.write_report(
        ctx.dir, summary=ibo_io.read_json(summary_path),
        classifier_metrics=_json(ctx.input_dir("train_classifier") / "metrics.json"),
        ddpm_check=_json(inputs["ddpm_check"] / "summary.json") if "ddpm_check" in inputs else None,
        sweep=_json(inputs["repaint_sweep"] / "sweep.json") if "repaint_sweep" in inputs else None,
        meta=_json(inputs["meta"] / "summary.json") if "meta" in inputs else None,
        slides=_json(ctx.input_dir("data") / "slides" / "slides.json"),
        explain=explain, upstream_figures=figures,
        ground_truth=report.ground_truth_kind(ctx.input_dir("data") / "dataset.json"), config=ibo_io.plain(ctx.config))
    if ctx.cfg.title:
        path = ctx.dir / "report.md"
        ibo_io.write_text(path, f"{ctx.cfg.title}\n\n" + path.read_text())
    out["seconds"] = round(time.time() - t0, 2)
    return out
