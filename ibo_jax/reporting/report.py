"""The study's report: `report.md` with tables (confidence intervals) and PNG figures beside it.

Pure rendering of what it is given: the score summary, and optionally the classifier's metrics,
the DDPM check, the RePaint sweep, the explain arrays and figures other stages drew (copied
beside the report). `stages/report.py` reads those from its declared inputs:

    write_report(out_dir, summary=..., classifier_metrics=..., ddpm_check=..., sweep=...,
                 explain=(ev, hm), upstream_figures=[(path, caption)], ground_truth=..., config=...)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ibo_jax import artifacts
from ibo_jax import io as ibo_io
from ibo_jax.evaluation.curves import CURVES, PRIMARY
from ibo_jax.reporting import figures as F
from ibo_jax.reporting import markdown as md

# (stage, file, caption) of the figures other stages drew: kept for old callers; the registry is
# `ibo_jax.artifacts.FIGURES`, and the report stage passes the figures it found (`upstream_figures`).
UPSTREAM_FIGURES = tuple((f.stage, f.file, f.caption) for f in artifacts.FIGURES)
SCHEDULE_KEYS = ("t_T", "jump_length", "jump_n_sample", "eta", "n_draws", "timesteps")


def _find(tree: Any, keys: tuple[str, ...], prefix: str = "") -> dict[str, Any]:
    out = {}
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            if k in keys:
                out[name] = v
            out.update(_find(v, keys, name))
    return out


def _section_tables(summary: Mapping) -> list[str]:
    out = []
    strategies = list(summary["strategies"])
    methods, controls = summary["methods"], summary.get("controls", [])
    gt = summary["gt"]
    out.append("## Ground truth: IoU of the combined mask M4 with the pathologists' tumor mask\n\n"
               "Mean over patches, 95% bootstrap confidence interval in brackets. The GT ranking sorts "
               "methods by mean IoU, highest first. Controls are shown but never ranked.\n\n")
    out.append(md.table(["method", "mean IoU [95% CI]", "patches", "GT rank"],
                      [[m, md.mean_interval(gt["iou"].get(m)), int(gt["iou"].get(m, {}).get("n") or 0),
                        gt["ranking"].get(m, "control" if m in controls else "unranked (no valid patch)")]
                       for m in methods + controls]))
    for curve, spec in CURVES.items():
        if not any(curve in summary["strategies"][s] for s in strategies):
            continue
        cols = [s for s in strategies if curve in summary["strategies"][s]]
        out.append(f"\n## {spec.title}\n\nMean AUC of p(tumor) [95% CI] (rank). {spec.caption}\n\n")
        rows = []
        for m in methods + controls:
            row = [m]
            for s in cols:
                d = summary["strategies"][s][curve]
                r = d.get("ranking", {}).get(m)
                row.append(f"{md.mean_interval(d['auc'].get(m))} ({r if r else 'control' if m in controls else '-'})")
            rows.append(row)
        out.append(md.table(["method"] + cols, rows))
        out.append("\n**Agreement of each strategy's ranking with the GT ranking**\n\n")
        agr = []
        for s in cols:
            d = summary["strategies"][s][curve]
            a, al, b = d.get("agreement", {}), d.get("agreement_logit", {}), d.get("mard_boot", {})
            agr.append([s, md.num(a.get("mard")), md.bracket(b.get("lo"), b.get("hi")),
                        f"{100 * a['exact_match']:.0f}%" if "exact_match" in a else "n/a",
                        md.num(a.get("spearman")), md.num(a.get("kendall")), md.num(al.get("mard"))])
        out.append(md.table(["strategy", "MARD", "MARD bootstrap 95% interval", "exact rank matches",
                           "Spearman", "Kendall", "MARD (AUC on logit)"], agr))
    stab = [s for s in strategies if "rank_freq" in summary["strategies"][s].get(PRIMARY, {})]
    if stab:
        out.append("\n## Rank stability (bootstrap over patches)\n\nShare of resamples in which each "
                   "method keeps the rank it has on all patches (MoRF AUC; GT: IoU). Low shares mean the "
                   "ranking hinges on a few patches.\n\n")
        rows = []
        for m in methods:
            row = [m]
            for freq, rank in [(gt.get("rank_freq"), gt["ranking"])] + [
                    (summary["strategies"][s][PRIMARY]["rank_freq"], summary["strategies"][s][PRIMARY].get("ranking", {})) for s in stab]:
                ok = freq and m in freq and m in rank
                row.append(f"{100 * freq[m][rank[m] - 1]:.0f}% (rank {rank[m]})" if ok else "n/a")
            rows.append(row)
        out.append(md.table(["method", "GT"] + stab, rows))
    if any("area" in summary["strategies"][s].get(PRIMARY, {}) for s in strategies):
        s0 = next(s for s in strategies if "area" in summary["strategies"][s].get(PRIMARY, {}))
        area = summary["strategies"][s0][PRIMARY]["area"]
        out.append("\n## Mask area |Mi| / HW per method\n\nLarger masks can win both the AUC (x is "
                   "normalized by each method's own |M4|) and the IoU on mostly-tumor patches.\n\n")
        n = len(next(iter(area.values())))
        out.append(md.table(["method"] + [f"M{i + 1}" for i in range(n)],
                          [[m] + [md.num(v) for v in area[m]] for m in methods + controls if m in area]))
    out.append("\n## Realism of the occluded images per strategy and mask level\n\n"
               "LPIPS (AlexNet; lower = more realistic), SSIM and PSNR against the original (higher = "
               "closer), and KID between original and occluded images in the classifier's own feature "
               "space (lower = less out-of-distribution for this classifier). Mean [95% CI] over patches.\n\n")
    if not summary.get("lpips_available"):
        out.append("LPIPS: **unavailable** (no AlexNet backbone weights were configured; set "
                   "`score.lpips_alexnet_weights` to a torchvision AlexNet state dict file).\n\n")
    rows = []
    for s in strategies:
        d = summary["strategies"][s].get(PRIMARY)
        if not d:
            continue
        real, kid = d["realism"], (summary.get("kid") or {}).get(s, [])
        n = max([len(v) for v in real.values()] + [len(kid)])
        for i in range(n):
            cells = [md.mean_interval(real[k][i]) if k in real and i < len(real[k]) else "n/a" for k in ("lpips", "ssim", "psnr")]
            rows.append([s, f"M{i + 1}", *cells, md.num(kid[i], 4) if i < len(kid) else "n/a"])
    out.append(md.table(["strategy", "mask", "LPIPS", "SSIM", "PSNR (dB)", "KID"], rows))
    tests = summary.get("paired_mard_tests") or {}
    if tests:
        out.append("\n## Is one strategy's MARD really lower than another's? (paired bootstrap)\n\n"
                   "Patches are resampled together for both strategies and the GT; p = share of "
                   "resamples where A's MARD is not lower than B's (small p: A agrees with the GT better "
                   "beyond patch-sampling noise). Cell: MARD(row) - MARD(column) (p).\n\n")
        out.append(paired_matrix(tests))
    return out


def paired_matrix(tests: Mapping[str, Mapping]) -> str:
    """'A<B' paired tests as one compact matrix: row A, column B, cell 'MARD(A) - MARD(B) (p)'."""
    names = sorted({n for k in tests for n in k.split("<")})
    rows = []
    for a in names:
        row = [a]
        for b in names:
            t = tests.get(f"{a}<{b}")
            row.append("" if t is None else f"{md.num(t['mard_diff'], 2)} ({md.num(t['p_value'], 2)})")
        rows.append(row)
    return md.table(["A \\ B", *names], rows)


def ddpm_section(q: Mapping) -> list[str]:
    if not q or "kid" not in q:
        return [f"\n## The DDPM's samples\n\n{q.get('skipped', 'not measured')}\n"] if q else []

    def kid_cell(k):
        if k not in q["kid"]:
            return "n/a"
        v = q["kid"][k]
        return md.num(v["kid"], 4) + (f" ± {md.num(v['std'], 4)}" if np.isfinite(v.get("std", float("nan"))) else "")

    rows = [[label, kid_cell(k), md.num(q["p_tumor_mean"].get(k)), md.num(q["share_called_normal"].get(k))]
            for k, label in F.DDPM_SETS]
    out = ["\n## The DDPM's samples\n\nIBO is only as good as its generator. KID (in the classifier's "
           f"feature space) of {q['n']} DDPM samples ({q['sample_steps']} ancestral steps) against "
           "held-out normal patches, beside two references of real patches: normal training patches "
           "(how far two real normal sets are: the floor) and tumor patches (the class gap). Samples "
           "close to the floor and far below the gap look like normal tissue to the classifier.\n\n",
           md.table(["set", "KID vs held-out normal", "mean p(tumor)", "share called normal"], rows)]
    t = q.get("targets") or {}
    if t:
        parts = []
        if "called_normal" in t:
            c = t["called_normal"]
            parts.append(f"samples called normal {100 * c['value']:.0f}% (target >= {100 * c['target']:.0f}%: "
                         f"{'met' if c['met'] else 'not met'})")
        if "kid_vs_gap" in t:
            c = t["kid_vs_gap"]
            parts.append(f"KID {c['ratio']:.3f} x the tumor-normal gap (target <= 0.05: {'met' if c['met'] else 'not met'})")
        out.append("\nTargets: " + "; ".join(parts) + ".\n")
    return out


def sweep_section(sweep: Mapping) -> list[str]:
    """repaint_sweep/sweep.json: cost, realism, residual evidence and rank agreement per setting."""
    rows = sweep.get("rows") or []
    if not rows:
        return []
    rank = sweep.get("rank_agreement")
    twins = any(r.get("box_kid_twin") is not None for r in rows)
    residual = any(r.get("residual_p") is not None for r in rows)
    cf = any(r.get("mard_cf") is not None for r in rows)
    out = ["\n## Inpainting samplers: cost against quality\n\n"
           f"Each setting (sampler, t_T, jump_length, jump_n_sample) inpaints the same {sweep.get('n_images', 'n/a')} "
           f"patches under a random box of {md.num(sweep.get('mask_fraction'), 2)} of the area (realism against the "
           "originals" + (", and against the counterfactual box, the twin's pixels in the box: KID in the classifier's "
                          "features, hematoxylin share in the box" if twins else "") + ")"]
    if residual:
        out.append("; it also fills the whole annotated region of each tumor patch (residual evidence: the "
                   "p(tumor) left, lower = the evidence is gone)")
    if rank:
        out.append(f"; and the first {rank['n_images']} evaluation patches under every method's masks M1..Mn "
                   "with the same keys for every setting, ranked by deletion AUC against the IoU ranking (MARD"
                   + (") and the counterfactual ranking (MARD cf" if cf else "") + ", lower = agrees)")
    out.append(". Seconds are wall time on this run's machine, compiled.\n\n")
    header = ["setting", "network calls", "s per inpainting", "SSIM", "PSNR (dB)", "LPIPS"]
    if twins:
        header += ["KID vs cf boxes", "H share (box)", "twins' H 5-95%"]
    if residual:
        header += ["p(tumor) left", "95% interval"]
    if rank:
        header += ["MARD", "MARD 95% interval", "Spearman"] + (["MARD cf", "MARD cf interval"] if cf else [])
    if sweep.get("reference"):
        header += [f"non-inferior to {sweep['reference']}"]
    table = []
    for r in rows:
        name = r.get("setting") or (  # the sweep's label (Setting.name); older sweeps wrote none
            f"{r.get('sampler', 'repaint')}({r['t_T']},{r['jump_length']},{r['jump_n_sample']}"
            + ("" if r.get("eta") is None else f",eta={r['eta']:g}") + ")")
        cells = [name, r.get("network_calls", r.get("unet_calls")), md.num(r.get("s_per_inpainting"), 4),
                 md.num(r.get("ssim")), md.num(r.get("psnr"), 2), md.num(r.get("lpips"))]
        if twins:
            rng_ = r.get("box_hshare_twin_5_95") or [None, None]
            cells += [md.num(r.get("box_kid_twin")), md.num(r.get("box_hshare")), md.bracket(rng_[0], rng_[1])]
        if residual:
            cells += [md.num(r.get("residual_p")), md.bracket(r.get("residual_p_lo"), r.get("residual_p_hi"))]
        if rank:
            cells += [md.num(r.get("mard")), md.bracket(r.get("mard_lo"), r.get("mard_hi")), md.num(r.get("spearman"))]
            if cf:
                cells += [md.num(r.get("mard_cf")), md.bracket(r.get("mard_cf_lo"), r.get("mard_cf_hi"))]
        if sweep.get("reference"):
            cells.append("yes" if (r.get("noninferior") or {}).get("all") else "no")
        table.append(cells)
    out.append(md.table(header, table))
    if sweep.get("reference"):
        out.append(f"\nCheapest setting non-inferior to {sweep['reference']} (inside its bootstrap interval on "
                   "KID and SSIM against the counterfactual boxes and on the p(tumor) left, hematoxylin shares "
                   f"inside the twins' range): **{sweep.get('cheapest_noninferior') or 'none'}**.\n")
    if sweep.get("pareto_front_ssim"):
        out.append(f"\nPareto front (network calls against SSIM): {', '.join(sweep['pareto_front_ssim'])}.\n")
    return out


def slides_section(slides: Mapping) -> list[str]:
    """data/slides/slides.json: per slide, what the extraction found and took, and its times."""
    rows = slides.get("slides") or []
    if not rows:
        return []
    out = ["\n## Slides\n\n"
           f"{len(rows)} slides ({sum(r['annotation'] is not None for r in rows)} with an annotation), split "
           f"{slides.get('split_by', 'by slide')}. Candidates are tissue windows labelled by the annotation "
           "(tumor: share >= threshold; normal: no tumor pixel); the patches taken follow the per-slide caps and "
           "class totals. Seconds: labels (the low-resolution screen plus full resolution where it cannot "
           "decide), masks and reads of the taken patches.\n\n"]
    table = [[r["slide"], r["class"], r["tissue_windows"], md.num(r["tissue_fraction"], 2), r["candidates_normal"],
              r["candidates_tumor"], r["patches_normal"], r["patches_tumor"], r["full_res_windows"],
              md.num(r["seconds_labels"], 2), md.num(r["seconds_masks"], 2), md.num(r["seconds_reads"], 2)] for r in rows]
    out.append(md.table(["slide", "class", "tissue windows", "tissue share", "normal cand.", "tumor cand.",
                       "normal taken", "tumor taken", "full-res labels", "s labels", "s masks", "s reads"], table))
    skipped = sorted({x for r in rows for x in r.get("skipped_annotations", [])})
    if skipped:
        out.append(f"\nAnnotations that are not areas were skipped: {', '.join(skipped)}.\n")
    return out


def classifier_section(metrics: Mapping) -> list[str]:
    """train_classifier/metrics.json: a table per split (val, test) plus the flat scalars."""
    out = ["\n## The classifier\n\nHow well the explained model separates tumor from normal patches "
           "(metrics from `train_classifier/metrics.json`).\n\n"]
    splits = [k for k in ("val", "test") if isinstance(metrics.get(k), Mapping)]
    if splits:
        rows = []
        for sp in splits:
            m = metrics[sp]
            per = m.get("per_class") or {}
            cls = "; ".join(f"{c}: P {md.num(v.get('precision'))} R {md.num(v.get('recall'))} F1 {md.num(v.get('f1'))}"
                            for c, v in per.items())
            rows.append([sp, m.get("n", "n/a"), md.num(m.get("accuracy"), 4), md.num(m.get("roc_auc"), 4),
                         md.num(m.get("loss"), 4), cls or "n/a", m.get("confusion_matrix", "n/a")])
        out.append(md.table(["split", "patches", "accuracy", "ROC AUC", "NLL", "per class", "confusion (rows = true)"], rows))
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    if isinstance(metrics.get("arch"), Mapping):
        flat["arch"] = metrics["arch"].get("arch", str(metrics["arch"]))
    if flat:
        out.append("\n" + md.table(["", ""], [[k, md.num(v, 4) if isinstance(v, float) else v] for k, v in sorted(flat.items())]))
    return out


def ground_truth_kind(dataset: Mapping | str | Path | None) -> str:
    """What the ground-truth masks of a patch dataset are, in words (from its dataset.json: the
    read object, or its path)."""
    if isinstance(dataset, (str, Path)):
        dataset = ibo_io.read_json(dataset) if Path(dataset).is_file() else None
    if not dataset:
        return "tumor masks of the patch dataset"
    source = dataset.get("source", {})
    name = source.get("name", "")
    if name == "pcam":
        if source.get("mask") == "none":
            return ("none: PCam without masks (data.pcam_mask = 'none'), so the GT ranking and every "
                    "MARD below carry no information")
        return ("PCam's centre 32x32 px label region of each tumor patch (PCam has no pixel "
                "annotations): a proxy for the pathologists' outlines")
    if name == "synthetic":
        return "the exact tumor regions of the synthetic generator"
    if name == "wsi":
        return "ASAP XML annotations rasterized per patch"
    return f"tumor masks from {name or 'the patch dataset'}"


def _introduction(summary: Mapping, config: Mapping | None) -> str:
    """What this run did, in words, from what it did (methods, strategies, controls, sampler)."""
    methods = [m for m in summary.get("methods", []) if m not in set(summary.get("controls", []))]
    controls = list(summary.get("controls", []))
    strategies = list(summary["strategies"])
    text = (f"A classifier labels histopathology patches as tumor or normal. {len(methods)} explanation "
            f"method{'' if len(methods) == 1 else 's'} ({', '.join(methods)}) produce heatmaps saying which pixels "
            "drove the *tumor* prediction. To test a heatmap its most important pixels are **deleted** step by step "
            "and p(tumor) is watched: the faster it falls, the more faithful the explanation (lower area under the "
            f"curve, AUC). *How* pixels are deleted matters; this run used {', '.join(strategies)}.")
    if "ibo" in strategies:
        ibo = ((config or {}).get("occlude") or {}).get("ibo") or {}
        setting = tuple(ibo.get("setting") or ()) or tuple(ibo.get(k) for k in ("sampler", "t_T", "jump_length",
                                                                                   "jump_n_sample") if k in ibo)
        text += (" **IBO** regenerates the removed pixels with a diffusion model trained on normal tissue only"
                 + (f" (sampler setting {', '.join(str(v) for v in setting)})." if setting else "."))
    if "counterfactual" in strategies:
        text += (" **counterfactual** pastes the patch's tumor-free twin: the known answer other strategies are "
                 "scored against (faithfulness).")
    text += (" The annotation gives a second ranking, by how well each method's largest mask overlaps the tumor "
             "outline (IoU): it measures **plausibility**, not faithfulness. MARD is the mean absolute difference "
             "between two rankings (0 = identical).")
    if controls:
        text += f" Controls of known quality ({', '.join(controls)}) are scored but never ranked."
    return text + "\n\n"


def faithfulness_verdict(trust: Mapping | None) -> str:
    """The opening line when the run has a known answer: which strategy's ranking of the methods is
    closest to the counterfactual's (within-patch Kendall's tau, MARD) and how decided that is."""
    cf = ((trust or {}).get("counterfactual") or {}).get("curves", {}).get(PRIMARY)
    if not cf or not cf.get("strategies"):
        return ""
    tau = {s: (e.get("within_patch") or {}).get("mean") for s, e in cf["strategies"].items()}
    tau = {s: v for s, v in tau.items() if v is not None}
    if not tau:
        return ""
    best = max(tau, key=tau.get)
    rows = (cf.get("pairwise") or {}).get("rows") or []
    vs = [r for r in rows if best in (r["a"], r["b"])]
    beaten = [r["b"] if r["a"] == best else r["a"] for r in vs if r["verdict"] == "separated"
              and ((r["difference"] > 0) == (r["a"] == best))]
    n = (cf.get("pairwise") or {}).get("counts") or {}
    mard = cf["strategies"][best].get("mard")
    text = (f"**Faithfulness verdict (known answer):** the ranking of the methods closest to the counterfactual "
            f"reference's comes from **{best}** (within-patch Kendall's tau {tau[best]:.2f}"
            + (f", MARD {mard:.2f}" if mard is not None else "") + "). ")
    if vs:
        text += (f"It is separated from {len(beaten)} of the {len(vs)} other strategies"
                 + (f" ({', '.join(beaten)})" if beaten else "") + "; over all pairs of strategies "
                 f"{n.get('separated', 0)} are separated, {n.get('equivalent', 0)} equivalent, "
                 f"{n.get('undecided', 0)} undecided.")
    ordered = sorted(tau, key=tau.get, reverse=True)
    return text + " Order: " + ", ".join(f"{s} {tau[s]:.2f}" for s in ordered) + ".\n\n"


def render_markdown(summary: Mapping, *, classifier_metrics: Mapping | None = None,
                    config: Mapping | None = None, figures: Sequence[tuple[str, str]] = (),
                    ground_truth: str | None = None, sweep: Mapping | None = None,
                    ddpm_check: Mapping | None = None, trust: Sequence[str] = (),
                    slides: Mapping | None = None, trust_summary: Mapping | None = None,
                    external: Mapping | None = None) -> str:
    """The report text; `figures` are (file name beside report.md, caption); `ground_truth`
    says what the GT masks are (`ground_truth_kind`); `ddpm_check` the ddpm_check summary;
    `trust` the lines of 'Can this verdict be trusted?' (reporting.trust.trust_section), which
    follow the verdicts; `trust_summary` (trust/summary.json) gives the faithfulness verdict;
    `external` explain's summary entry for maps read from `explain.heatmaps_npz`."""
    strategies = [s for s in summary["strategies"] if "agreement" in summary["strategies"][s].get(PRIMARY, {})]
    mard_of = {s: summary["strategies"][s][PRIMARY]["agreement"]["mard"] for s in strategies}
    best = [s for s in strategies if mard_of[s] <= min(mard_of.values()) + 1e-9] if strategies else None
    n_ranked = len(summary.get("gt", {}).get("ranking", {}))
    n_strat = len(summary["strategies"])
    out = [f"# Which explanation can we trust? Deletion tests under {n_strat} occlusion "
           f"strateg{'y' if n_strat == 1 else 'ies'}\n\n", _introduction(summary, config)]
    faithful = faithfulness_verdict(trust_summary)
    if faithful:
        out.append(faithful)
    if best is not None and n_ranked < 2:
        out.append(f"**No verdict in this run:** only {n_ranked} method{'' if n_ranked == 1 else 's'} could be "
                   "ranked against the annotation (see the exclusions below), so rankings cannot disagree.\n\n")
    elif best is not None:
        mards = ", ".join(f"{s} {mard_of[s]:.3f}" for s in strategies)
        out.append(f"**Plausibility verdict (IoU with the annotation, not faithfulness):** the ranking closest to the "
                   f"IoU ranking comes from **{' and '.join(best)}**{' (tied)' if len(best) > 1 else ''} (MARD: {mards}). "
                   + ("A plausible ranking need not be faithful; the known answer above decides that. "
                      if faithful else "This run has no known answer, so it cannot say which ranking is faithful. ")
                   + "Check the bootstrap intervals and paired tests below before trusting a difference.\n\n")
    out.extend(trust)
    out.append("## This run\n\n")
    facts = [["evaluation set", f"{summary.get('n_images', 'n/a')} tumor patches"],
             ["misclassified (original image, p(tumor) < 0.5)", str(summary.get("misclassified", "n/a"))],
             ["methods", ", ".join(summary["methods"])], ["controls", ", ".join(summary.get("controls", [])) or "none"],
             ["strategies", ", ".join(summary["strategies"])]]
    if external:
        rs = external.get("resized")
        facts.append(["maps computed elsewhere", f"{', '.join(external.get('methods', []))} from {external.get('path')}"
                      + (f", resized {rs['method']} from {rs['from'][0]}x{rs['from'][1]} to {rs['to'][0]}x{rs['to'][1]}"
                         if rs else "") + "; no randomization check for them (not recomputable)"])
    if ground_truth:
        facts.append(["ground-truth masks", ground_truth])
    facts += [[f"excluded ({k})", str(v)] for k, v in sorted((summary.get("exclusions") or {}).items())]
    facts += [[f"config: {k}", str(v)] for k, v in sorted(_find(config or {}, SCHEDULE_KEYS).items())]
    facts += [[f"config: {k}", str(v)] for k, v in sorted((summary.get("layout") or {}).items())]
    out.append(md.table(["", ""], facts))
    if slides:
        out.extend(slides_section(slides))
    if classifier_metrics:
        out.extend(classifier_section(classifier_metrics))
    out.extend("\n" + t if not t.startswith("\n") else t for t in _section_tables(summary))
    if ddpm_check:
        out.extend(ddpm_section(ddpm_check))
    if sweep:
        out.extend(sweep_section(sweep))
    if figures:
        out.append("\n## Figures\n\n")
        out.extend(f"![{cap}]({name})\n\n*{cap}*\n\n" for name, cap in figures)
    return "".join(out)


def write_report(out_dir: str | Path, *, summary: Mapping, classifier_metrics: Mapping | None = None,
                 ddpm_check: Mapping | None = None, sweep: Mapping | None = None,
                 explain: tuple[Mapping, Mapping] | None = None,
                 upstream_figures: Sequence[tuple[str | Path, str]] = (), ground_truth: str | None = None,
                 config: Mapping | None = None, trust: Mapping | None = None, slides: Mapping | None = None,
                 meta: Mapping | None = None, roar: Mapping | None = None, external: Mapping | None = None) -> dict:
    """Writes out_dir/report.md and its figures from what it is given; returns a small summary.
    roar: the roar stage's summary (ROAR / KAR rows in the trust section's known-answer table).
    upstream_figures: (PNG file another stage wrote, caption), copied beside the report as
    `<its stage folder>_<name>`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for src, cap in upstream_figures:
        if Path(src).is_file():
            figures.append((artifacts.copy_figure(src, out_dir), cap))
    own = (("levels.png", "Importance levels per method for a few patches (green: GT tumor outline).",
            lambda p: explain is not None and F.figure_levels(*explain, p)),
           *((c.figure, c.figure_caption, lambda p, c=c.name: F.figure_deletion_curves(summary, p, c))
             for c in CURVES.values() if c.figure),
           ("realism.png", "Realism of occluded images per mask level and strategy.",
            lambda p: F.figure_realism(summary, p)),
           ("rank_agreement.png", "MARD per strategy (bootstrap 95% interval) and every method's rank.",
            lambda p: F.figure_rank_agreement(summary, p)),
           ("ddpm_quality.png", "The DDPM's samples against held-out normal patches (KID), between the "
            "noise floor of real normal patches and the tumor-normal gap.", lambda p: F.figure_ddpm_quality(ddpm_check, p)))
    for name, cap, fn in own:
        if fn(out_dir / name):
            figures.append((name, cap))
        else:
            (out_dir / name).unlink(missing_ok=True)
    checks = trust if trust is not None else meta  # `meta=`: the old name of `trust=`
    trust_lines = []
    if checks:
        from ibo_jax.reporting.trust import trust_section

        trust_lines, trust_figures = trust_section(checks, summary, out_dir, roar=roar)
        figures = trust_figures + figures
    text = render_markdown(summary, classifier_metrics=classifier_metrics, config=config, figures=figures,
                           ground_truth=ground_truth, sweep=sweep, ddpm_check=ddpm_check, trust=trust_lines, slides=slides,
                           trust_summary=checks, external=external)
    ibo_io.write_text(out_dir / "report.md", text)
    return {"figures": len(figures), "strategies": len(summary["strategies"]), "chars": len(text)}
