"""Stage `trust`: can this run's verdict be trusted? Known-answer checks (`ibo_jax.trust.checks`,
`.randomization`) on the score stage's dense arrays.

Inputs: the score stage's arrays (`artifacts.read_score_arrays`: ScoreTable, twins' predictions, residual fills), `explain` (evaluation
set for the randomization check), `train_classifier` (the model, re-initialized cascading from the
head), `data` (normal test patches: does the classifier call the twins normal as often?).
Output: `trust/summary.json` with
  counterfactual    each strategy's ranking against the counterfactual strategy's (faithfulness)
                    beside the IoU ranking (plausibility), per-patch agreement, residual evidence
                    and fill fidelity against the twins; or `unavailable` with the reason (no twins)
  graded_controls   does each strategy recover the known order of the graded oracle controls
  blur_bias         per strategy, the gain of each method's Gaussian-smoothed copy (<method>_smooth)
                    against the counterfactual's gain (positive excess = blur bias), sigma in px
  shuffle           per strategy, Spearman recovery of the known order of each method's
                    shuffled-score copies (<method>_shuffle_<pct>), beside graded_controls' tau
                    (both: `skipped` with the reason when explain.derived_controls made none)
  randomization     model-parameter randomization: map similarity per cascade step and floor
  srg               symmetric relevance gain on the fixed-fraction MoRF/LeRF curves
  power             resolution, Holm-adjusted paired tests, decisive or not, patches needed
  in_distribution   how in-distribution each fill is (`ibo_jax.trust.in_distribution`): the
                    Mahalanobis percentile of its filled images' classifier features among real
                    test patches (`ood`) and R-OMS against the counterfactual fill (`r_oms`);
                    `strategies.<s>.ood_percentile` / `.r_oms` the public per-strategy numbers
"""

from __future__ import annotations

import time

import ml_collections
import numpy as np

from ibo_jax import artifacts, attribution, cam
from ibo_jax.data.patches import read_split
from ibo_jax.evaluation.predict import make_predict_fn
from ibo_jax.models import loaders
from ibo_jax.trust import checks, in_distribution, randomization


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.n_boot = 1000
    c.alpha = 0.05
    c.randomization_images = 8  # evaluation patches for the randomization check (0 = skip it)
    c.normal_patches = 64  # real normal test patches: the share called normal, beside the twins'
    c.batch_size = 32
    # deletion-AUC differences within this count as ties in the within-patch rank agreement with
    # the known answer (the benchmark grid's statistic, `grid.tie_tol`): near-ties can swap between CPUs
    c.tie_tol = 1e-3
    # in-distribution section: training patches (half per label) whose classifier features fit the
    # class-conditional Gaussians (0 = skip the section), and real test patches (both labels, half
    # each) whose Mahalanobis distances are the reference of the percentiles
    c.ood_train_patches = 512
    c.ood_test_patches = 256
    return c


def twin_check(twin_p: np.ndarray, normal_p: np.ndarray | None) -> dict:
    """The share of twins the classifier calls normal, next to real normal test patches."""
    out = {"twins": int(len(twin_p)), "share_twins_called_normal": float(np.mean(twin_p < 0.5))}
    if normal_p is not None and len(normal_p):
        out.update(normal_test_patches=int(len(normal_p)), share_normal_called_normal=float(np.mean(normal_p < 0.5)))
        out["difference_points"] = 100.0 * (out["share_twins_called_normal"] - out["share_normal_called_normal"])
    return out


def _per_label(data_dir, split: str, n: int) -> dict:
    """Up to n patches of a split, half of each label (the first by index), concatenated."""
    parts = [read_split(data_dir, split, label=lab, limit=k) for lab, k in ((0, n - n // 2), (1, n // 2)) if k > 0]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("image", "label")}


def in_distribution_section(ctx, cfg, arrays, *, n_boot: int, seed: int, alpha: float) -> dict:
    """summary['in_distribution']: class-conditional Gaussians fitted to the classifier's pooled
    target-layer features of `ood_train_patches` training patches, the Mahalanobis percentile of
    each strategy's filled images among `ood_test_patches` real test patches, R-OMS against the
    counterfactual fill."""
    n_train, n_test = int(cfg.get("ood_train_patches", 512)), int(cfg.get("ood_test_patches", 256))
    if n_train <= 0:
        return {"skipped": "trust.ood_train_patches = 0"}
    kw = {"n_boot": n_boot, "seed": seed, "alpha": alpha}
    roms = in_distribution.r_oms(arrays.table, **kw)
    try:
        train = _per_label(ctx.input_dir("data"), "train", n_train)
        test = _per_label(ctx.input_dir("data"), "test", n_test) if n_test > 0 else {"image": np.zeros((0,))}
    except ValueError as e:  # a data folder without a train or test split
        train, test, why = {"image": np.zeros((0,))}, {"image": np.zeros((0,))}, str(e)
    else:
        why = f"{len(train['image'])} training and {len(test['image'])} test patches read (need 3 and 1)"
    if len(train["image"]) < 3 or not len(test["image"]):
        ood = {"unavailable": why}
        return {"ood": ood, "r_oms": roms, "strategies": in_distribution.per_strategy(ood, roms),
                "reference_test_patches": int(len(test["image"]))}
    model = loaders.load_classifier(ctx.input_dir("train_classifier"))
    predict = make_predict_fn(model, tumor_class=ctx.tumor_class, batch_size=int(cfg.batch_size))
    fit = in_distribution.fit_gaussians(predict(train["image"])[2], train["label"])
    reference_d = in_distribution.mahalanobis(predict(test["image"])[2], fit)
    ood = in_distribution.ood_scores(arrays.table, fit, reference_d, feat0=arrays.feat0, **kw)
    return {"ood": ood, "r_oms": roms, "strategies": in_distribution.per_strategy(ood, roms),
            "reference_test_patches": int(len(test["image"])), "train_patches": int(len(train["image"])),
            "fit": fit.summary()}


def bias_sections(study, ev: dict, hm: dict, graded: dict, kw: dict) -> dict:
    """summary['blur_bias'] and summary['shuffle'] (`checks.blur_bias`, `checks.shuffle`), the
    smoothing sigma from explain/heatmaps.npz (px, and as a fraction of the image size)."""
    sigma_px = float(hm["smooth_sigma_px"]) if "smooth_sigma_px" in hm else None
    size = max(ev["image"].shape[1:3])
    return {"blur_bias": checks.blur_bias(study, sigma_px=sigma_px, sigma=None if sigma_px is None else sigma_px / size,
                                          **kw),
            "shuffle": checks.shuffle(study, graded=graded, **kw)}


def run(ctx) -> dict:
    if ctx.process_index != 0:  # the checks are cheap: process 0 runs them all
        return {"skipped": "not process 0"}
    t0, cfg = time.time(), ctx.cfg
    kw = {"n_boot": int(cfg.n_boot), "seed": int(ctx.config.seed), "alpha": float(cfg.alpha)}
    arrays = artifacts.read_score_arrays(ctx.input_dir("score"))
    study = arrays.table
    ev, hm = artifacts.read_explained(ctx.input_dir("explain"), need=())
    summary = {"n_images": int(len(study.p0))}

    has_cf = any(s == checks.REFERENCE for s, _ in study.dense) and arrays.twin_p is not None
    if has_cf:
        model = loaders.load_classifier(ctx.input_dir("train_classifier"))
        normal = read_split(ctx.input_dir("data"), "test", label=0, limit=int(cfg.normal_patches))["image"]
        normal_p = make_predict_fn(model, tumor_class=ctx.tumor_class, batch_size=int(cfg.batch_size))(normal)[0] if len(normal) else None
        summary["counterfactual"] = {**checks.counterfactual_agreement(study, **kw, tie_tol=float(cfg.get("tie_tol", 0.0))),
                                     "residual": checks.residual_evidence(study, arrays, **kw),
                                     "twin_check": twin_check(arrays.twin_p, normal_p)}
    else:
        _, why = artifacts.twins(ev)
        summary["counterfactual"] = {"unavailable": why if arrays.twin_p is None else
                                     "the occlude stage ran no 'counterfactual' strategy"}
    summary["graded_controls"] = checks.graded_controls(study, **kw)
    summary.update(bias_sections(study, ev, hm, summary["graded_controls"], kw))
    summary["srg"] = checks.srg(study, **kw)
    summary["power"] = {"faithfulness": checks.power(study, reference=checks.REFERENCE, **kw) if has_cf else
                        {"skipped": "no counterfactual reference"},
                        "plausibility": checks.power(study, reference=None, **kw)}

    n_rand = int(cfg.randomization_images)
    if n_rand > 0:
        model = loaders.load_classifier(ctx.input_dir("train_classifier"))
        # every computed method; maps read from explain.heatmaps_npz (`external`) cannot be recomputed
        external = [str(m) for m in hm.get("external", [])]
        methods = [m for m in hm["methods"] if m in attribution.METHODS and m not in external]
        opts = ctx.config.explain.method_options if "explain" in ctx.config else {}  # explain's own options
        summary["randomization"] = randomization.cascade(
            model, lambda s: loaders.fresh_classifier(ctx.input_dir("train_classifier"), int(ctx.config.seed) + 1000 + s),
            ev["image"][:n_rand], methods=methods, target_class=ctx.tumor_class,
            method_options={m: cam.resolve_options(opts.get(m, {})) for m in methods})
        if external:
            summary["randomization"]["unavailable"] = dict.fromkeys(
                external, "read from explain.heatmaps_npz (computed outside ibo_jax): cannot be recomputed on the "
                          "randomized models of the cascade")
    else:
        summary["randomization"] = {"skipped": "trust.randomization_images = 0"}
    summary["in_distribution"] = in_distribution_section(ctx, cfg, arrays, **kw)
    artifacts.write_summary(ctx.dir, summary)
    out = {"seconds": round(time.time() - t0, 2), "counterfactual": has_cf}
    if has_cf:
        out["decisive_faithfulness"] = summary["power"]["faithfulness"].get("decisive")
    return out
