"""The report's figures, each drawn from the data it is given (summaries, arrays) into a PNG.

Every function returns False (and writes nothing) when its data are missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ibo_jax.evaluation.curves import CURVES, PRIMARY
from ibo_jax.io import pyplot, save_figure

DDPM_SETS = (("samples", "DDPM samples"), ("train_normal", "normal training patches (noise floor)"),
             ("test_tumor", "tumor test patches (class gap)"))


def figure_deletion_curves(summary: Mapping, path: Path, curve: str = PRIMARY) -> bool:
    strategies = [s for s in summary["strategies"] if curve in summary["strategies"][s]]
    if not strategies:
        return False
    plt = pyplot()
    cols = min(3, len(strategies))
    rows = (len(strategies) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax, s in zip(axes.flat, strategies, strict=False):
        curves = summary["strategies"][s][curve]["mean_curve"]
        for m in [x for x in summary["methods"] + summary.get("controls", []) if x in curves]:
            c = curves[m]
            style = "--" if m in summary.get("controls", []) else "-"
            ax.plot(c["x"], c["y"], style, marker="o", ms=3, label=m)
        ax.set_title(s)
        ax.set_xlabel(CURVES[curve].x_label)
        ax.set_ylabel("mean p(tumor)")
        ax.set_ylim(-0.02, 1.02)
    for ax in list(axes.flat)[len(strategies):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Deletion curves (lower area = more faithful explanation)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def figure_realism(summary: Mapping, path: Path) -> bool:
    strategies = [s for s in summary["strategies"] if PRIMARY in summary["strategies"][s]]
    metrics = [k for k in ("lpips", "ssim", "psnr") if any(k in summary["strategies"][s][PRIMARY]["realism"] for s in strategies)]
    kid = summary.get("kid") or {}
    panels = metrics + (["kid"] if kid else [])
    if not panels:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, k in zip(axes[0], panels, strict=True):
        for s in strategies:
            if k == "kid":
                y = [np.nan if v is None else v for v in kid.get(s, [])]
            else:
                y = [np.nan if c["mean"] is None else c["mean"] for c in summary["strategies"][s][PRIMARY]["realism"].get(k, [])]
            if y:
                ax.plot(range(1, len(y) + 1), y, marker="o", label=s)
        ax.set_title({"lpips": "LPIPS (lower = more realistic)", "ssim": "SSIM (higher = closer)",
                      "psnr": "PSNR dB (higher = closer)", "kid": "KID, classifier features"}[k], fontsize=9)
        ax.set_xlabel("mask level i (Mi removed)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def figure_rank_agreement(summary: Mapping, path: Path) -> bool:
    strategies = [s for s in summary["strategies"] if "agreement" in summary["strategies"][s].get(PRIMARY, {})]
    gt = summary["gt"]["ranking"]
    if not strategies or not gt:
        return False
    plt = pyplot()
    methods = sorted(gt, key=gt.get)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1.4]})
    mard = [summary["strategies"][s][PRIMARY]["agreement"]["mard"] for s in strategies]
    boot = [summary["strategies"][s][PRIMARY]["mard_boot"] for s in strategies]
    err = np.array([[max(0.0, m - b["lo"]), max(0.0, b["hi"] - m)] for m, b in zip(mard, boot, strict=True)]).T
    ax1.bar(strategies, mard, yerr=err, capsize=4, color="tab:blue")
    ax1.set_ylabel("MARD vs GT ranking (lower = agrees)")
    ax1.set_title("Rank agreement with the ground truth")
    ax1.tick_params(axis="x", rotation=30)
    grid = np.array([[gt[m] for m in methods]] + [[summary["strategies"][s][PRIMARY]["ranking"].get(m, np.nan) for m in methods] for s in strategies], float)
    im = ax2.imshow(grid, cmap="viridis_r", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax2.text(j, i, "" if np.isnan(v) else int(v), ha="center", va="center", color="w", fontsize=8)
    ax2.set_yticks(range(len(strategies) + 1), ["GT (IoU)"] + strategies)
    ax2.set_xticks(range(len(methods)), methods, rotation=30, fontsize=8)
    ax2.set_title("Rank of each method (1 = best)")
    fig.colorbar(im, ax=ax2)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def figure_levels(ev: Mapping, hm: Mapping, path: Path, n_images: int = 3) -> bool:
    """Importance levels per method for the first patches (ev, hm: the explain stage's arrays)."""
    levels, methods = hm["levels"], [str(m) for m in hm["methods"]]
    n = min(n_images, levels.shape[0])
    plt = pyplot()
    k = max(int(levels.max()), 2)
    fig, axes = plt.subplots(n, len(methods) + 1, figsize=(1.6 * (len(methods) + 1), 1.7 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(ev["image"][i])
        axes[i, 0].contour(ev["tumor_mask"][i], levels=[0.5], colors="lime", linewidths=0.8)
        for j, m in enumerate(methods):
            lv = np.where(levels[i, j] > 0, levels[i, j], np.nan)
            axes[i, j + 1].imshow(lv, cmap="jet_r", vmin=1, vmax=k)
            if i == 0:
                axes[i, j + 1].set_title(m, fontsize=8)
        if i == 0:
            axes[i, 0].set_title("image + GT", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Importance levels (red = level 1, most important ... blue = least; never removed)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def figure_ddpm_quality(q: Mapping | None, path: Path) -> bool:
    """KID against held-out normal patches: the DDPM's samples between the floor and the gap
    (q: the ddpm_check stage's summary)."""
    q = q or {}
    kids = [(label, q["kid"][k]) for k, label in DDPM_SETS if k in q.get("kid", {})]
    if not kids:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 2.6))
    vals = [max(float(v["kid"]), 1e-6) for _, v in kids]
    ax.barh([label for label, _ in kids], vals, color=["tab:purple", "tab:gray", "tab:red"][: len(kids)])
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("KID vs held-out normal patches (classifier features; log scale, floored at 1e-6)")
    ax.set_title(f"DDPM sample quality: {q['n']} images each, {q['sample_steps']} sampling steps", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return True


