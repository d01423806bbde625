"""The report's opening section, "Can this verdict be trusted?", from trust/summary.json: the
known-answer table (faithfulness against the counterfactual reference beside plausibility), the
graded controls, the sanity checks (randomization, SRG) and the run's power, each with a figure.

    lines, figures = trust_section(trust, out_dir)    # figures: [(file name, caption)]
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ibo_jax.evaluation.curves import KNOWN_ANSWER, PRIMARY
from ibo_jax.io import pyplot, save_figure
from ibo_jax.reporting import markdown as md


def figure_known_answer(trust: Mapping, plaus: Mapping, path: Path) -> bool:
    cf = (trust.get("counterfactual") or {}).get("curves", {}).get(PRIMARY)
    if not cf:
        return False
    strategies = [s for s in cf["strategies"] if "mard" in cf["strategies"][s]]
    if not strategies:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(strategies))
    faith = [cf["strategies"][s]["mard"] for s in strategies]
    err = np.array([[max(0.0, m - (cf["strategies"][s]["mard_boot"]["lo"] or m)),
                     max(0.0, (cf["strategies"][s]["mard_boot"]["hi"] or m) - m)] for s, m in zip(strategies, faith)]).T
    ax.bar(x - 0.2, faith, 0.4, yerr=err, capsize=3, label="vs counterfactual (faithfulness)", color="tab:green")
    pl = [plaus.get(s, np.nan) for s in strategies]
    ax.bar(x + 0.2, pl, 0.4, label="vs IoU ranking (plausibility)", color="tab:gray")
    ax.set_xticks(x, strategies, rotation=20)
    ax.set_ylabel("MARD (lower = agrees)")
    ax.set_title("Known answer: each strategy's CAM ranking against the reference (MoRF)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def figure_graded(trust: Mapping, path: Path, curve: str = KNOWN_ANSWER) -> bool:
    g = trust.get("graded_controls") or {}
    res = (g.get("curves") or {}).get(curve)
    if not res:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for s, e in res.items():
        ys = [e["auc"].get(m) for m in g["names"]]
        ax.plot(g["levels"], [np.nan if y is None else y for y in ys], marker="o", label=f"{s} (tau {md.num(e['kendall_tau'], 2)})")
    ax.set_xlabel("share a of the oracle made random (graded controls)")
    ax.set_ylabel(f"mean {curve} deletion AUC")
    ax.set_title("Known order: AUC must rise with a", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def figure_randomization(trust: Mapping, path: Path) -> bool:
    r = trust.get("randomization") or {}
    steps = r.get("steps")
    if not steps:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    methods = list(steps[0]["similarity"])
    labels = [s["randomized"] for s in steps]
    for m in methods:
        line, = ax.plot(range(len(steps)), [s["similarity"][m]["spearman"] for s in steps], marker="o", label=m)
        floor = r["floor"][m]["spearman"]
        if np.isfinite(floor):
            ax.axhline(floor, ls=":", lw=0.8, color=line.get_color())
    ax.set_xticks(range(len(steps)), [f"+{lab}" for lab in labels], rotation=30, fontsize=7)
    ax.set_ylabel("Spearman with the trained model's maps")
    ax.set_title("Model randomization, cascading from the head (dotted: two random models)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def figure_power(trust: Mapping, path: Path) -> bool:
    p = (trust.get("power") or {}).get("faithfulness") or {}
    if "subsampling" not in p:
        p = (trust.get("power") or {}).get("plausibility") or {}
    rows = (p.get("subsampling") or {}).get("rows")
    if not rows:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    n = np.array([r["n"] for r in rows], float)
    ax.plot(n, [r["half_width"] for r in rows], "o", label="measured (subsampled patches)")
    grid = np.linspace(n.min(), max(n.max(), p.get("patches_needed", n.max())), 100)
    ax.plot(grid, p["subsampling"]["c"] / np.sqrt(grid), "-", label="c / sqrt(n)")
    ax.axhline(p.get("target_difference", 2 / 7), ls="--", color="gray", lw=0.8, label="difference to resolve")
    ax.set_xlabel("patches")
    ax.set_ylabel("half-width of the paired MARD interval")
    ax.set_title(f"Power ({p['subsampling']['pair']})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def pairwise_sentence(pw: Mapping) -> str:
    """The pairwise verdicts between strategies on the within-patch agreement, in words."""
    rows = pw.get("rows") or []
    if not rows:
        return ""
    n = pw.get("counts") or {}
    text = (f"Pairs of strategies on the within-patch agreement (Kendall's tau per patch, paired bootstrap, Holm over "
            f"{len(rows)} pairs; equivalent = the 90% interval of the difference inside +-{pw.get('margin')}): "
            f"{n.get('separated', 0)} separated, {n.get('equivalent', 0)} equivalent, {n.get('undecided', 0)} undecided.")
    ibo = [r for r in rows if "ibo" in (r["a"], r["b"])]
    if ibo:
        text += " With IBO: " + "; ".join(
            f"{r['b'] if r['a'] == 'ibo' else r['a']} {r['verdict']}"
            + (f" ({md.num(r['difference'] if r['a'] == 'ibo' else -r['difference'], 2)})" if r.get("difference") is not None else "")
            for r in ibo) + " (IBO minus the other)."
    return text + "\n\n"


def rival_columns(trust: Mapping) -> tuple[list[str], dict[str, list[str]]]:
    """The known-answer table's extra columns (OOD percentile, R-OMS, blur excess, shuffle recovery):
    (headers, {strategy: cells}); ([], {}) where none was measured."""
    ind = (trust.get("in_distribution") or {}).get("strategies") or {}
    blur, shuf = trust.get("blur_bias") or {}, trust.get("shuffle") or {}
    bc = (blur.get("curves") or {}).get(blur.get("curve"), {}).get("strategies", {}) if "curves" in blur else {}
    sc = (shuf.get("curves") or {}).get(shuf.get("curve"), {}) if "curves" in shuf else {}
    if not (ind or bc or sc):
        return [], {}
    heads = ["OOD percentile", "R-OMS", f"blur excess ({blur.get('curve', '-')})",
             f"shuffle recovery ({shuf.get('curve', '-')})"]
    cells = {}
    for st in sorted(set(ind) | set(bc) | set(sc)):
        i, b, h = ind.get(st, {}), bc.get(st, {}), sc.get(st, {})
        cells[st] = [md.num(i.get("ood_percentile"), 0), md.num(i.get("r_oms"), 3),
                     md.mean_interval(b.get("excess"), 3) if b.get("excess") else "-", md.num(h.get("spearman"), 2)]
    keep = [j for j, present in enumerate((bool(ind), bool(ind), bool(bc), bool(sc))) if present]  # measured columns
    return [heads[j] for j in keep], {st: [c[j] for j in keep] for st, c in cells.items()}


RIVAL_TEXT = ("OOD percentile: the Mahalanobis distance of the filled images' classifier features to the training "
              "classes, as a percentile of real test patches' distances (50 = like real data). R-OMS: "
              "1 - |p - p_ref| against the counterfactual fill of the same pixels, AUC over the removed fraction. "
              "Blur excess: how much better a Gaussian-smoothed map scores than the method's own map, beyond what "
              "the counterfactual gives it (positive = blur bias). Shuffle recovery: Spearman between the share of "
              "a map's values permuted and its AUC (1 = the known order recovered).")


def rival_section(trust: Mapping, summary: Mapping, *, in_table: bool = False) -> list[str]:
    """How in-distribution each fill is (OOD percentile, R-OMS), the bias controls (blur gain beyond
    the counterfactual's, shuffle recovery) and F-Fidelity's label-based scores, where measured.
    in_table: the columns are already in the known-answer table (only the legend and FFid± here)."""
    heads, cells = rival_columns(trust)
    ff = summary.get("ffidelity") or {}
    scored = [k for k in ("ffid_plus", "ffid_minus") if k in ff]
    if not (cells or scored):
        return []
    out = ["### In distribution, and known biases\n\n"]
    if cells:
        out.append(("The known-answer table's last columns. " if in_table else "") + RIVAL_TEXT + "\n\n")
        if not in_table:
            out.append(md.table(["strategy", *heads], [[st, *c] for st, c in cells.items()]) + "\n")
    if scored:
        out.append("**F-Fidelity** (label-based; FFid+ higher is better, FFid- lower): "
                   + "; ".join(f"{k}: " + ", ".join(f"{m} {md.num(v['mean'], 3)}" for m, v in ff[k]["by_method"].items()
                                                  if m in ff[k].get("ranking", {}))
                               for k in scored) + ".\n\n")
    return out


def roar_lines(roar: Mapping) -> list[str]:
    """ROAR / KAR beside the deletion strategies: leakage, notes and cost (their rows are in the table)."""
    sc = roar.get("scores") or {}
    out = ["**ROAR / KAR** (retrained from scratch for each method and fraction "
           f"{', '.join(f'{t:g}' for t in roar.get('fractions', []))}; score = the accuracy drop against a random "
           "map's): they measure what a fresh model can still learn from what is left, not what the trained "
           "model used, so a disagreement with the known answer is a difference of question, not a failure. "]
    leak = roar.get("leakage") or {}
    conf = sorted(m for m, e in (leak.get("methods") or {}).items() if e.get("verdict") == "confounded")
    if leak.get("methods"):
        out.append(f"Leakage control (a classifier trained on the masks alone, fraction {md.num(roar.get('leakage_fraction'), 2)}): "
                   + (f"confounded for {', '.join(conf)}. " if conf else "no method's masks alone predict the label. "))
    cost = roar.get("cost") or {}
    if cost:
        out.append(f"Cost: {cost.get('n_retrainings')} retrainings, {md.num(cost.get('seconds_retraining'), 0)} s, plus the "
                   f"maps of {cost.get('n_maps')} (patch, method) pairs of every split, {md.num(cost.get('seconds_maps'), 0)} s.")
    out.append("\n\n")
    out += [f"- {n}\n" for n in sc.get("notes", [])]
    return out + (["\n"] if sc.get("notes") else [])


def trust_section(trust: Mapping, summary: Mapping, out_dir: Path, *, roar: Mapping | None = None
                  ) -> tuple[list[str], list[tuple[str, str]]]:
    """The markdown of 'Can this verdict be trusted?' and the figures it drew into out_dir. The
    known-answer table of the primary curve carries the in-distribution and bias columns, and of
    roar's known curve the ROAR / KAR rows (Kendall over all method pairs, beside every strategy's)."""
    out = ["## Can this verdict be trusted?\n\n"]
    figures = []
    plaus = {s: d[PRIMARY]["agreement"]["mard"] for s, d in summary.get("strategies", {}).items()
             if "agreement" in d.get(PRIMARY, {})}
    cf = trust.get("counterfactual") or {}
    power = trust.get("power") or {}
    for key in ("faithfulness", "plausibility"):
        if (power.get(key) or {}).get("sentence"):
            out.append(f"**Power ({key}):** {power[key]['sentence']}\n\n")
    out.append("### Known answer: the counterfactual reference\n\n")
    if "unavailable" in cf:
        out.append(f"Unavailable in this run: {cf['unavailable']}. The counterfactual twin (the same patch rendered "
                   "without its tumor) exists only for synthetic data.\n\n")
    else:
        tw = cf.get("twin_check", {})
        out.append("The counterfactual strategy replaces removed pixels by the patch's twin, the same tissue "
                   "rendered without tumor: it removes exactly the evidence the data define and stays in "
                   "distribution, so its ranking of the CAM methods is the **faithfulness** ground truth. "
                   f"The classifier calls {100 * tw.get('share_twins_called_normal', float('nan')):.0f}% of the twins "
                   f"normal (real normal test patches: {100 * tw.get('share_normal_called_normal', float('nan')):.0f}%). "
                   "Each strategy's ranking is compared with it (MARD with a paired bootstrap interval, Kendall on the "
                   "pairs of methods the reference orders beyond noise, median per-patch Spearman of AUCs) and with "
                   "the IoU ranking (plausibility).\n\n")
        heads, cells = rival_columns(trust)
        beside = (roar or {}).get("beside") or {}
        for curve, c in cf.get("curves", {}).items():
            extra = heads if curve == PRIMARY else []
            taus = beside.get("kendall_tau") or {} if beside.get("curve") == curve else {}
            rows = []
            for s, e in c["strategies"].items():
                rows.append([s, md.num(e.get("mard"), 2), md.interval(e.get("mard_boot"), 2), md.num(e.get("kendall_decided"), 2),
                             md.mean_interval(e.get("within_patch"), 2),
                             md.num(e.get("patch_spearman_median"), 2), md.num(plaus.get(s), 2) if curve == PRIMARY else "-",
                             *([md.num(taus.get(s), 2)] if taus else []),
                             *(cells.get(s, ["-"] * len(heads)) if extra else [])])
            for mode in ("roar", "kar") if taus else ():
                if mode in taus:
                    rows.append([mode.upper(), "-", "-", "-", "-", "-", "-", md.num(taus[mode], 2), *(["-"] * len(extra))])
            out.append(f"**{curve}** ({c['n_decided_pairs']} of {c['n_pairs']} method pairs decided by the reference)\n\n")
            out.append(md.table(["strategy", "MARD vs counterfactual", "95% interval", "Kendall (decided pairs)",
                               "within-patch Kendall [95%]", "per-patch Spearman (median)",
                               "MARD vs IoU (plausibility)", *(["Kendall (all pairs)"] if taus else []), *extra], rows))
            out.append("\n")
            if taus:
                out += roar_lines(roar)
            out.append(pairwise_sentence(c.get("pairwise") or {}))
        res = cf.get("residual") or {}
        if res.get("strategies"):
            out.append("**Residual evidence**: p(tumor) after removing the whole annotated region, against the "
                       f"twin's ({md.num((res.get('twin') or {}).get('mean'), 3)}; the originals: "
                       f"{md.num(res['original']['mean'], 3)}), and how close each fill is to the twin.\n\n")
            rows = [[s, md.num(e["p_tumor"]["mean"], 3), md.interval(e["p_tumor"], 2), md.num((e.get("minus_twin") or {}).get("mean"), 3),
                     md.num(e.get("kid_vs_twin"), 3), md.num((e.get("ssim_twin") or {}).get("mean"), 3),
                     md.num((e.get("psnr_twin") or {}).get("mean"), 1)] for s, e in res["strategies"].items()]
            out.append(md.table(["strategy", "p(tumor) left", "95% interval", "minus twin's", "KID vs twins",
                               "SSIM vs twin (in region)", "PSNR vs twin (dB)"], rows) + "\n")
        if figure_known_answer(trust, plaus, out_dir / "trust_known_answer.png"):
            figures.append(("trust_known_answer.png", "MARD of each strategy's ranking against the counterfactual "
                            "reference (faithfulness, bootstrap 95% interval) and against the IoU ranking (plausibility)."))
    out += rival_section(trust, summary, in_table="unavailable" not in cf and PRIMARY in cf.get("curves", {}))
    g = trust.get("graded_controls") or {}
    out.append("### Explanations of known quality: graded controls\n\n")
    if g.get("curves"):
        out.append("The oracle heatmap with a share a of it (nested random blobs) replaced by random values: the "
                   "larger a, the worse the explanation. On the fixed-fraction curve the deletion AUC must rise with "
                   "a (Kendall tau = 1 recovers the known order); MoRF is shown too but is not the known answer. "
                   "The last columns: the shifted oracle's AUC and the share of real methods ranked below `random`.\n\n")
        for curve, res in g["curves"].items():
            rows = [[s, md.num(e["kendall_tau"], 2), md.interval(e["kendall_tau_boot"], 2), md.num(e.get("share_boot_order_exact"), 2),
                     *[md.num(e["auc"].get(m), 3) for m in g["names"]], md.num(e.get("auc_oracle_shifted"), 3),
                     md.num(e.get("share_methods_below_random"), 2)] for s, e in res.items()]
            out.append(f"**{curve}**\n\n" + md.table(["strategy", "tau", "95% interval", "share exact",
                                                     *[f"a={a:g}" for a in g["levels"]], "shifted oracle",
                                                     "methods below random"], rows) + "\n")
        if figure_graded(trust, out_dir / "trust_graded.png"):
            figures.append(("trust_graded.png", "Graded controls: mean fixed-fraction AUC against the share a of the "
                            "oracle made random (it must rise)."))
    else:
        out.append(f"{g.get('skipped', 'not computed')}.\n\n")
    out.append("### Sanity checks\n\n")
    r = trust.get("randomization") or {}
    if r.get("steps"):
        first = r["steps"][0]
        out.append(f"**Model-parameter randomization** ({r['n_images']} patches, maps compared at the CAM's own "
                   f"{r['resolution'][0]}x{r['resolution'][1]} grid): Spearman with the trained model's maps after "
                   "re-initializing the layers from the head down; an explanation that stays similar is not "
                   "explaining the model. Floor: two independent random models.\n\n")
        methods = list(first["similarity"])
        rows = [[f"+ {s['randomized']}", *[md.num(s["similarity"][m]["spearman"], 2) for m in methods]] for s in r["steps"]]
        rows.append(["floor", *[md.num(r["floor"][m]["spearman"], 2) for m in methods]])
        out.append(md.table(["randomized", *methods], rows) + "\n")
        if figure_randomization(trust, out_dir / "trust_randomization.png"):
            figures.append(("trust_randomization.png", "Similarity of each method's maps to the trained model's as "
                            "layers are re-initialized from the head down (dotted: the floor)."))
    srg = (trust.get("srg") or {}).get("strategies") or {}
    if srg:
        out.append("**SRG** (symmetric relevance gain, fixed-fraction curves): the mean over q of p(tumor) with the "
                   "least important q removed minus with the most important q removed (higher = better), and "
                   "whether the MoRF and LeRF rankings agree (Kendall).\n\n")
        methods = sorted({m for e in srg.values() for m in e["ranking"]})
        rows = [[s, *[md.num(e["srg"][m]["mean"], 3) for m in methods], md.num(e.get("morf_lerf_kendall"), 2)]
                for s, e in srg.items()]
        out.append(md.table(["strategy", *methods, "MoRF-LeRF Kendall"], rows) + "\n")
    if figure_power(trust, out_dir / "trust_power.png"):
        figures.append(("trust_power.png", "The run's resolution against the number of patches (subsampled), with "
                        "the 1/sqrt(n) extrapolation."))
    return out, figures
