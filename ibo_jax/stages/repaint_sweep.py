"""Stage `repaint_sweep`: RePaint cost against quality over a grid of (t_T, jump_length, jump_n_sample).

Inputs: `data` (patches of one split) and `train_ddpm` (the EMA epsilon model). For each grid point
the same images and masks (a random box per image, `mask_fraction` of the area, drawn from the
image's index) are inpainted with per-example keys folded from (image index, draw), so every grid
point sees identical inputs. Cost: network calls and undo steps per inpainting (exact, from the
schedule) and seconds (wall, with and without compilation). Quality against the originals: PSNR
and SSIM always, LPIPS when `lpips_alexnet` names AlexNet weights. Rank agreement (MARD of the CAM
ranking obtained with each setting) needs the score stage and is not computed here.

Outputs: `sweep.csv` (one row per grid point), `sweep.json`, `cost_quality.png`, and per grid
point `chunks/<t_T>_<j>_<r>.json` + `.npz` (uint8 inpaintings) so a killed sweep resumes.
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
from ibo_jax.io import save_figure, write_json, write_npz, write_text
from ibo_jax.occlusion.ibo import ibo
from ibo_jax.repaint.schedule import schedule_cost

COLUMNS = ("t_T", "jump_length", "jump_n_sample", "unet_calls", "undo_steps", "seconds", "seconds_warm",
           "s_per_inpainting", "psnr", "ssim", "lpips")


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
    cfg.lpips_alexnet = ""  # path to torchvision AlexNet weights; empty: no LPIPS
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


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["unet_calls"] for r in rows]
    for ax, metric in zip(axes, ("ssim", "lpips" if any(np.isfinite(r["lpips"]) for r in rows) else "psnr")):
        ys = [r[metric] for r in rows]
        ax.scatter(xs, ys)
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"({r['t_T']},{r['jump_length']},{r['jump_n_sample']})", (x, y), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("network calls per inpainting")
        ax.set_ylabel(f"{metric} vs original")
    fig.suptitle("RePaint cost vs quality")
    fig.tight_layout()
    save_figure(fig, path)


def run(ctx) -> dict:
    from ibo_jax.data.patches import read_split
    from ibo_jax.train.ddpm import load_eps_model

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
    eps_model = load_eps_model(ctx.input_dir("train_ddpm"), dtype=jax.numpy.bfloat16 if cfg.bf16 else None)
    lpips_fn = None
    if cfg.lpips_alexnet:
        from ibo_jax.evaluation.lpips import load_lpips, make_lpips_fn

        lpips_fn = make_lpips_fn(load_lpips(cfg.lpips_alexnet))
    opts = dict(key=keys, eps_model=eps_model, n_draws=int(cfg.n_draws), batch_size=int(cfg.batch_size),
                eta=None if cfg.eta < 0 else float(cfg.eta), progress=False)
    rows = []
    for t_T, j, r in ctx.progress(list(cfg.grid), desc="repaint_sweep", unit="setting"):
        name = f"{t_T}_{j}_{r}"
        if ctx.chunk_done(name + ".json"):
            rows.append(json.loads(ctx.chunk_path(name + ".json").read_text()))
            continue
        cost = schedule_cost(int(t_T), int(j), int(r))
        stats: dict = {}
        out = np.asarray(ibo(images, masks, t_T=int(t_T), jump_length=int(j), jump_n_sample=int(r),
                             stats=stats, **opts))
        seconds, warm = stats["seconds"], stats["seconds"]
        if cfg.warm_timing:  # rerun the first chunk: same program, now compiled
            k = min(int(cfg.batch_size), len(images))
            t0 = time.perf_counter()
            jax.block_until_ready(ibo(images[:k], masks[:k], t_T=int(t_T), jump_length=int(j),
                                      jump_n_sample=int(r), **(opts | {"key": keys[:k]})))
            warm = (time.perf_counter() - t0) * len(images) / k
        flat = out.reshape((-1,) + images.shape[1:])
        originals = np.repeat(images, int(cfg.n_draws), axis=0)
        row = {"t_T": int(t_T), "jump_length": int(j), "jump_n_sample": int(r), "unet_calls": cost.unet_calls,
               "undo_steps": cost.undo_steps, "seconds": seconds, "seconds_warm": warm,
               "s_per_inpainting": warm / len(flat), **_quality(originals, flat, lpips_fn)}
        write_npz(ctx.chunk_path(name + ".npz"), {"image": np.round(flat * 255).astype(np.uint8),
                                                  "index": np.repeat(data["index"], int(cfg.n_draws))})
        write_json(ctx.chunk_path(name + ".json"), row)
        ctx.scalar("repaint_sweep/ssim", row["ssim"], cost.unet_calls)
        rows.append(row)

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in COLUMNS})
    write_text(ctx.dir / "sweep.csv", buf.getvalue())
    write_json(ctx.dir / "sweep.json", {"rows": rows, "n_images": len(images), "mask_fraction": cfg.mask_fraction})
    _plot(rows, ctx.dir / "cost_quality.png")
    return {"settings": len(rows), "n_images": int(len(images)),
            "best_ssim": max(rows, key=lambda r: r["ssim"])["ssim"],
            "seconds": float(sum(r["seconds"] for r in rows))}
