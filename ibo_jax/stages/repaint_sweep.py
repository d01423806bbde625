"""Stage `repaint_sweep`: inpainting samplers and their settings, cost against quality.

Inputs: `data` (patches of one split), `train_ddpm` (the EMA epsilon model), `train_classifier`
(re-prediction, KID features) and, for the rank agreement, `explain` (evaluation set, levels).

A grid entry is (t_T, jump_length, jump_n_sample) for RePaint or (sampler, t_T, jump_length,
jump_n_sample[, eta]) for any of `repaint.SAMPLERS` (`evaluation.sweep.parse_grid`). Per setting,
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
(`evaluation.sweep.noninferior`).

Outputs: `sweep.csv` (one row per setting; columns include sampler, network_calls, seconds),
`sweep.json` (rows, rankings, paired tests, the reference and the Pareto front),
`cost_quality.png`, per setting `chunks/<setting>.json` + `.npz` (resume).
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from ibo_jax import rng
from ibo_jax.evaluation import sweep as S
from ibo_jax.io import pyplot, save_figure, write_json, write_npz, write_text
from ibo_jax.occlusion import to_uint8
from ibo_jax.occlusion.ibo import ibo

COLUMNS = ("sampler", "t_T", "jump_length", "jump_n_sample", "eta", "network_calls", "unet_calls", "undo_steps",
           "seconds", "seconds_warm", "s_per_inpainting", "psnr", "ssim", "lpips", "box_kid_twin", "box_ssim_twin",
           "box_hshare", "residual_p", "residual_p_lo", "residual_p_hi", "residual_hshare", "mard", "mard_lo",
           "mard_hi", "spearman", "mard_cf", "mard_cf_lo", "mard_cf_hi", "rank_inpaintings", "rank_seconds",
           "noninferior")


def default_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.grid = ((10, 1, 1), (25, 1, 1), (25, 5, 2), (25, 5, 4))  # see evaluation.sweep.parse_grid
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


def _rank_setup(ctx, cfg, predict) -> dict | None:
    """The rank agreement's fixed inputs: MoRF rows of the ranked methods, keys, references."""
    n_req = int(cfg.rank_images)
    if n_req == 0:
        return None
    from ibo_jax import occlusion
    from ibo_jax.evaluation import explained, geometry

    ev, hm = explained.read(ctx.input_dir("explain"), need=("levels",))
    n = len(ev["index"]) if n_req < 0 else min(n_req, len(ev["index"]))
    twins, _ = explained.twins(ev)
    ev = {k: ev[k][:n] for k in ("image", "label", "tumor_mask", "index")}
    methods, controls = hm["methods"], hm["controls"]
    k = int(cfg.n_masks)
    geo = geometry.compute(None, hm["levels"][:n], hm["n_levels"][:n] if "n_levels" in hm else None,
                           hm["valid"][:n] if "valid" in hm else None, ev["tumor_mask"], n_masks=k, keep_masks=True)
    masks = geo.pop("morf_masks")  # [n, m, k, H, W]
    ranked = np.array([m not in controls for m in methods])
    pos, meth, mask, draw = (np.asarray(v, np.int64).ravel() for v in np.meshgrid(
        np.arange(n), np.flatnonzero(ranked), np.arange(1, k + 1), np.arange(int(cfg.n_draws)), indexing="ij"))
    use = geo["valid"][pos, meth]
    pos, meth, mask, draw = pos[use], meth[use], mask[use], draw[use]
    ids = np.stack([[rng.stable_int(int(ev["index"][p])) for p in pos], [rng.stable_int(methods[i]) for i in meth],
                    [rng.stable_int(f"morf:{i}") for i in mask], draw], axis=1)
    p0, logit0, _ = predict(ev["image"])
    remove = masks[pos, meth, mask - 1]
    first, inverse = occlusion.unique_rows(pos, draw, remove)  # identical inputs inpainted once
    setup = {"ev": ev, "methods": methods, "controls": controls, "geo": geo,
             "rows": {"pos": pos, "method": meth, "mask": mask, "draw": draw},
             "remove": remove, "keys": rng.row_keys(rng.fold(ctx.key, "rank"), ids),
             "first": first, "inverse": inverse, "p0": p0, "logit0": logit0}
    if twins is not None:  # the counterfactual reference of the same rows, computed once
        cf = occlusion.apply("counterfactual", ev["image"][pos].astype(np.float32) / 255.0, setup["remove"],
                             twin=twins[:n][pos])
        setup["cf_p"], setup["cf_logit"], _ = predict(to_uint8(cf))
    return setup


def _rank_summary(setup: dict, results: dict[str, dict], *, n_boot: int, seed: int) -> dict:
    """Every setting as one 'strategy' of a Study: MARD against the IoU and counterfactual rankings."""
    from ibo_jax.evaluation import meta
    from ibo_jax.evaluation.study import Study

    ev = setup["ev"]
    study = Study.from_geometry(setup["geo"], image_id=ev["index"], label=ev["label"], methods=setup["methods"],
                                controls=setup["controls"], p0=setup["p0"], logit0=setup["logit0"])
    for name, res in results.items():
        study.add(name, "morf", {**setup["rows"], "p": res["rank_p"], "logit": res["rank_logit"]})
    out = study.summarize(n_boot=n_boot, seed=seed)
    if "cf_p" in setup:
        study.add(meta.REFERENCE, "morf", {**setup["rows"], "p": setup["cf_p"], "logit": setup["cf_logit"]})
        out["counterfactual"] = meta.counterfactual_agreement(study, curves=("morf",), n_boot=n_boot, seed=seed)
    return out


class _Inputs:
    """The fixed inputs of every setting: box masks, residual regions, their counterfactuals."""

    def __init__(self, ctx, cfg, predict):
        from ibo_jax.data.patches import counterfactual_twins, hematoxylin_share, read_split

        data_dir = ctx.input_dir("data")
        d = read_split(data_dir, cfg.split, label=None if cfg.label < 0 else int(cfg.label), limit=int(cfg.n_images))
        if len(d["index"]) == 0:
            raise ValueError(f"repaint_sweep: split {cfg.split!r} has no images with label {cfg.label}")
        self.data, self.seed = d, int(ctx.config.seed)
        self.size = d["image"].shape[1]
        self.box = S.box_masks(d["index"], self.size, float(cfg.mask_fraction), self.seed)
        self.keys = jax.vmap(lambda i: jax.random.fold_in(ctx.key, i))(
            np.asarray([rng.stable_int(int(i)) for i in d["index"]], np.uint32))
        self.twins, _ = counterfactual_twins(data_dir, d["index"], d["image"])
        self.hshare = lambda idx: (lambda imgs, m: hematoxylin_share(data_dir, d["index"][idx], imgs, m))
        self.res_idx = np.flatnonzero(d["tumor_mask"].reshape(len(d["index"]), -1).any(1)) if cfg.residual else []
        self.refs = {}
        if self.twins is not None:
            for part, idx, masks in (("box", np.arange(len(d["index"])), self.box),
                                     ("residual", self.res_idx, d["tumor_mask"][self.res_idx])):
                if len(idx):
                    cf = np.where(masks[..., None], self.twins[idx], d["image"][idx])
                    self.refs[part] = (cf, S.reference_quality(cf, masks, predict, self.hshare(idx)))


def _setting_row(setting, inp: _Inputs, cfg, opts, predict, lpips_fn, setup) -> tuple[dict, dict]:
    d, images = inp.data, inp.data["image"].astype(np.float32) / 255.0
    kw = {**opts, **setting.ibo_kwargs()}
    if kw["eta"] is None and float(cfg.eta) >= 0:
        kw["eta"] = float(cfg.eta)
    stats: dict = {}
    out = np.asarray(ibo(images, inp.box, key=inp.keys, stats=stats, **kw))
    seconds = warm = stats["seconds"]
    if cfg.warm_timing:  # rerun the first chunk: same program, now compiled
        k = min(int(cfg.batch_size), len(images))
        t0 = time.perf_counter()
        jax.block_until_ready(ibo(images[:k], inp.box[:k], key=inp.keys[:k], **kw))
        warm = (time.perf_counter() - t0) * len(images) / k
    flat = out.reshape((-1,) + images.shape[1:])
    originals = np.repeat(images, int(cfg.n_draws), axis=0)
    q = _quality(originals, flat, lpips_fn)
    row = {"sampler": setting.sampler, "t_T": setting.t_T, "jump_length": setting.jump_length,
           "jump_n_sample": setting.jump_n_sample, "eta": kw["eta"], "network_calls": setting.network_calls,
           "unet_calls": setting.network_calls, "undo_steps": setting.undo_steps, "seconds": seconds,
           "seconds_warm": warm, "s_per_inpainting": warm / len(flat), **q}
    arrays = {"image": to_uint8(flat), "index": np.repeat(d["index"], int(cfg.n_draws))}
    detail = {}
    if "box" in inp.refs and int(cfg.n_draws) == 1:
        cf, ref = inp.refs["box"]
        fq = S.fill_quality(arrays["image"], inp.box, predict, reference=cf, reference_feat=ref["feat"],
                            hshare_fn=inp.hshare(np.arange(len(d["index"]))), n_boot=int(cfg.n_boot), seed=inp.seed)
        detail["box"] = fq
        row.update(box_kid_twin=fq["kid_twin"]["mean"], box_kid_twin_lo=fq["kid_twin"]["lo"],
                   box_kid_twin_hi=fq["kid_twin"]["hi"], box_ssim_twin=fq["ssim_twin"]["mean"],
                   box_ssim_twin_lo=fq["ssim_twin"]["lo"], box_ssim_twin_hi=fq["ssim_twin"]["hi"],
                   box_hshare=fq.get("hshare", {}).get("mean"), box_hshare_twin_5_95=ref.get("hshare_5_95"))
    if len(inp.res_idx):
        idx = inp.res_idx
        masks = d["tumor_mask"][idx]
        res_keys = jax.vmap(lambda k: jax.random.fold_in(k, rng.stable_int("residual")))(inp.keys[idx])
        fills = to_uint8(ibo(images[idx], masks, key=res_keys, **{**kw, "n_draws": 1}))
        ref = inp.refs.get("residual")
        fq = S.fill_quality(fills, masks, predict, reference=ref[0] if ref else None,
                            reference_feat=ref[1]["feat"] if ref else None, hshare_fn=inp.hshare(idx),
                            n_boot=int(cfg.n_boot), seed=inp.seed)
        detail["residual"] = fq
        row.update(residual_p=fq["p_tumor"]["mean"], residual_p_lo=fq["p_tumor"]["lo"],
                   residual_p_hi=fq["p_tumor"]["hi"], residual_hshare=fq.get("hshare", {}).get("mean"),
                   residual_hshare_twin_5_95=ref[1].get("hshare_5_95") if ref else None,
                   residual_twin_p=ref[1]["p_tumor"] if ref else None)
    if setup is not None:
        first, inverse = setup["first"], setup["inverse"]  # rows with identical inputs share one
        images_r = setup["ev"]["image"][setup["rows"]["pos"][first]].astype(np.float32) / 255.0
        t0 = time.perf_counter()
        occ = to_uint8(ibo(images_r, setup["remove"][first], key=setup["keys"][first],
                           **{**kw, "n_draws": 1}))  # the bytes scored
        rank_seconds = time.perf_counter() - t0
        p, logit, _ = predict(occ)
        p, logit = p[inverse], logit[inverse]
        row.update(rank_inpaintings=int(len(first)), rank_seconds=rank_seconds)
        arrays.update(rank_p=p, rank_logit=logit)
    row["detail"] = detail
    return row, arrays


def _quality(original: np.ndarray, out: np.ndarray, lpips_fn) -> dict[str, float]:
    from ibo_jax.evaluation import pair_metrics

    m = pair_metrics(original, out)
    q = {"psnr": float(np.mean(m["psnr"])), "ssim": float(np.mean(m["ssim"])), "lpips": float("nan")}
    if lpips_fn is not None:
        q["lpips"] = float(np.mean(np.asarray(lpips_fn(original, out))))
    return q


def _plot(rows: list[dict], front: list[int], path: Path) -> None:
    plt = pyplot()
    metrics = ["ssim", "lpips" if any(np.isfinite(r["lpips"]) for r in rows) else "psnr"]
    for extra in ("box_kid_twin", "residual_p", "mard_cf", "mard"):
        if any(np.isfinite(r.get(extra, np.nan) or np.nan) for r in rows):
            metrics.append(extra)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    xs = [r["network_calls"] for r in rows]
    labels = {"mard": "MARD vs IoU ranking", "mard_cf": "MARD vs counterfactual ranking",
              "box_kid_twin": "KID vs counterfactual boxes", "residual_p": "p(tumor) left (region filled)"}
    for ax, metric in zip(axes[0], metrics, strict=False):
        ys = [np.nan if r.get(metric) is None else r[metric] for r in rows]
        lo_hi = {"mard": ("mard_lo", "mard_hi"), "mard_cf": ("mard_cf_lo", "mard_cf_hi"),
                 "residual_p": ("residual_p_lo", "residual_p_hi")}.get(metric)
        if lo_hi:
            err = np.array([[max(0.0, (y - (r.get(lo_hi[0]) or y))), max(0.0, ((r.get(lo_hi[1]) or y) - y))]
                            for r, y in zip(rows, ys)]).T
            ax.errorbar(xs, ys, yerr=err, fmt="none", ecolor="gray", capsize=3)
        for i, (x, y, r) in enumerate(zip(xs, ys, rows)):
            ax.scatter([x], [y], c="tab:red" if i in front else "tab:blue", s=28)
            ax.annotate(S.Setting(r["sampler"], r["t_T"], r["jump_length"], r["jump_n_sample"]).name, (x, y), fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel("network calls per inpainting")
        ax.set_ylabel(labels.get(metric, f"{metric} vs original"))
    fig.suptitle("Inpainting cost against quality (red: the Pareto front on SSIM)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def run(ctx) -> dict:
    from ibo_jax.evaluation.predict import make_predict_fn
    from ibo_jax.models import loaders

    cfg = ctx.cfg
    settings = S.parse_grid(cfg.grid)
    reference = S.parse_grid([cfg.reference], "repaint_sweep.reference")[0] if len(cfg.reference) else None
    if reference is not None and reference.name not in [s.name for s in settings]:
        raise ValueError(f"repaint_sweep.reference: {reference.name} is not one of the grid's settings")
    predict = make_predict_fn(loaders.load_classifier(ctx.input_dir("train_classifier")),
                              batch_size=int(cfg.classifier_batch_size))
    inp = _Inputs(ctx, cfg, predict)
    eps_model = loaders.load_eps_model(ctx.input_dir("train_ddpm"), dtype=jax.numpy.bfloat16 if cfg.bf16 else None)
    lpips_fn = None
    if cfg.lpips_alexnet_weights:
        from ibo_jax.evaluation.lpips import load_lpips, make_lpips_fn

        lpips_fn = make_lpips_fn(load_lpips(cfg.lpips_alexnet_weights, cfg.get("lpips_heads", "")))
    opts = dict(eps_model=eps_model, n_draws=int(cfg.n_draws), batch_size=int(cfg.batch_size), progress=False)
    setup = _rank_setup(ctx, cfg, predict)
    for i, setting in enumerate(ctx.progress(settings, desc="repaint_sweep", unit="setting")):
        stem = setting.file_stem
        if ctx.chunk_done(stem + ".json") or i % ctx.process_count != ctx.process_index:
            continue  # done (resume), or another process's setting (each runs on its local devices)
        row, arrays = _setting_row(setting, inp, cfg, opts, predict, lpips_fn, setup)
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
    ranks = _rank_summary(setup, rank_results, n_boot=int(cfg.n_boot), seed=int(ctx.config.seed)) if setup else None
    for setting, row in zip(settings, rows, strict=True):
        if ranks is None:
            continue
        s = ranks["strategies"][setting.name]["morf"]
        agree = s.get("agreement", {})
        row.update(mard=agree.get("mard", float("nan")), spearman=agree.get("spearman", float("nan")),
                   mard_lo=s["mard_boot"]["lo"], mard_hi=s["mard_boot"]["hi"], ranking=s.get("ranking", {}))
        cf = (ranks.get("counterfactual") or {}).get("curves", {}).get("morf", {}).get("strategies", {}).get(setting.name)
        if cf and "mard" in cf:
            row.update(mard_cf=cf["mard"], mard_cf_lo=cf["mard_boot"]["lo"], mard_cf_hi=cf["mard_boot"]["hi"])
        ctx.scalar("repaint_sweep/mard", row["mard"], row["network_calls"])
    out_json = {"rows": rows, "n_images": len(inp.data["index"]), "mask_fraction": cfg.mask_fraction,
                "twins": inp.twins is not None}
    if reference is not None:
        ref_row = rows[[s.name for s in settings].index(reference.name)]
        for row in rows:
            row["noninferior"] = S.noninferior(row, ref_row)
        ok = [r for r in rows if r["noninferior"].get("all")]
        out_json["reference"] = reference.name
        out_json["cheapest_noninferior"] = (S.Setting(*(min(ok, key=lambda r: r["network_calls"])[k] for k in (
            "sampler", "t_T", "jump_length", "jump_n_sample"))).name if ok else None)
    front = S.pareto_front(rows, "network_calls", "ssim", True)
    out_json["pareto_front_ssim"] = [S.Setting(rows[i]["sampler"], rows[i]["t_T"], rows[i]["jump_length"],
                                               rows[i]["jump_n_sample"]).name for i in front]
    if ranks is not None:
        out_json["rank_agreement"] = {"n_images": int(len(setup["ev"]["index"])), "methods": ranks["methods"],
                                      "gt_ranking": ranks["gt"]["ranking"], "paired_mard_tests": ranks["paired_mard_tests"]}
        if "counterfactual" in ranks:
            c = ranks["counterfactual"]["curves"]["morf"]
            out_json["rank_agreement"].update(counterfactual_ranking=c["reference_ranking"],
                                              paired_mard_tests_counterfactual=c["paired_mard_tests"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (row.get(k, "") if k != "noninferior" else (row.get(k) or {}).get("all", ""))
                         for k in COLUMNS})
    write_text(ctx.dir / "sweep.csv", buf.getvalue())
    write_json(ctx.dir / "sweep.json", out_json)
    _plot(rows, front, ctx.dir / "cost_quality.png")
    summary = {"settings": len(rows), "n_images": int(len(inp.data["index"])),
               "best_ssim": max(rows, key=lambda r: r["ssim"])["ssim"],
               "seconds": float(sum(r["seconds"] + r.get("rank_seconds", 0.0) for r in rows))}
    if "cheapest_noninferior" in out_json:
        summary["cheapest_noninferior"] = out_json["cheapest_noninferior"]
    if ranks is not None:
        best = min(rows, key=lambda r: (r["mard"], r["network_calls"]))
        summary.update(rank_images=int(len(setup["ev"]["index"])), best_mard=best["mard"],
                       best_mard_setting=S.Setting(best["sampler"], best["t_T"], best["jump_length"],
                                                   best["jump_n_sample"]).name)
    return summary
