"""Stage `repaint_sweep`: inpainting samplers and their settings, cost against quality.

Inputs: `data` (patches of one split), `train_ddpm` (the EMA epsilon model), `train_classifier`
(re-prediction, KID features) and, for the rank agreement, `explain` (evaluation set, levels).

A grid entry is (t_T, jump_length, jump_n_sample) for RePaint or (sampler, t_T, jump_length,
jump_n_sample[, eta]) for any of `repaint.SAMPLERS` (`generator.sweep.parse_grid`: the same value as
`occlude.ibo.setting`). Per setting,
with the same images, masks and keys for every setting (common random numbers):
- **cost**: network calls and undo steps per inpainting (exact) and seconds (a first pass and a
  second, compiled one: every setting of one image shape shares the sampler's program);
- **box masks** (a random square per image, `mask_fraction` of the area): SSIM, PSNR (and LPIPS
  with `lpips_alexnet_weights`) against the originals; on synthetic data also against the
  counterfactual box (the twin inside the box): KID in the classifier's features, SSIM inside the
  box, hematoxylin share inside the box against the twins' 5-95% range;
- **residual evidence** (`residual`): the whole annotated region of every tumor image filled:
  p(tumor) left (against the twins'), hematoxylin share inside the region;
- **rank agreement** (`rank_images` > 0): every ranked method's MoRF masks M1..Mn on the first
  evaluation patches, re-predicted; MARD of the CAM ranking against the IoU ranking and, with twins,
  against the counterfactual ranking (its bootstrap interval; paired tests between settings).
With `reference` set to one grid entry, every setting is marked non-inferior or not against it
(`generator.sweep.noninferior`).

Outputs: `sweep.csv` (one row per setting; columns include sampler, network_calls, seconds),
`sweep.json` (rows, rankings, paired tests, the reference and the Pareto front),
`cost_quality.png`, per setting `chunks/<setting>.json` + `.npz` (resume).

The work is library code (`ibo_jax.generator.sweep`, `generator.sweep_inputs`); this stage reads
its inputs, turns the config into typed arguments, resumes per setting and writes the files.
"""

from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np

from ibo_jax import artifacts
from ibo_jax.generator import sweep as S
from ibo_jax.generator.sweep_inputs import SweepInputs, rank_setup
from ibo_jax.io import write_json, write_npz, write_text

COLUMNS = S.COLUMNS


def default_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.grid = ((10, 1, 1), (25, 1, 1), (25, 5, 2), (25, 5, 4))  # see generator.sweep.parse_grid
    cfg.reference = ()  # one grid entry: every setting is tested for non-inferiority against it
    cfg.split = "test"
    cfg.label = 1  # tumor patches, as in the study's evaluation set; -1 = any
    cfg.n_images = 8
    cfg.mask_fraction = 0.25
    cfg.residual = True  # also fill the whole annotated region of every tumor image
    cfg.n_draws = 1
    cfg.batch_size = 8
    cfg.eta = -1.0  # < 0: each sampler's default eta; >= 0 for settings that give none
    cfg.bf16 = False
    cfg.warm_timing = True  # time the first chunk again after compiling (a second run of it)
    cfg.lpips_alexnet_weights = ""  # torchvision AlexNet state dict (as score.lpips_alexnet_weights); "": no LPIPS
    cfg.lpips_heads = ""  # as score.lpips_heads
    cfg.rank_images = 8  # evaluation patches for the rank agreement (0: none; -1: all)
    cfg.n_masks = 4
    cfg.n_boot = 500
    cfg.classifier_batch_size = 32
    return cfg


def run(ctx) -> dict:
    from ibo_jax.evaluation.predict import make_predict_fn
    from ibo_jax.models import loaders

    cfg = ctx.cfg
    settings = S.parse_grid(cfg.grid)
    reference = S.parse_grid([cfg.reference], "repaint_sweep.reference")[0] if len(cfg.reference) else None
    if reference is not None and reference.name not in [s.name for s in settings]:
        raise ValueError(f"repaint_sweep.reference: {reference.name} is not one of the grid's settings")
    predict = make_predict_fn(loaders.load_classifier(ctx.input_dir("train_classifier")),
                              tumor_class=ctx.tumor_class, batch_size=int(cfg.classifier_batch_size))
    seed = int(ctx.config.seed)
    inputs = SweepInputs(ctx.input_dir("data"), predict, split=str(cfg.split),
                         label=None if cfg.label < 0 else int(cfg.label), n_images=int(cfg.n_images),
                         mask_fraction=float(cfg.mask_fraction), residual=bool(cfg.residual), seed=seed, key=ctx.key)
    eps_model = loaders.load_eps_model(ctx.input_dir("train_ddpm"), dtype=jax.numpy.bfloat16 if cfg.bf16 else None)
    lpips_fn = None
    if cfg.lpips_alexnet_weights:
        from ibo_jax.models.lpips import load_lpips, make_lpips_fn

        lpips_fn = make_lpips_fn(load_lpips(cfg.lpips_alexnet_weights, cfg.get("lpips_heads", "")))
    setup = None
    if int(cfg.rank_images) != 0:
        setup = rank_setup(ctx.input_dir("explain"), predict, n_images=int(cfg.rank_images),
                           n_masks=int(cfg.n_masks), n_draws=int(cfg.n_draws), key=ctx.key)
    options = dict(n_draws=int(cfg.n_draws), batch_size=int(cfg.batch_size),
                   eta=None if float(cfg.eta) < 0 else float(cfg.eta), warm_timing=bool(cfg.warm_timing),
                   n_boot=int(cfg.n_boot), lpips_fn=lpips_fn, setup=setup)
    for i, setting in enumerate(ctx.progress(settings, desc="repaint_sweep", unit="setting")):
        stem = setting.file_stem
        if ctx.chunk_done(stem + ".json") or i % ctx.process_count != ctx.process_index:
            continue  # done (resume), or another process's setting (each runs on its local devices)
        row, arrays = S.setting_row(setting, inputs, eps_model, predict, **options)
        write_npz(ctx.chunk_path(stem + ".npz"), arrays)
        write_json(ctx.chunk_path(stem + ".json"), row)  # last: marks the setting done
        ctx.scalar("repaint_sweep/ssim", row["ssim"], setting.network_calls)
    if ctx.process_index != 0:  # process 0 assembles once every host's settings are there
        return {"settings": len(settings)}

    rows, rank_results = [], {}
    for setting in settings:
        ctx.wait_for_chunk(setting.file_stem + ".json")
        rows.append(json.loads(ctx.chunk_path(setting.file_stem + ".json").read_text()))
        if setup is not None:
            saved = np.load(ctx.chunk_path(setting.file_stem + ".npz"))
            rank_results[setting.name] = {k: saved[k] for k in ("rank_p", "rank_logit")}
    n_images = len(inputs.data["index"])
    out_json, front = S.assemble(settings, rows, setup=setup, rank_results=rank_results, reference=reference,
                                 n_images=n_images, mask_fraction=cfg.mask_fraction, twins=inputs.twins is not None,
                                 n_boot=int(cfg.n_boot), seed=seed)
    if setup is not None:
        for row in rows:
            ctx.scalar("repaint_sweep/mard", row["mard"], row["network_calls"])
    write_text(artifacts.SWEEP_CSV.path(ctx.dir), S.csv_text(rows))
    artifacts.write_json(artifacts.SWEEP_JSON, ctx.dir, out_json)
    S.plot(rows, front, artifacts.figure_path("repaint_sweep", ctx.dir))
    return S.summary(rows, out_json, n_images)
