"""Stage `repaint_sweep`: RePaint cost against quality over a grid of (t_T, jump_length, jump_n_sample).

Inputs: `data` (patches of one split), `train_ddpm` (the EMA epsilon model), and for the rank
agreement `explain` (evaluation set, importance levels) and `train_classifier`.

Per grid point:
- **cost**: network calls and undo steps per inpainting (exact, from the schedule) and seconds
  (wall, first pass and a second, compiled pass; the sampler's program is shared by every setting
  of one image shape, so only the first setting's first pass includes its compilation);
- **realism** against the originals: the same images and masks (a random box per image,
  `mask_fraction` of the area, drawn from the image's index) inpainted with per-example keys folded
  from (image index, draw), so every grid point sees identical inputs; PSNR and SSIM always, LPIPS
  when `lpips_alexnet_weights` names AlexNet weights (as in the score stage);
- **rank agreement** (`rank_images` > 0): the first `rank_images` patches of the evaluation set
  (-1: all) are inpainted under every method's progressive masks M1..Mn (the study's MoRF curve),
  re-predicted by the classifier, and the methods ranked by deletion AUC. MARD against the GT
  ranking (IoU of M_n with the tumor mask), its bootstrap interval and Spearman's rho come from
  `evaluation.study.Study`, as do paired bootstrap tests between settings. Keys are folded from
  (image index, method, 'morf:<mask>', draw) and are the same for every setting (common random
  numbers: differences between settings are not draw noise).

Outputs: `sweep.csv` (one row per grid point), `sweep.json` (rows, rankings, paired MARD tests),
`cost_quality.png`, and per grid point `chunks/<t_T>_<j>_<r>.json` + `.npz` (uint8 inpaintings of
the box masks; the rank agreement's predictions) so a killed sweep resumes.
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
from ibo_jax.io import pyplot, save_figure, write_json, write_npz, write_text
from ibo_jax.occlusion.ibo import ibo
from ibo_jax.repaint.schedule import schedule_cost

COLUMNS = ("t_T", "jump_length", "jump_n_sample", "unet_calls", "undo_steps", "seconds", "seconds_warm",
           "s_per_inpainting", "psnr", "ssim", "lpips", "mard", "mard_lo", "mard_hi", "spearman",
           "rank_inpaintings", "rank_seconds")


def default_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.grid = ((10, 1, 1), (25, 1, 1), (25, 5, 2), (25, 5, 4))  # (t_T, jump_length, jump_n_sample)
    cfg.split = "test"
    cfg.label = 1  # tumor patches, as in the study's evaluation set; -1 = any
    cfg.n_images = 8
    cfg.mask_fraction = 0.25
    cfg.n_draws = 1
    cfg.batch_size = 8
    cfg.eta = -1.0  # < 0: the official ancestral step; >= 0: diffusers' DDIM-style step
    cfg.bf16 = False
    cfg.warm_timing = True  # time the first chunk again after compiling (a second run of it)
    cfg.lpips_alexnet_weights = ""  # torchvision AlexNet state dict (as score.lpips_alexnet_weights); "": no LPIPS
    # rank agreement: evaluation-set patches inpainted under every method's masks M1..Mn
    cfg.rank_images = 8  # 0: no rank agreement; -1: the whole evaluation set
    cfg.n_masks = 4
    cfg.n_boot = 500
    cfg.classifier_batch_size = 32
    return cfg


def box_masks(indices: np.ndarray, size: int, fraction: float, seed: int) -> np.ndarray:
    """One random square per image covering ~fraction of it: bool [N, size, size], from the index."""
    side = max(1, int(round(np.sqrt(fraction) * size)))
    masks = np.zeros((len(indices), size, size), bool)
    for i, idx in enumerate(indices):
        r = np.random.default_rng([seed, rng.stable_int(int(idx))])
        y, x = r.integers(0, size - side + 1, size=2)
        masks[i, y:y + side, x:x + side] = True
    return masks


def _quality(original: np.ndarray, out: np.ndarray, lpips_fn) -> dict[str, float]:
    from ibo_jax.evaluation import pair_metrics

    m = pair_metrics(original, out)
    q = {"psnr": float(np.mean(m["psnr"])), "ssim": float(np.mean(m["ssim"])), "lpips": float("nan")}
    if lpips_fn is not None:
        q["lpips"] = float(np.mean(np.asarray(lpips_fn(original, out))))
    return q


def setting_name(t_T: int, j: int, r: int) -> str:
    return f"ibo({t_T},{j},{r})"


def _rank_setup(ctx, cfg) -> dict | None:
    """The rank agreement's fixed inputs: evaluation patches, MoRF rows, keys, originals' scores."""
    n_req = int(cfg.rank_images)
    if n_req == 0:
        return None
    from ibo_jax.evaluation import explained, geometry
    from ibo_jax.evaluation.predict import make_predict_fn
    from ibo_jax.models import loaders

    ev, hm = explained.read(ctx.input_dir("explain"), need=("levels",))
    n = len(ev["index"]) if n_req < 0 else min(n_req, len(ev["index"]))
    ev = {k: ev[k][:n] for k in ("image", "label", "tumor_mask", "index")}
    methods, controls = hm["methods"], hm["controls"]
    k = int(cfg.n_masks)
    geo = geometry.compute(None, hm["levels"][:n], hm["n_levels"][:n] if "n_levels" in hm else None,
                           hm["valid"][:n] if "valid" in hm else None, ev["tumor_mask"], n_masks=k, keep_masks=True)
    m, masks = len(methods), geo.pop("morf_masks")  # [n, m, k, H, W]
    pos, meth, mask, draw = (np.asarray(v, np.int64).ravel() for v in np.meshgrid(
        np.arange(n), np.arange(m), np.arange(1, k + 1), np.arange(int(cfg.n_draws)), indexing="ij"))
    use = geo["valid"][pos, meth]
    pos, meth, mask, draw = pos[use], meth[use], mask[use], draw[use]
    ids = np.stack([[rng.stable_int(int(ev["index"][p])) for p in pos], [rng.stable_int(methods[i]) for i in meth],
                    [rng.stable_int(f"morf:{i}") for i in mask], draw], axis=1)
    predict = make_predict_fn(loaders.load_classifier(ctx.input_dir("train_classifier")),
                              batch_size=int(cfg.classifier_batch_size))
    p0, logit0, _ = predict(ev["image"])
    return {"ev": ev, "methods": methods, "controls": controls, "geo": geo, "predict": predict,
            "rows": {"pos": pos, "method": meth, "mask": mask, "draw": draw},
            "remove": masks[pos, meth, mask - 1], "keys": rng.row_keys(rng.fold(ctx.key, "rank"), ids),
            "p0": p0, "logit0": logit0}


def _rank_one(setup: dict, ibo_kw: dict) -> dict:
    """Inpaints every MoRF row for one setting and re-predicts: p, logit [R] and seconds."""
    from ibo_jax.occlusion import to_uint8

    images = setup["ev"]["image"][setup["rows"]["pos"]].astype(np.float32) / 255.0
    t0 = time.perf_counter()
    out = to_uint8(ibo(images, setup["remove"], **{**ibo_kw, "key": setup["keys"]}))  # the bytes scored
    seconds = time.perf_counter() - t0
    p, logit, _ = setup["predict"](out)
    return {"rank_p": p, "rank_logit": logit, "rank_seconds": seconds}


def _rank_summary(setup: dict, results: dict[str, dict], *, n_boot: int, seed: int) -> dict:
    """Every setting as one 'strategy' of a Study: MARD, CIs, paired tests."""
    from ibo_jax.evaluation.study import Study

    ev = setup["ev"]
    study = Study.from_geometry(setup["geo"], image_id=ev["index"], label=ev["label"], methods=setup["methods"],
                                controls=setup["controls"], p0=setup["p0"], logit0=setup["logit0"])
    for name, res in results.items():
        study.add(name, "morf", {**setup["rows"], "p": res["rank_p"], "logit": res["rank_logit"]})
    return study.summarize(n_boot=n_boot, seed=seed)


def _plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()

    metrics = ["ssim", "lpips" if any(np.isfinite(r["lpips"]) for r in rows) else "psnr"]
    if any(np.isfinite(r.get("mard", np.nan)) for r in rows):
        metrics.append("mard")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4))
    xs = [r["unet_calls"] for r in rows]
    for ax, metric in zip(axes, metrics):
        ys = [r[metric] for r in rows]
        if metric == "mard":
            err = np.array([[max(0.0, r["mard"] - r["mard_lo"]), max(0.0, r["mard_hi"] - r["mard"])] for r in rows]).T
            ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3)
        else:
            ax.scatter(xs, ys)
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"({r['t_T']},{r['jump_length']},{r['jump_n_sample']})", (x, y), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("network calls per inpainting")
        ax.set_ylabel("MARD vs GT ranking (lower = agrees)" if metric == "mard" else f"{metric} vs original")
    fig.suptitle("RePaint cost vs quality")
    fig.tight_layout()
    save_figure(fig, path)


def run(ctx) -> dict:
    from ibo_jax.data.patches import read_split
    from ibo_jax.models import loaders

    cfg = ctx.cfg
    data = read_split(ctx.input_dir("data"), cfg.split, label=None if cfg.label < 0 else int(cfg.label),
                      limit=int(cfg.n_images))
    if len(data["index"]) == 0:
        raise ValueError(f"repaint_sweep: split {cfg.split!r} has no images with label {cfg.label}")
    images = data["image"].astype(np.float32) / 255.0  # [N, H, W, 3]
    size = images.shape[1]
    masks = box_masks(data["index"], size, float(cfg.mask_fraction), int(ctx.config.seed))
    ids = np.asarray([rng.stable_int(int(i)) for i in data["index"]], np.uint32)
    keys = jax.vmap(lambda i: jax.random.fold_in(ctx.key, i))(ids)  # [N] per-image keys
    eps_model = loaders.load_eps_model(ctx.input_dir("train_ddpm"), dtype=jax.numpy.bfloat16 if cfg.bf16 else None)
    lpips_fn = None
    if cfg.lpips_alexnet_weights:
        from ibo_jax.evaluation.lpips import load_lpips, make_lpips_fn

        lpips_fn = make_lpips_fn(load_lpips(cfg.lpips_alexnet_weights))
    opts = dict(key=keys, eps_model=eps_model, n_draws=int(cfg.n_draws), batch_size=int(cfg.batch_size),
                eta=None if cfg.eta < 0 else float(cfg.eta), progress=False)
    setup = _rank_setup(ctx, cfg)
    grid = [(int(t), int(j), int(r)) for t, j, r in cfg.grid]
    for i, (t_T, j, r) in enumerate(ctx.progress(grid, desc="repaint_sweep", unit="setting")):
        name = f"{t_T}_{j}_{r}"
        if ctx.chunk_done(name + ".json") or i % ctx.process_count != ctx.process_index:
            continue  # done (resume), or another process's setting (each runs on its local devices)
        sched = dict(t_T=t_T, jump_length=j, jump_n_sample=r)
        cost = schedule_cost(t_T, j, r)
        stats: dict = {}
        out = np.asarray(ibo(images, masks, stats=stats, **sched, **opts))
        seconds, warm = stats["seconds"], stats["seconds"]
        if cfg.warm_timing:  # rerun the first chunk: same program, now compiled
            k = min(int(cfg.batch_size), len(images))
            t0 = time.perf_counter()
            jax.block_until_ready(ibo(images[:k], masks[:k], **sched, **(opts | {"key": keys[:k]})))
            warm = (time.perf_counter() - t0) * len(images) / k
        flat = out.reshape((-1,) + images.shape[1:])
        originals = np.repeat(images, int(cfg.n_draws), axis=0)
        row = {**sched, "unet_calls": cost.unet_calls, "undo_steps": cost.undo_steps, "seconds": seconds,
               "seconds_warm": warm, "s_per_inpainting": warm / len(flat), **_quality(originals, flat, lpips_fn)}
        arrays = {"image": np.round(flat * 255).astype(np.uint8), "index": np.repeat(data["index"], int(cfg.n_draws))}
        if setup is not None:
            res = _rank_one(setup, {**opts, **sched, "n_draws": 1})
            row.update(rank_inpaintings=int(len(res["rank_p"])), rank_seconds=res["rank_seconds"])
            arrays.update(rank_p=res["rank_p"], rank_logit=res["rank_logit"])
        write_npz(ctx.chunk_path(name + ".npz"), arrays)
        write_json(ctx.chunk_path(name + ".json"), row)  # last: marks the setting done
        ctx.scalar("repaint_sweep/ssim", row["ssim"], cost.unet_calls)
    if ctx.process_index != 0:  # process 0 assembles once every host's settings are there
        return {"settings": len(grid)}

    rows, rank_results = [], {}
    for t_T, j, r in grid:
        name = f"{t_T}_{j}_{r}"
        ctx.wait_for_chunk(name + ".json")
        rows.append(json.loads(ctx.chunk_path(name + ".json").read_text()))
        if setup is not None:
            saved = np.load(ctx.chunk_path(name + ".npz"))
            rank_results[setting_name(t_T, j, r)] = {k: saved[k] for k in ("rank_p", "rank_logit")}

    ranks = None
    if setup is not None:
        ranks = _rank_summary(setup, rank_results, n_boot=int(cfg.n_boot), seed=int(ctx.config.seed))
        for row in rows:
            s = ranks["strategies"][setting_name(row["t_T"], row["jump_length"], row["jump_n_sample"])]["morf"]
            agree = s.get("agreement", {})
            row.update(mard=agree.get("mard", float("nan")), spearman=agree.get("spearman", float("nan")),
                       mard_lo=s["mard_boot"]["lo"], mard_hi=s["mard_boot"]["hi"], ranking=s.get("ranking", {}))
            ctx.scalar("repaint_sweep/mard", row["mard"], row["unet_calls"])

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in COLUMNS})
    write_text(ctx.dir / "sweep.csv", buf.getvalue())
    out_json = {"rows": rows, "n_images": len(images), "mask_fraction": cfg.mask_fraction}
    if ranks is not None:
        out_json["rank_agreement"] = {"n_images": int(len(setup["ev"]["index"])), "methods": ranks["methods"],
                                      "gt_ranking": ranks["gt"]["ranking"],
                                      "paired_mard_tests": ranks["paired_mard_tests"]}
    write_json(ctx.dir / "sweep.json", out_json)
    _plot(rows, ctx.dir / "cost_quality.png")
    summary = {"settings": len(rows), "n_images": int(len(images)),
               "best_ssim": max(rows, key=lambda r: r["ssim"])["ssim"],
               "seconds": float(sum(r["seconds"] + r.get("rank_seconds", 0.0) for r in rows))}
    if ranks is not None:
        best = min(rows, key=lambda r: (r["mard"], r["unet_calls"]))
        summary.update(rank_images=int(len(setup["ev"]["index"])), best_mard=best["mard"],
                       best_mard_setting=setting_name(best["t_T"], best["jump_length"], best["jump_n_sample"]))
    return summary
