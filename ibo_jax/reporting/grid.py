"""The grid's report (`aggregate/report.md`) and figures from `aggregate/summary.json`: the verdict
table first (rows strategies, columns regime x architecture: agreement with the known answer and
its interval, the pairwise verdict against IBO, seconds per fill), then plausibility against
faithfulness, the seeds' spread, MARD beside, the power curves, the variant cells and the time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ibo_jax import io as ibo_io
from ibo_jax.reporting.markdown import bracket, num, table

IBO = "ibo"
REFERENCE = "counterfactual"
STATISTIC_TEXT = {
    "decided": "per patch, over the pairs of methods the known answer orders: (concordant - discordant) / pairs, "
               "in [-1, 1]",
    "kendall": "per patch, Kendall's tau-b over all pairs of methods, in [-1, 1]",
}
SYMBOL = {"separated": "sep", "equivalent": "equiv", "undecided": "undec"}


def _find(rows: Sequence[Mapping], **keys) -> list[Mapping]:
    return [r for r in rows if all(r.get(k) == v for k, v in keys.items())]


def _one(rows, **keys):
    found = _find(rows, **keys)
    return found[0] if found else None


def _est(r: Mapping | None, digits: int = 2) -> str:
    if not r or r.get("estimate") is None:
        return "n/a"
    return f"{num(r['estimate'], digits)} {bracket(r['lo'], r['hi'], digits)}"


def _versus(pairwise, keys: Mapping, strategy: str, other: str = IBO) -> str:
    """'sep +0.12' (strategy minus other) or 'equiv' / 'undec' for the pair (strategy, other)."""
    for r in _find(pairwise, **keys):
        if {r["a"], r["b"]} == {strategy, other}:
            d = r.get("difference")
            d = -d if (d is not None and r["a"] == other) else d
            sign = "" if d is None else f" {d:+.2f}"
            near = f" (near-ties: {SYMBOL[r['verdict_raw']]} unperturbed)" if r.get("verdict_raw", r["verdict"]) != r["verdict"] else ""
            return SYMBOL[r["verdict"]] + (sign if r["verdict"] == "separated" else "") + near
    return ""


def _cols(s: Mapping) -> list[tuple[str, str]]:
    return [(r, a) for r in s["regimes"] for a in s["archs"]]


def _strategies(s: Mapping, reference: bool = False) -> list[str]:
    """The strategies of the agreement table, IBO first (the known answer itself only if asked)."""
    out = []
    for r in s["agreement"]:
        if r["strategy"] not in out and (reference or r["strategy"] != REFERENCE):
            out.append(r["strategy"])
    return sorted(out, key=lambda x: (x == REFERENCE, x != IBO, x))


def strategy_table(s: Mapping, curve: str, label: str, cell, *, reference: bool = False) -> str:
    """Rows strategies, columns regime / arch (`label` after each), cells `cell(keys, strategy)` with
    keys {regime, arch, curve}."""
    header = ["strategy"] + [f"{r} / {a}{label}" for r, a in _cols(s)]
    rows = [[st] + [cell({"regime": r, "arch": a, "curve": curve}, st) for r, a in _cols(s)]
            for st in _strategies(s, reference=reference)]
    return table(header, rows)


def verdict_table(s: Mapping, curve: str) -> str:
    stat = s["statistic"]
    header = ["strategy"] + [f"{r} / {a}" for r, a in _cols(s)]
    rows = []
    for st in _strategies(s):
        cells = []
        for regime, arch in _cols(s):
            keys = {"regime": regime, "arch": arch, "curve": curve}
            ag = _one(s["agreement"], **keys, strategy=st, statistic=stat)
            f = _one(s.get("fills", []), **keys, strategy=st)
            vs = "" if st == IBO else " · " + _versus(s["pairwise"], {**keys, "statistic": stat}, st)
            spf = f" · {f['seconds_per_fill'] * 1000:.1f} ms" if f and f.get("seconds_per_fill") else ""
            cells.append(_est(ag) + vs + spf)
        rows.append([f"**{st}**" if st == IBO else st] + cells)
    return table(header, rows)


def opening(s: Mapping) -> list[str]:
    """The first lines: per cell of the grid, which strategy recovers the known ranking best and
    whether the IBO goal (80% of its pairs decided) is met."""
    stat, lines = s["statistic"], []
    for curve in s["curves"]:
        for regime, arch in _cols(s):
            keys = {"regime": regime, "arch": arch, "curve": curve}
            ag = [r for r in _find(s["agreement"], **keys, statistic=stat) if r.get("estimate") is not None]
            if not ag:
                continue
            best = max(ag, key=lambda r: r["estimate"])
            ties = [r["strategy"] for r in ag if r is not best and _versus(
                s["pairwise"], {**keys, "statistic": stat}, r["strategy"], best["strategy"]).startswith(("equiv", "undec"))]
            g = _one(s["goal"], **keys)
            goal = (f"; IBO's pairs decided: {g['decided']}/{g['ibo_pairs']}"
                    f" ({'goal met' if g['met'] else 'below the 80% goal'})") if g else ""
            tie_text = f" (not separated from {', '.join(ties)})" if ties else " (separated from every other)"
            lines.append(f"- **{regime} / {arch}** ({curve}): the ranking closest to the known answer comes from "
                         f"**{best['strategy']}**, {stat} {_est(best)}{tie_text}{goal}.")
    return lines


def premise(s: Mapping) -> str:
    """Does a fill closer to the data (lower OOD percentile) agree better with the known answer?
    Spearman's rho over the strategies (the known answer left out), per regime / arch."""
    import numpy as np

    stat, parts = s["statistic"], []
    for curve in s["curves"]:
        for regime, arch in _cols(s):
            pts = []
            for st in _strategies(s):
                r = _one(s.get("in_distribution") or [], regime=regime, arch=arch, curve=curve, strategy=st)
                ag = _one(s["agreement"], regime=regime, arch=arch, curve=curve, strategy=st, statistic=stat)
                if r and r.get("ood_percentile") is not None and ag and ag.get("estimate") is not None:
                    pts.append((r["ood_percentile"], ag["estimate"]))
            if len(pts) >= 3:
                a, b = (np.argsort(np.argsort(np.asarray(v))) for v in zip(*pts))
                rho = float(np.corrcoef(a, b)[0, 1]) if np.ptp(a) and np.ptp(b) else float("nan")
                parts.append(f"{regime} / {arch}: rho(OOD percentile, agreement) = {num(rho, 2)} over {len(pts)} "
                             f"strategies")
    if not parts:
        return ""
    return ("\nThe premise predicts a negative rank correlation (more in-distribution, more faithful): "
            + "; ".join(parts) + ". With so few strategies this is descriptive, not a test.")


def markdown(s: Mapping) -> str:
    stat = s["statistic"]
    n_p = sorted({c["n_patches"] for c in s["cells"] if not c["variant"]})
    out = ["# Benchmark grid: which deletion strategy recovers the known ranking?", ""]
    out.append(
        f"{len(s['regimes'])} data regime(s) ({', '.join(s['regimes'])}) x {len(s['archs'])} architecture(s) "
        f"({', '.join(s['archs'])}) x {len(s['seeds'])} classifier seed(s) ({', '.join(map(str, s['seeds']))}), "
        f"{'/'.join(map(str, n_p))} evaluation patches per cell (the same patches for every seed), "
        f"{s['draws_per_mask']} draw(s) per mask for random fills. Agreement = `{stat}` ({STATISTIC_TEXT[stat]}, "
        f"comparing the methods' deletion AUCs under the strategy with those under the counterfactual twins, "
        f"the known answer; AUC differences within {s['tie_tol']:g} count as ties); intervals 95% from a bootstrap over seeds and patches crossed; verdicts against IBO: "
        f"sep (separated, Holm over the pairs of a cell; the sign is the strategy minus IBO), equiv (90% interval "
        f"inside +-{s['margin'][stat]:g}), undec. A verdict that changes (or flips sign) when every AUC is moved by "
        f"up to {max(s['tie_tol'], 1e-6):g}, so that near-ties resolve as another CPU could resolve them, is "
        f"reported undecided.")
    out += ["", "## Verdict", ""] + opening(s)
    for curve in s["curves"]:
        out += ["", f"## Verdict table ({curve}): agreement [95% CI] · verdict vs IBO · time per fill", "",
                verdict_table(s, curve),
                "The intervals are the unadjusted 95% ones; a verdict is Holm-adjusted over the pairs of its "
                "column, so an interval that excludes 0 can still read undec. With 3 seeds the seed level is "
                "resampled from 3 values (10 distinct sets): its spread is underestimated by about (S-1)/S."]
        und = [u for u in s.get("undecided_ibo_pairs", []) if u["curve"] == curve]
        if und:
            out += ["", "Undecided pairs with IBO, and the patches per seed that would decide them if the interval "
                    "kept shrinking as 1/sqrt(n) at Holm's strictest level (a lower bound: near-tied methods put a "
                    "floor under the resolution; n/a: no size would, or undecided by the near-tie check):", ""]
            out.append(table(["regime / arch", "pair", "patches now", "patches needed"],
                             [[f"{u['regime']} / {u['arch']}", f"{u['a']} vs {u['b']}", u["n_patches"],
                               u["patches_per_seed_needed"] if u["patches_per_seed_needed"] is not None else "n/a"]
                              for u in und]))
    for sk in s.get("skipped", []):
        out.append(f"\nLeft out of {sk['regime']} / {sk['arch']} ({sk['curve']}): {', '.join(sk['strategies'])} "
                   f"({sk['why']}).")
    out += ["", "## Plausibility (IoU ranking) against faithfulness (known answer)", "",
            "Within-patch Kendall's tau of each strategy's ranking with the IoU ranking (what the study called "
            "ground truth) beside its tau with the counterfactual ranking. Where the two disagree, agreement "
            "with the annotation is not evidence of faithfulness.", ""]
    def plausible(keys, st):
        f = _one(s["agreement"], **keys, strategy=st, statistic="kendall")
        p = _one(s["agreement"], **keys, strategy=st, statistic="plausibility")
        return ("1 (itself)" if st == REFERENCE else num(f and f["estimate"], 2)) + f" · {num(p and p['estimate'], 2)}"

    for curve in s["curves"]:
        out.append(strategy_table(s, curve, ": faithful · plausible", plausible, reference=True))
    out += ["", "## In-distribution scores against agreement", ""]
    ind = s.get("in_distribution") or []
    if ind:
        out += ["The study's premise is that a fill closer to the data gives a truer verdict. OOD percentile: the "
                "Mahalanobis distance of the filled images' classifier features to the training classes, as a "
                "percentile of real test patches' (50 = like real data, 100 = beyond all of them); R-OMS: "
                "1 - |p - p_ref| against the counterfactual fill of the same pixels, AUC over the removed fraction "
                "(1 = predicted as the known answer is). Means over the seeds' classifiers; agreement as above.", ""]
        def in_dist(keys, st):
            r = _one(ind, **keys, strategy=st)
            ag = _one(s["agreement"], **keys, strategy=st, statistic=stat)
            return (f"{num(r and r.get('ood_percentile'), 0)} · {num(r and r.get('r_oms'), 3)} · "
                    + ("1 (itself)" if st == REFERENCE else num(ag and ag.get("estimate"), 2)))

        for curve in s["curves"]:
            out.append(strategy_table(s, curve, ": OOD pct · R-OMS · agreement", in_dist, reference=True))
        out.append(premise(s))
    else:
        out.append("Not in this run: the cells' trust stages carry no `in_distribution` section "
                   "(trust.ood_train_patches = 0, or written by an older ibo_jax; rerun the grid to add it).")
    out += ["", "## Seeds", ""]
    if len(s["seeds"]) > 1:
        def per_seed(keys, st):
            vals = _find(s["per_seed_agreement"], **keys, strategy=st)
            return ", ".join(num(v["estimate"], 2) for v in sorted(vals, key=lambda v: v["seed"]))

        for curve in s["curves"]:
            body = strategy_table(s, curve, "", per_seed)
            out += [f"Agreement per classifier seed ({curve}, seeds {', '.join(map(str, s['seeds']))}):", "", body]
            header = ["regime / arch", "seed", "separated", "equivalent", "undecided", "IBO pairs decided"]
            rows = []
            for regime, arch in _cols(s):
                for seed in s["seeds"]:
                    rs = _find(s["per_seed_pairwise"], regime=regime, arch=arch, curve=curve, seed=seed)
                    mine = [r for r in rs if IBO in (r["a"], r["b"])]
                    rows.append([f"{regime} / {arch}", seed] + [sum(r["verdict"] == v for r in rs) for v in SYMBOL]
                                + [f"{sum(r['verdict'] in ('separated', 'equivalent') for r in mine)}/{len(mine)}"])
            out += ["Pairwise verdicts per seed alone (patches resampled):", "", table(header, rows)]
    else:
        out.append("One classifier seed: no seed level.")
    out += ["", "## MARD beside (the study's statistic; lower is better)", "",
            "Verdicts against IBO as above; here a positive separated difference means the strategy's MARD is "
            "higher (worse) than IBO's.", ""]
    def mard(keys, st):
        vs = "" if st == IBO else " · " + _versus(s["pairwise"], {**keys, "statistic": "mard"}, st)
        return _est(_one(s["agreement"], **keys, strategy=st, statistic="mard")) + vs

    for curve in s["curves"]:
        out.append(strategy_table(s, curve, "", mard))
    out += ["", "## Power: pairs involving IBO decided, by patches per seed", "",
            "Random subsets of the evaluation patches (the same subset for every seed and strategy), the pairwise "
            "verdicts recomputed (200 bootstrap resamples each): share of IBO's pairs separated or equivalent, and "
            "the median half-width of the paired interval.", ""]
    for curve in s["curves"]:
        header = ["regime / arch", "statistic"] + [f"n={n}" for n in sorted({r["n"] for r in s["power"]})]
        rows = []
        for regime, arch in _cols(s):
            for st in ("kendall", "decided", "mard"):
                pr = {r["n"]: r for r in _find(s["power"], regime=regime, arch=arch, curve=curve, statistic=st)}
                rows.append([f"{regime} / {arch}", st] + [
                    f"{num(pr[n]['decided_share'], 2)} (±{num(pr[n]['half_width_median'], 2)})" if n in pr else ""
                    for n in sorted({r["n"] for r in s["power"]})])
        out.append(table(header, rows))
    agree = [v for v in s.get("variants", []) if "strategy" in v]
    pairs = [v for v in s.get("variants", []) if "pair" in v]
    if agree:
        out += ["", "## Variant cells", "", "Each variant cell against its base cell (same classifier and patches): "
                "the strategy's agreement in each and their paired difference.", ""]
        header = ["variant", "strategy", "base cell", "variant cell", "difference [95% CI]", "verdict"]
        rows = []
        for v in agree:
            d = v["difference"]
            rows.append([v["variant"], v["strategy"], _est(v["base_estimate"]), _est(v["variant_estimate"]),
                         f"{num(d.get('difference'), 3)} {bracket(d.get('lo'), d.get('hi'), 3)}", d["verdict"]])
        out.append(table(header, rows))
    if pairs:
        out += ["", f"Pairwise verdicts from one draw per mask against the mean of {pairs[0]['draws']} draws:", ""]
        out.append(table(["variant", "pair", "one draw", "mean of draws"],
                         [[v["variant"], " vs ".join(v["pair"]),
                           f"{v['one_draw']['verdict']} ({num(v['one_draw'].get('difference'), 3)})",
                           f"{v['mean_of_draws']['verdict']} ({num(v['mean_of_draws'].get('difference'), 3)})"]
                          for v in pairs]))
    sec = s["seconds"]
    out += ["", "## Time", "", f"Stage seconds, each shared stage counted once; {sec['stages_total']:.0f} s in "
            f"stages, {sec.get('wall', 0):.0f} s wall from the start of the process that aggregated (this run; a "
            f"resumed grid counts only its last run)." if sec.get("wall") else
            f"Stage seconds, each shared stage counted once; {sec['stages_total']:.0f} s in stages.", ""]
    out.append(table(["stage", "runs", "seconds"], [[k, v["runs"], f"{v['seconds']:.0f}"]
                                                    for k, v in sec["per_stage"].items()]))
    n_ddpm = sec["per_stage"].get("train_ddpm", {}).get("runs", 0)
    n_var = len({v["variant"] for v in s.get("variants", []) if "train_ddpm" in v.get("variant", "")
                 or "ddpm" in v.get("variant", "")})
    if n_ddpm > 1 + n_var:
        out.append(f"\nNote: {n_ddpm} DDPMs were trained; the regimes' normal patches were expected to be identical "
                   f"(one DDPM, plus one per DDPM-seed variant): check `data` for a difference.")
    if s.get("fills"):
        by = {}
        for f in s["fills"]:
            b = by.setdefault(f["strategy"], [0.0, 0])
            b[0] += f["seconds"]
            b[1] += f["fills"]
        out += ["", table(["strategy", "fills", "seconds", "fills per second"],
                          [[k, n, f"{t:.1f}", num(n / t if t else None, 1)] for k, (t, n) in by.items()])]
    return "\n".join(out) + "\n"


def figures(s: Mapping, out_dir: str | Path) -> list[Path]:
    """agreement.png: each strategy's agreement with its interval per cell; power.png: IBO's
    decided share against patches per statistic."""
    plt = ibo_io.pyplot()
    out_dir, paths = Path(out_dir), []
    stat, cols, strategies = s["statistic"], _cols(s), _strategies(s)
    curve = s["curves"][0]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 0.4 * len(strategies) + 1.4), squeeze=False,
                             sharey=True)
    for ax, (regime, arch) in zip(axes[0], cols):
        for i, st in enumerate(strategies):
            r = _one(s["agreement"], regime=regime, arch=arch, curve=curve, strategy=st, statistic=stat)
            if r and r.get("estimate") is not None:
                ax.errorbar(r["estimate"], i, xerr=[[r["estimate"] - r["lo"]], [r["hi"] - r["estimate"]]], fmt="o",
                            color="C3" if st == IBO else "C0", capsize=2)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set_title(f"{regime} / {arch}", fontsize=9)
        ax.set_xlabel(f"{stat} with the known answer", fontsize=8)
    axes[0, 0].set_yticks(range(len(strategies)), strategies, fontsize=8)
    fig.tight_layout()
    p = out_dir / "agreement.png"
    ibo_io.save_figure(fig, p, dpi=110)
    plt.close(fig)
    paths.append(p)
    if s.get("power"):
        fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 2.6), squeeze=False, sharey=True)
        for ax, (regime, arch) in zip(axes[0], cols):
            for st in ("kendall", "decided", "mard"):
                pr = sorted(_find(s["power"], regime=regime, arch=arch, curve=curve, statistic=st), key=lambda r: r["n"])
                if pr:
                    ax.plot([r["n"] for r in pr], [r["decided_share"] for r in pr], marker="o", label=st)
            ax.axhline(0.8, color="0.6", ls="--", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{regime} / {arch}", fontsize=9)
            ax.set_xlabel("patches per seed", fontsize=8)
        axes[0, 0].set_ylabel("IBO pairs decided", fontsize=8)
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        p = out_dir / "power.png"
        ibo_io.save_figure(fig, p, dpi=110)
        plt.close(fig)
        paths.append(p)
    ind = s.get("in_distribution") or []
    if ind:
        fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 2.8), squeeze=False, sharey=True)
        for ax, (regime, arch) in zip(axes[0], cols):
            for st in strategies:
                r = _one(ind, regime=regime, arch=arch, curve=curve, strategy=st)
                ag = _one(s["agreement"], regime=regime, arch=arch, curve=curve, strategy=st, statistic=stat)
                if r and r.get("ood_percentile") is not None and ag and ag.get("estimate") is not None:
                    ax.errorbar(r["ood_percentile"], ag["estimate"], yerr=[[ag["estimate"] - ag["lo"]],
                                                                           [ag["hi"] - ag["estimate"]]],
                                fmt="o", color="C3" if st == IBO else "C0", capsize=2)
                    ax.annotate(st, (r["ood_percentile"], ag["estimate"]), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
            ax.set_title(f"{regime} / {arch}", fontsize=9)
            ax.set_xlabel("OOD percentile of the fills", fontsize=8)
        axes[0, 0].set_ylabel(f"{stat} with the known answer", fontsize=8)
        fig.tight_layout()
        p = out_dir / "in_distribution.png"
        ibo_io.save_figure(fig, p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
