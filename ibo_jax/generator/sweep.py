"""The sampler sweep: settings, the quality of each setting's fills, non-inferiority against a
reference setting, the cost-quality front, and the assembled table and figure.

A setting is a `repaint.Setting`; in configs (sampler, t_T, jump_length, jump_n_sample[, eta]) or,
for RePaint, (t_T, jump_length, jump_n_sample) (`parse_grid`). For every setting the same images,
masks and keys (common random numbers, `generator.sweep_inputs`) are inpainted:
- box masks (a random square per image): realism against the originals (SSIM, PSNR, LPIPS) and,
  on synthetic data, against the counterfactual box (the twin's pixels in the box): KID in the
  classifier's features and the hematoxylin share inside the box;
- the whole annotated region of each tumor image (residual evidence): p(tumor) left against the
  twin's, the hematoxylin share inside the region against the twins';
- every ranked method's MoRF masks on evaluation patches: MARD of the CAM ranking against the IoU
  ranking and, with twins, against the counterfactual ranking.
`setting_row` computes one setting's row (and the arrays its resume file keeps); `assemble` joins
the rows with the rank agreement, the reference's verdicts and the Pareto front; `csv_text` and
`plot` render them. Bootstrap means come from `ibo_jax.stats` (`finite_mean_ci`); `_boot_kid` (KID over resampled pairs) is the sweep's own.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import numpy as np

from ibo_jax import rng, stats
from ibo_jax.evaluation import realism
from ibo_jax.evaluation.curves import PRIMARY
from ibo_jax.generator.sweep_inputs import SweepInputs, box_masks, rank_setup, rank_summary
from ibo_jax.repaint.setting import Setting

COLUMNS = ("setting", "sampler", "t_T", "jump_length", "jump_n_sample", "eta", "network_calls", "unet_calls", "undo_steps",
           "seconds", "seconds_warm", "s_per_inpainting", "psnr", "ssim", "lpips", "box_kid_twin", "box_ssim_twin",
           "box_hshare", "residual_p", "residual_p_lo", "residual_p_hi", "residual_hshare", "mard", "mard_lo",
           "mard_hi", "spearman", "mard_cf", "mard_cf_lo", "mard_cf_hi", "rank_inpaintings", "rank_seconds",
           "noninferior")


def parse_grid(grid: Sequence, field: str = "repaint_sweep.grid") -> list[Setting]:
    """Settings from config values (`Setting.parse`: (t_T, j, r) -> RePaint; (sampler, t_T, j, r)
    or (sampler, t_T, j, r, eta) for any sampler; a mapping or a Setting); repeats are an error."""
    out = [Setting.parse(g, f"{field}[{i}]") for i, g in enumerate(grid)]
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{field}: repeated settings {sorted({n for n in names if names.count(n) > 1})}")
    return out


def _boot_kid(fa: np.ndarray, fb: np.ndarray, idx: np.ndarray, alpha: float = 0.05) -> dict:
    """KID of paired feature sets with a bootstrap over the pairs (the same rows of both)."""
    k = realism.kid(fa, fb, paired=True)["kid"]
    boots = []
    for i in idx[: min(len(idx), 200)]:
        u = np.unique(i)  # a resample's distinct pairs (repeated rows would pair with themselves)
        if len(u) >= 2:
            boots.append(realism.kid(fa[u], fb[u], paired=True)["kid"])
    return {"mean": float(k), "lo": float(np.quantile(boots, alpha / 2)), "hi": float(np.quantile(boots, 1 - alpha / 2))}


def fill_quality(fills: np.ndarray, masks: np.ndarray, predict_fn, *, reference: np.ndarray | None,
                 reference_feat: np.ndarray | None, hshare_fn=None, n_boot: int = 500, seed: int = 0) -> dict:
    """Quality of uint8 fills [N, H, W, 3] where `masks` [N, H, W] was regenerated, against what
    the region would look like without tumor (`reference`: counterfactual images, uint8, or None):
    p(tumor) of the fills, KID against the reference in the classifier's features, SSIM/PSNR inside
    the mask, and the hematoxylin share inside the mask (hshare_fn(images, masks) -> [N] or None)."""
    idx = stats.bootstrap_indices(len(fills), n_boot, seed)
    p, _, feat = predict_fn(fills)
    out = {"p_tumor": stats.finite_mean_ci(p, idx)}
    if reference is not None:
        ref_feat = reference_feat if reference_feat is not None else predict_fn(reference)[2]
        out["kid_twin"] = _boot_kid(np.asarray(feat, np.float64), np.asarray(ref_feat, np.float64), idx)
        q = realism.masked_pair_metrics(reference.astype(np.float32) / 255.0, fills.astype(np.float32) / 255.0, masks)
        out["ssim_twin"], out["psnr_twin"] = stats.finite_mean_ci(q["ssim"], idx), stats.finite_mean_ci(q["psnr"], idx)
    h = hshare_fn(fills, masks) if hshare_fn is not None else None
    if h is not None:
        out["hshare"] = stats.finite_mean_ci(h, idx)
    return out


def reference_quality(reference: np.ndarray, masks: np.ndarray, predict_fn, hshare_fn=None) -> dict:
    """The counterfactual reference itself: its p(tumor), features and hematoxylin shares (5-95%)."""
    p, _, feat = predict_fn(reference)
    out = {"p_tumor": float(np.mean(p)), "feat": feat}
    h = hshare_fn(reference, masks) if hshare_fn is not None else None
    if h is not None and np.isfinite(h).any():
        out["hshare_5_95"] = [float(np.nanquantile(h, 0.05)), float(np.nanquantile(h, 0.95))]
        out["hshare_median"] = float(np.nanmedian(h))
    return out


#: metric -> (where it sits in a row, True if higher is better)
NONINFERIORITY = {"kid_twin": ("box_kid_twin", False), "ssim_twin": ("box_ssim_twin", True),
                  "residual_p": ("residual_p", False)}


def noninferior(row: Mapping, ref: Mapping) -> dict:
    """Is a setting no worse than the reference on every metric: its mean inside (or better than)
    the reference's bootstrap interval; and its hematoxylin shares inside the twins' 5-95% range."""
    verdict = {}
    for metric, (key, higher) in NONINFERIORITY.items():
        v, lo, hi = row.get(key), ref.get(f"{key}_lo"), ref.get(f"{key}_hi")
        if v is None or lo is None or not np.isfinite(v) or not np.isfinite(lo):
            continue
        verdict[metric] = bool(v >= lo) if higher else bool(v <= hi)
    for key in ("box_hshare", "residual_hshare"):
        v, rng_ = row.get(key), row.get(f"{key}_twin_5_95")
        if v is not None and rng_ and np.isfinite(v):
            verdict[key] = bool(rng_[0] <= v <= rng_[1])
    verdict["all"] = bool(verdict) and all(verdict.values())
    return verdict


def pareto_front(rows: Sequence[Mapping], cost: str, quality: str, higher_is_better: bool) -> list[int]:
    """Indices of the rows no other row beats on both cost (lower) and quality."""
    sign = -1.0 if higher_is_better else 1.0
    pts = [(float(r[cost]), sign * float(r[quality])) for r in rows]
    front = []
    for i, (c, q) in enumerate(pts):
        if not np.isfinite(q):
            continue
        if not any((c2 <= c and q2 <= q) and (c2 < c or q2 < q) for j, (c2, q2) in enumerate(pts) if j != i and np.isfinite(q2)):
            front.append(i)
    return front


def _label(row: Mapping) -> str:
    """A row's setting label: its `Setting.name` as written (rows of older sweeps: rebuilt from the
    sampler and schedule, without eta)."""
    if row.get("setting"):
        return str(row["setting"])
    return Setting(row["sampler"], row["t_T"], row["jump_length"], row["jump_n_sample"]).name


def setting_row(setting: Setting, inputs: SweepInputs, eps_model, predict: Callable, *, n_draws: int = 1,
                batch_size: int = 8, eta: float | None = None, warm_timing: bool = True, n_boot: int = 500,
                lpips_fn: Callable | None = None, setup: dict | None = None) -> tuple[dict, dict]:
    """One setting's row (cost, realism, residual evidence; rank agreement inputs) and the arrays
    its resume file keeps (the box fills, and with `setup` (`rank_setup`) the re-predictions of the
    rank rows). eta: used when the setting gives none (None: the sampler's default)."""
    from ibo_jax.occlusion import to_uint8
    from ibo_jax.occlusion.ibo import ibo

    d, images = inputs.data, inputs.data["image"].astype(np.float32) / 255.0
    kw = {"eps_model": eps_model, "n_draws": int(n_draws), "batch_size": int(batch_size), "progress": False,
          **setting.ibo_kwargs()}
    if kw["eta"] is None and eta is not None:
        kw["eta"] = float(eta)
    stats: dict = {}
    out = np.asarray(ibo(images, inputs.box, key=inputs.keys, stats=stats, **kw))
    seconds = warm = stats["seconds"]
    if warm_timing:  # rerun the first chunk: same program, now compiled
        k = min(int(batch_size), len(images))
        t0 = time.perf_counter()
        jax.block_until_ready(ibo(images[:k], inputs.box[:k], key=inputs.keys[:k], **kw))
        warm = (time.perf_counter() - t0) * len(images) / k
    flat = out.reshape((-1,) + images.shape[1:])
    originals = np.repeat(images, int(n_draws), axis=0)
    q = _quality(originals, flat, lpips_fn)
    row = {"setting": setting.name, "sampler": setting.sampler, "t_T": setting.t_T, "jump_length": setting.jump_length,
           "jump_n_sample": setting.jump_n_sample, "eta": kw["eta"], "network_calls": setting.network_calls,
           "unet_calls": setting.network_calls, "undo_steps": setting.undo_steps, "seconds": seconds,
           "seconds_warm": warm, "s_per_inpainting": warm / len(flat), **q}
    arrays = {"image": to_uint8(flat), "index": np.repeat(d["index"], int(n_draws))}
    detail = {}
    if "box" in inputs.refs and int(n_draws) == 1:
        cf, ref = inputs.refs["box"]
        fq = fill_quality(arrays["image"], inputs.box, predict, reference=cf, reference_feat=ref["feat"],
                          hshare_fn=inputs.hshare(np.arange(len(d["index"]))), n_boot=int(n_boot), seed=inputs.seed)
        detail["box"] = fq
        row.update(box_kid_twin=fq["kid_twin"]["mean"], box_kid_twin_lo=fq["kid_twin"]["lo"],
                   box_kid_twin_hi=fq["kid_twin"]["hi"], box_ssim_twin=fq["ssim_twin"]["mean"],
                   box_ssim_twin_lo=fq["ssim_twin"]["lo"], box_ssim_twin_hi=fq["ssim_twin"]["hi"],
                   box_hshare=fq.get("hshare", {}).get("mean"), box_hshare_twin_5_95=ref.get("hshare_5_95"))
    if len(inputs.res_idx):
        idx = inputs.res_idx
        masks = d["tumor_mask"][idx]
        res_keys = jax.vmap(lambda k: jax.random.fold_in(k, rng.stable_int("residual")))(inputs.keys[idx])
        fills = to_uint8(ibo(images[idx], masks, key=res_keys, **{**kw, "n_draws": 1}))
        ref = inputs.refs.get("residual")
        fq = fill_quality(fills, masks, predict, reference=ref[0] if ref else None,
                          reference_feat=ref[1]["feat"] if ref else None, hshare_fn=inputs.hshare(idx),
                          n_boot=int(n_boot), seed=inputs.seed)
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


def assemble(settings: Sequence[Setting], rows: list[dict], *, setup: dict | None = None,
             rank_results: Mapping[str, dict] | None = None, reference: Setting | None = None, n_images: int,
             mask_fraction: float, twins: bool, n_boot: int = 500, seed: int = 0) -> tuple[dict, list[int]]:
    """The rows of every setting (in `settings`' order; updated in place with the rank agreement
    and the non-inferiority verdicts) -> (sweep.json's content, the Pareto front on SSIM)."""
    ranks = rank_summary(setup, dict(rank_results or {}), n_boot=n_boot, seed=seed) if setup else None
    for setting, row in zip(settings, rows, strict=True):
        if ranks is None:
            continue
        s = ranks["strategies"][setting.name][PRIMARY]
        agree = s.get("agreement", {})
        row.update(mard=agree.get("mard", float("nan")), spearman=agree.get("spearman", float("nan")),
                   mard_lo=s["mard_boot"]["lo"], mard_hi=s["mard_boot"]["hi"], ranking=s.get("ranking", {}))
        cf = (ranks.get("counterfactual") or {}).get("curves", {}).get(PRIMARY, {}).get("strategies", {}).get(setting.name)
        if cf and "mard" in cf:
            row.update(mard_cf=cf["mard"], mard_cf_lo=cf["mard_boot"]["lo"], mard_cf_hi=cf["mard_boot"]["hi"])
    out = {"rows": rows, "n_images": int(n_images), "mask_fraction": mask_fraction, "twins": bool(twins)}
    if reference is not None:
        ref_row = rows[[s.name for s in settings].index(reference.name)]
        for row in rows:
            row["noninferior"] = noninferior(row, ref_row)
        ok = [r for r in rows if r["noninferior"].get("all")]
        out["reference"] = reference.name
        out["cheapest_noninferior"] = _label(min(ok, key=lambda r: r["network_calls"])) if ok else None
    front = pareto_front(rows, "network_calls", "ssim", True)
    out["pareto_front_ssim"] = [_label(rows[i]) for i in front]
    if ranks is not None:
        out["rank_agreement"] = {"n_images": int(len(setup["ev"]["index"])), "methods": ranks["methods"],
                                 "gt_ranking": ranks["gt"]["ranking"], "paired_mard_tests": ranks["paired_mard_tests"]}
        if "counterfactual" in ranks:
            c = ranks["counterfactual"]["curves"][PRIMARY]
            out["rank_agreement"].update(counterfactual_ranking=c["reference_ranking"],
                                         paired_mard_tests_counterfactual=c["paired_mard_tests"])
    return out, front


def csv_text(rows: Sequence[Mapping]) -> str:
    """sweep.csv: one line per setting, the `COLUMNS` (non-inferiority as its overall verdict)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (row.get(k, "") if k != "noninferior" else (row.get(k) or {}).get("all", ""))
                         for k in COLUMNS})
    return buf.getvalue()


def summary(rows: Sequence[Mapping], sweep_json: Mapping, n_images: int) -> dict:
    """The stage's summary: settings, best SSIM, seconds, the cheapest non-inferior and best-MARD settings."""
    out = {"settings": len(rows), "n_images": int(n_images), "best_ssim": max(rows, key=lambda r: r["ssim"])["ssim"],
           "seconds": float(sum(r["seconds"] + r.get("rank_seconds", 0.0) for r in rows))}
    if "cheapest_noninferior" in sweep_json:
        out["cheapest_noninferior"] = sweep_json["cheapest_noninferior"]
    if "rank_agreement" in sweep_json:
        best = min(rows, key=lambda r: (r["mard"], r["network_calls"]))
        out.update(rank_images=sweep_json["rank_agreement"]["n_images"], best_mard=best["mard"],
                   best_mard_setting=_label(best))
    return out


def plot(rows: list[dict], front: list[int], path: Path) -> None:
    """cost_quality.png: network calls against SSIM/LPIPS, KID, p(tumor) left and MARD (red: the front)."""
    from ibo_jax.io import pyplot, save_figure

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
            ax.annotate(_label(r), (x, y), fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel("network calls per inpainting")
        ax.set_ylabel(labels.get(metric, f"{metric} vs original"))
    fig.suptitle("Inpainting cost against quality (red: the Pareto front on SSIM)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


__all__ = ["COLUMNS", "NONINFERIORITY", "Setting", "SweepInputs", "assemble", "box_masks", "csv_text",
           "fill_quality", "noninferior", "parse_grid", "pareto_front", "plot", "rank_setup", "rank_summary",
           "reference_quality", "setting_row", "summary"]
