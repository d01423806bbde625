"""Stage `score`: re-predict p(tumor) on every occluded image, measure realism, rank the methods.

Inputs, read through `ibo_jax.artifacts`: the explain stage's evaluation set and heatmaps, the
occlude stage's mask geometry and occluded images (or a strategy's own predictions: `predicted_by`),
and the classifier of `train_classifier` (other classifiers a strategy names: `score.models`). The library does the work
(`evaluation.scoring`); this module reads, calls and writes.

Outputs (score/):
  scores.csv      tidy, one row per image x method x strategy x curve x mask x draw; mask 0 is the
                  original image. Columns: image_id, method, control, strategy, curve, mask, draw,
                  fraction, area, p_tumor, logit, label, lpips, ssim, psnr.
  summary.json    per strategy and curve: mean AUC per method with bootstrap CIs (probability and
                  logit), the ranking, agreement with the GT ranking (MARD, exact-match share,
                  Spearman, Kendall), rank frequencies; realism per mask; GT IoU per method; paired
                  MARD tests between strategies; exclusions with reasons; misclassified count.
  scores.npz      the dense score arrays (`artifacts.read_score_arrays`: a ScoreTable) with the twins'
                  predictions and the residual fills (the whole annotated region removed per
                  strategy: p(tumor), SSIM/PSNR inside the region against original and twin)
  chunks/         one .npz per occluded block (predictions, realism, pooled features): resume.
"""

from __future__ import annotations

import time

import ml_collections

from ibo_jax import artifacts
from ibo_jax.evaluation import scoring
from ibo_jax.evaluation.curves import PRIMARY
from ibo_jax.evaluation.predict import make_predict_fn
from ibo_jax.models import loaders


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.batch_size = 32
    # other classifiers that re-predict a strategy's images (a strategy whose registry entry says it
    # is predicted by model NAME): NAME -> a train_classifier-style folder (model/ + model_config.json)
    c.models = ml_collections.ConfigDict()
    c.lpips_alexnet_weights = ""  # torchvision AlexNet state dict; "" = LPIPS unavailable
    c.lpips_heads = ""  # LPIPS' linear heads file; "" = the installed lpips package's v0.1 AlexNet heads
    c.lpips_vgg = False  # also lpips-j's VGG LPIPS (needs the Hugging Face hub)
    c.n_boot = 1000
    c.alpha = 0.05
    c.kid_subset_size = 0  # 0 = one KID estimate on all samples
    return c


def lpips_functions(cfg) -> dict:
    """The configured LPIPS variants: {'lpips': AlexNet (user weights), 'lpips_vgg': lpips-j}."""
    fns = {}
    if cfg.lpips_alexnet_weights:
        from ibo_jax.models import lpips

        fns["lpips"] = lpips.make_lpips_fn(lpips.load_lpips(cfg.lpips_alexnet_weights, cfg.get("lpips_heads", "")))
    if cfg.lpips_vgg:
        from ibo_jax.models import lpips

        vgg = lpips.load_lpips_vgg()
        if vgg is not None:
            fns["lpips_vgg"] = vgg
    return fns


def run(ctx) -> dict:
    t0 = time.time()
    cfg = ctx.cfg
    ev, hm = artifacts.read_explained(ctx.input_dir("explain"), need=())
    methods, controls = hm["methods"], hm["controls"]
    occ_dir = ctx.input_dir("occlude")
    layout = artifacts.read_layout(occ_dir, methods=methods)
    geo = artifacts.read_geometry(occ_dir, methods=methods)
    predict = make_predict_fn(loaders.load_classifier(ctx.input_dir("train_classifier")),
                              tumor_class=ctx.tumor_class, batch_size=int(cfg.batch_size))
    others = {str(name): make_predict_fn(loaders.load_classifier(path), tumor_class=ctx.tumor_class,
                                         batch_size=int(cfg.batch_size))
              for name, path in cfg.get("models", {}).items()}
    lpips_fns = lpips_functions(cfg)
    twins, _ = artifacts.twins(ev)
    share = (ctx.process_index, ctx.process_count)
    results = scoring.score_occluded(
        artifacts.occluded_blocks(occ_dir), ev["image"], predict, lpips_fns=lpips_fns, store=ctx.chunks,
        share=share, progress=lambda it: ctx.progress(it, desc="score", unit="block"), model_predict_fns=others)
    residual = scoring.score_occluded(  # the whole annotated region removed, per strategy
        artifacts.occluded_blocks(occ_dir, curve=artifacts.RESIDUAL), ev["image"], predict, store=ctx.chunks,
        share=share, twins=twins, tumor_mask=ev["tumor_mask"], model_predict_fns=others)
    n_blocks = len(layout["blocks"]) + len(layout.get("residual_blocks", []))
    if results is None:  # not process 0: process 0 assembles once every host's chunks are there
        return {"blocks": n_blocks, "seconds": round(time.time() - t0, 2)}
    originals = predict(ev["image"])
    study, summary = scoring.summarize_run(
        ev, geo, results, predict, originals=originals, methods=methods, controls=controls, fractions=layout.get("fractions", {}),
        n_boot=int(cfg.n_boot), alpha=float(cfg.alpha), seed=int(ctx.config.seed),
        kid_subset_size=int(cfg.kid_subset_size) or None, lpips_available="lpips" in lpips_fns, layout=layout)
    for strategy, curves in summary["strategies"].items():
        if "agreement" in curves.get(PRIMARY, {}):
            ctx.scalar(f"mard/{strategy}", curves[PRIMARY]["agreement"]["mard"], 0)
    study.write_csv(artifacts.SCORES_CSV.path(ctx.dir))
    artifacts.write_summary(ctx.dir, summary)
    p0, _, feat0 = originals
    arrays = artifacts.ScoreArrays(table=study, feat0=feat0)
    if twins is not None:
        arrays.twin_p, arrays.twin_logit, arrays.twin_feat = predict(twins)
    for (strategy, _), rows in (residual or {}).items():
        r = scoring.residual_arrays(rows, len(p0))
        arrays.residual[strategy] = artifacts.Residual({k: v for k, v in r.items() if k not in ("feat", "pos")},
                                                       r["feat"], r["pos"])
    artifacts.write_score_arrays(ctx.dir, arrays)  # dense arrays for the trust checks
    return {"images": summary["n_images"], "blocks": n_blocks, "rows": study.n_rows,
            "misclassified": summary["misclassified"], "seconds": round(time.time() - t0, 2)}
