"""The grid's aggregate: agreement with the known answer per (regime, arch, curve, strategy) over
classifier seeds x patches crossed, pairwise verdicts between strategies, power curves, the
variant cells' checks and the time per stage. Writes `aggregate/summary.json` and
`aggregate/report.md` (`ibo_jax.reporting.grid`).

Statistics (per patch and seed, from each cell's `score/scores.npz`; the counterfactual strategy's
AUCs are the known answer, the annotation IoU the plausibility reference):
  kendall     within-patch rank agreement: Kendall's tau-b between the strategy's and the
              reference's deletion AUCs across the ranked methods of one patch (ties within
              `grid.tie_tol`, so near-ties that swap between CPUs count as ties)
  decided     the same on the method pairs the reference decides in that patch (|difference| >
              tie_tol): (concordant - discordant) / decided pairs
  mard        the study's statistic: mean absolute rank difference between the strategy's ranking
              of the methods (mean AUC over seeds and patches) and the reference's; lower is better
  plausibility  within-patch Kendall's tau against the IoU ranking (what the study called GT)
Verdicts (`stats.pairwise_verdicts`, `stats.pairwise_mard`): separated / equivalent (margin
`stats.TAU_MARGIN` in tau units, `stats.MARD_MARGIN` in ranks) / undecided, Holm over the pairs of
a cell, bootstrap over seeds and patches crossed. A verdict counts as decisive only if it is the
same when every AUC is moved by up to tie_tol (near-ties resolved otherwise, as another CPU could:
`stable`); otherwise it is reported undecided.

Re-aggregate a finished grid (new statistics code, other bootstrap settings) without running any
stage: `python -m ibo_jax.grid.aggregate --workdir runs/benchmark [--grid.n_boot=2000 ...]`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ibo_jax import artifacts, pipeline, stats
from ibo_jax import io as ibo_io
from ibo_jax.evaluation import curves as curve_registry
from ibo_jax.evaluation import deletion

REFERENCE = "counterfactual"
IBO = "ibo"
STATISTICS = ("kendall", "decided")
SUMMARY = artifacts.summary_artifact("aggregate")
REPORT = artifacts.Artifact("aggregate", "report.md", "the grid's verdict table and findings")
DECISIVE = ("separated", "equivalent")


class GridError(ValueError):
    """A cell of the grid is missing or inconsistent (the message names it)."""


# ------------------------------------------------------------------------------------ loading


def _cell_tables(workdir: Path, cell) -> dict:
    """What the aggregate reads from one finished cell."""
    d = workdir / "cells" / cell.name
    score = d / "score"
    if not (score / pipeline.MANIFEST_FILE).is_file():
        raise GridError(f"cell {cell.name}: {score} is not finished; rerun the grid to complete it")
    arrays = artifacts.read_score_arrays(score)
    metrics = artifacts.read_json(artifacts.CLASSIFIER_METRICS, d / "train_classifier", required=False) or {}
    trust = artifacts.read_summary(d / "trust", required=False) if (d / "trust").is_dir() else None
    return {"table": arrays.table, "test_accuracy": (metrics.get("test") or {}).get("accuracy"),
            "in_distribution": ((trust or {}).get("in_distribution") or {}).get("strategies")}


def _per_draw_aucs(table, strategy: str, curve: str) -> np.ndarray:
    """AUC on p per image, method and draw [N, M, D] (NaN where excluded)."""
    d = table.dense[(strategy, curve)]
    x = table.x(curve, d["p"].shape[-1] - 1)
    first = curve_registry.get(curve).first
    return np.where(table.valid[..., None], deletion.curve_auc(d["p"][..., first:], x[..., first:]), np.nan)


def _ranked_index(table) -> tuple[list[str], list[int]]:
    names = [m for m in table.methods if m not in table.controls]
    return names, [table.methods.index(m) for m in names]


# --------------------------------------------------------------------------------- statistics


def per_patch(stat: str, a: np.ndarray, ref: np.ndarray, tie_tol: float) -> np.ndarray:
    """The per-patch agreement [S, P] of AUCs a [S, P, M] with the reference's [S, P, M]."""
    fn = {"kendall": stats.kendall_rows, "decided": stats.decided_rows}[stat]
    return np.stack([fn(a[s], ref[s], tie_tol=tie_tol) for s in range(a.shape[0])])


def _estimate(values: np.ndarray, n_boot: int, seed: int, alpha: float) -> dict:
    """Mean over seeds x patches with a crossed bootstrap interval."""
    s_idx, p_idx = stats.crossed_indices(values.shape[0], values.shape[1], n_boot, seed)
    boots = stats._boot_means(values, s_idx, p_idx)
    boots = boots[np.isfinite(boots)]
    est = stats.nanmean(values.reshape(-1), 0)
    if not boots.size or not np.isfinite(est):
        return {"estimate": None, "lo": None, "hi": None}
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return {"estimate": float(est), "lo": float(lo), "hi": float(hi)}


def _mard_estimate(a: np.ndarray, ref: np.ndarray, n_boot: int, seed: int, alpha: float) -> dict:
    """MARD of a's ranking of the methods (mean AUC over seeds x patches) against the reference's."""
    names = [str(i) for i in range(a.shape[-1])]

    def mard(sa, sr):
        ra = stats.ranks_array(stats.col_means(sa), names, True)
        rr = stats.ranks_array(stats.col_means(sr), names, True)
        return float(np.mean(np.abs(ra - rr)))

    flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
    est = mard(flat(a), flat(ref))
    s_idx, p_idx = stats.crossed_indices(a.shape[0], a.shape[1], n_boot, seed)
    boots = np.array([mard(flat(a[np.ix_(s, p)]), flat(ref[np.ix_(s, p)])) for s, p in zip(s_idx, p_idx)])
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return {"estimate": est, "lo": float(lo), "hi": float(hi)}


JITTERS = 2  # perturbed recomputations behind `stable`


def _jittered(aucs: dict[str, np.ndarray], ref: np.ndarray, eps: float, k: int) -> tuple[dict, np.ndarray]:
    """Every AUC moved by uniform noise in [-eps, eps] (draw k): near-ties resolved another way, as
    another CPU's rounding could."""
    rng = np.random.default_rng(10_007 + k)
    move = lambda x: x + rng.uniform(-eps, eps, size=x.shape)  # noqa: E731
    return {n: move(v) for n, v in aucs.items()}, move(ref)


def _same(row: dict, other: dict) -> bool:
    """Same verdict, and for separated pairs the same sign of the difference."""
    if row["verdict"] != other["verdict"]:
        return False
    return row["verdict"] != "separated" or np.sign(row["difference"]) == np.sign(other["difference"])


def stable_verdicts(aucs: dict[str, np.ndarray], ref: np.ndarray, stat: str, *, tie_tol: float, n_boot: int,
                    seed: int, alpha: float, margin: float) -> list[dict]:
    """Pairwise verdicts on `stat` (or 'mard') at tie_tol, each marked `stable` when recomputing them
    with every AUC moved by up to max(tie_tol, 1e-6) (`JITTERS` draws: near-ties resolved otherwise,
    as another CPU could) gives the same verdict and sign; an unstable decisive verdict becomes
    'undecided' (`verdict_raw` keeps the unperturbed one)."""
    def verdicts(a, r):
        if stat == "mard":
            return stats.pairwise_mard(a, r, n_boot=n_boot, seed=seed, alpha=alpha, margin=margin)
        return stats.pairwise_verdicts({k: per_patch(stat, v, r, tie_tol) for k, v in a.items()}, margin=margin,
                                       n_boot=n_boot, seed=seed, alpha=alpha)

    eps = max(tie_tol, 1e-6)
    runs = [verdicts(aucs, ref)] + [verdicts(*_jittered(aucs, ref, eps, k)) for k in range(JITTERS)]
    out = []
    for row, *others in zip(*runs):
        stable = all(_same(row, o) for o in others)
        out.append({**row, "stable": stable, "verdict_raw": row["verdict"],
                    "verdict": row["verdict"] if stable or row["verdict"] == "undecided" else "undecided"})
    return out


def patches_needed(row: dict, n_patches: int, margin: float, n_pairs: int, alpha: float = 0.05) -> int | None:
    """For an undecided pair: patches per seed at which it would be separated (Holm's strictest level,
    alpha / n_pairs) or equivalent (the 90% interval inside the margin), whichever comes first, if
    its interval kept shrinking as 1/sqrt(n) around the observed difference. None when no size
    would (a zero difference at or beyond the margin) or when the pair is undecided only because
    its verdict did not survive the near-tie check. An extrapolation: resolution can have a floor
    (near-tied methods), so read it as a lower bound."""
    from statistics import NormalDist

    d, lo, hi = row.get("difference"), row.get("lo"), row.get("hi")
    if d is None or lo is None or hi is None or row.get("verdict_raw", "undecided") != "undecided":
        return None
    sd = (hi - lo) / (2 * NormalDist().inv_cdf(1 - alpha / 2))  # the bootstrap standard error
    z_sep = NormalDist().inv_cdf(1 - alpha / (2 * max(n_pairs, 1)))
    z_eq = NormalDist().inv_cdf(1 - alpha)
    need = []
    if abs(d) > 0:
        need.append(n_patches * (z_sep * sd / abs(d)) ** 2)
    if abs(d) < margin:
        need.append(n_patches * (z_eq * sd / (margin - abs(d))) ** 2)
    return max(int(np.ceil(min(need))), n_patches + 1) if need else None


def _round(rows: list[dict], digits: int = 4) -> list[dict]:
    return [{k: (round(v, digits) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def _pair_rows(rows: list[dict], keys: dict, statistic: str) -> list[dict]:
    keep = ("a", "b", "verdict", "difference", "lo", "hi", "lo_equiv", "hi_equiv", "p_holm", "stable", "verdict_raw")
    return _round([{**keys, "statistic": statistic, **{k: r.get(k) for k in keep if k in r}} for r in rows])


# ------------------------------------------------------------------------------------ timings


def stage_seconds(workdir: Path, cell_names: Sequence[str]) -> dict:
    """Seconds per stage, each shared folder counted once (from the manifests), and per cell."""
    seen, per_stage, per_cell, fills = {}, {}, {}, {}
    for name in cell_names:
        cell_total = 0.0
        for link in sorted((workdir / "cells" / name).iterdir()):
            m = pipeline.read_manifest(link) if link.is_dir() else None
            if m is None:
                continue
            real = str(link.resolve())
            secs = float(m.get("seconds") or 0.0)
            cell_total += secs if real not in seen else 0.0
            if real in seen:
                continue
            seen[real] = secs
            per_stage.setdefault(m["stage"], {"seconds": 0.0, "runs": 0})
            per_stage[m["stage"]]["seconds"] += secs
            per_stage[m["stage"]]["runs"] += 1
            if m["stage"] == "occlude":
                for k, v in (m.get("summary") or {}).get("seconds_per_strategy", {}).items():
                    fills.setdefault(k, 0.0)
                    fills[k] += float(v)
        per_cell[name] = round(cell_total, 1)
    total = sum(seen.values())
    return {"per_stage": {k: {"seconds": round(v["seconds"], 1), "runs": v["runs"]} for k, v in per_stage.items()},
            "stages_total": round(total, 1), "per_cell_own": per_cell,
            "occlude_seconds_per_strategy": {k: round(v, 1) for k, v in sorted(fills.items())}}


# ------------------------------------------------------------------------------------ the run


def _fingerprint(config, workdir: Path, cells) -> str:
    fps = {}
    for c in cells:
        m = pipeline.read_manifest(workdir / "cells" / c.name / "score")
        fps[c.name] = m.get("fingerprint") if m else None
    from ibo_jax import __version__

    code = hashlib.sha256()  # the aggregate's own code: a change recomputes it
    for mod in (Path(__file__), Path(stats.__file__), Path(__file__).parent.parent / "reporting" / "grid.py"):
        code.update(mod.read_bytes())
    blob = json.dumps({"grid": ibo_io.plain(config.grid, lists=True), "cells": fps, "format": 1,
                       "version": __version__, "code": code.hexdigest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(config, workdir: str | Path, cells, *, say=lambda _l: None, started: float | None = None) -> dict:
    """Aggregates the finished cells into `workdir/aggregate/` (skipped when up to date). `started`:
    when this process began the grid (the report gives the wall time from then)."""
    workdir = Path(workdir)
    out_dir = workdir / "aggregate"
    fp = _fingerprint(config, workdir, cells)
    m = pipeline.read_manifest(out_dir)
    if m is not None and m.get("fingerprint") == fp:
        say("aggregate: up to date, skipped")
        return m["summary"]
    say("aggregate: running")
    t0 = time.time()
    summary = aggregate(config, workdir, cells)
    summary["seconds"]["aggregate"] = round(time.time() - t0, 1)
    if started is not None:
        summary["seconds"]["wall"] = round(time.time() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts.write_summary(out_dir, summary)
    from ibo_jax.reporting import grid as grid_report

    ibo_io.write_text(REPORT.path(out_dir), grid_report.markdown(summary))
    grid_report.figures(summary, out_dir)
    ibo_io.write_json(out_dir / pipeline.MANIFEST_FILE, {"stage": "aggregate", "fingerprint": fp,
                                                          "seconds": time.time() - t0,
                                                          "summary": {k: summary[k] for k in ("goal", "seconds")}})
    say(f"aggregate: done in {time.time() - t0:.1f} s ({out_dir / 'report.md'})")
    return summary


def aggregate(config, workdir: Path, cells) -> dict:
    g = config.grid
    kw = {"n_boot": int(g.n_boot), "seed": int(config.seed), "alpha": float(g.alpha)}
    tie = float(g.tie_tol)
    primary = str(g.statistic)
    if primary not in STATISTICS:
        raise GridError(f"config.grid.statistic: expected one of {STATISTICS}, got {primary!r}")
    base = [c for c in cells if not c.variant]
    loaded = {c.name: _cell_tables(workdir, c) for c in cells}
    agreement, pairwise, per_seed, power, goal, fills, per_seed_agreement = [], [], [], [], [], [], []
    skipped, undecided, in_dist = [], [], []
    groups = {}
    for c in base:
        groups.setdefault((c.regime, c.arch), []).append(c)
    for (regime, arch), members in groups.items():
        members = sorted(members, key=lambda c: c.seed)
        tables = [loaded[c.name]["table"] for c in members]
        idx0 = tables[0].image_id
        for c, t in zip(members, tables):
            if not np.array_equal(t.image_id, idx0):
                raise GridError(f"cell {c.name}: its evaluation patches differ from {members[0].name}'s; seeds "
                                f"must share the patches (train_classifier.seed, not the global seed, varies)")
        names, ri = _ranked_index(tables[0])
        for c, t in zip(members, tables):
            if _ranked_index(t)[0] != names:
                raise GridError(f"cell {c.name}: its ranked methods {_ranked_index(t)[0]} differ from "
                                f"{members[0].name}'s {names}")
        for curve in g.curves:
            present = [{s for (s, cv) in t.dense if cv == curve} for t in tables]
            for c, have in zip(members, present):
                if REFERENCE not in have:
                    raise GridError(f"cell {c.name}: no '{REFERENCE}' strategy on curve {curve!r} "
                                    f"(occlude.strategies / occlude.curves); the grid needs the known answer")
            strategies = sorted(set.intersection(*present) - {REFERENCE})
            missing = sorted(set.union(*present) - set.intersection(*present))
            aucs = {s: np.stack([t.aucs(s, curve)["p"][:, ri] for t in tables]) for s in strategies}  # [S, P, M]
            ref = np.stack([t.aucs(REFERENCE, curve)["p"][:, ri] for t in tables])
            # the IoU ranking in the curve's own direction (deletion: lower AUC = more important)
            sign = -1.0 if curve_registry.get(curve).lower_is_better else 1.0
            iou = np.stack([sign * t.gt_iou[:, ri] for t in tables])
            keys = {"regime": regime, "arch": arch, "curve": curve}
            if missing:
                skipped.append({**keys, "strategies": missing, "why": "not run in every seed's cell"})
            n_s, n_p = ref.shape[:2]
            for s in strategies:
                for stat in STATISTICS:
                    agreement.append({**keys, "strategy": s, "statistic": stat, "n_seeds": n_s, "n_patches": n_p,
                                      **_estimate(per_patch(stat, aucs[s], ref, tie), **kw)})
                agreement.append({**keys, "strategy": s, "statistic": "mard", "n_seeds": n_s, "n_patches": n_p,
                                  **_mard_estimate(aucs[s], ref, **kw)})
                agreement.append({**keys, "strategy": s, "statistic": "plausibility", "n_seeds": n_s,
                                  "n_patches": n_p, **_estimate(per_patch("kendall", aucs[s], iou, tie), **kw)})
            # the known answer's own agreement with the IoU ranking: how far plausibility is from faithfulness
            agreement.append({**keys, "strategy": REFERENCE, "statistic": "plausibility", "n_seeds": n_s,
                              "n_patches": n_p, **_estimate(per_patch("kendall", ref, iou, tie), **kw)})
            for stat in STATISTICS:
                rows = stable_verdicts(aucs, ref, stat, tie_tol=tie, margin=stats.TAU_MARGIN, **kw)
                pairwise += _pair_rows(rows, keys, stat)
                if stat == primary:
                    for r in rows:
                        if r["verdict"] == "undecided" and IBO in (r["a"], r["b"]):
                            undecided.append({**keys, "statistic": stat, "a": r["a"], "b": r["b"],
                                              "patches_per_seed_needed": patches_needed(
                                                  r, n_p, stats.TAU_MARGIN, len(rows), kw["alpha"]),
                                              "n_patches": n_p, "n_seeds": n_s})
            pairwise += _pair_rows(stable_verdicts(aucs, ref, "mard", tie_tol=tie, margin=stats.MARD_MARGIN, **kw),
                                   keys, "mard")
            if n_s > 1:
                for i, c in enumerate(members):
                    for s in strategies:
                        v = per_patch(primary, aucs[s][i:i + 1], ref[i:i + 1], tie)
                        per_seed_agreement.append({**keys, "seed": c.seed, "strategy": s, "statistic": primary,
                                                   **_estimate(v, **kw)})
                    one = {k: v[i:i + 1] for k, v in aucs.items()}
                    rows = stable_verdicts(one, ref[i:i + 1], primary, tie_tol=tie, margin=stats.TAU_MARGIN, **kw)
                    per_seed += _pair_rows(rows, {**keys, "seed": c.seed}, primary)
            mine = [r for r in pairwise if r["statistic"] == primary and all(r[k] == v for k, v in keys.items())
                    and IBO in (r["a"], r["b"])]
            if mine:
                decided = sum(r["verdict"] in DECISIVE for r in mine)
                goal.append({**keys, "statistic": primary, "ibo_pairs": len(mine), "decided": decided,
                             "share": round(decided / len(mine), 3), "met": decided / len(mine) >= 0.8})
            ns = [n for n in g.power_ns if n < n_p] + [n_p]
            for stat in (*STATISTICS, "mard"):
                def verdict_fn(sub, stat=stat, aucs=aucs, ref=ref):
                    a_sub = {k: v[:, sub] for k, v in aucs.items()}
                    if stat == "mard":
                        return stats.pairwise_mard(a_sub, ref[:, sub], n_boot=200, seed=kw["seed"], alpha=kw["alpha"])
                    return stats.pairwise_verdicts({k: per_patch(stat, v, ref[:, sub], tie) for k, v in a_sub.items()},
                                                   n_boot=200, seed=kw["seed"], alpha=kw["alpha"])
                for row in stats.power_curve(verdict_fn, n_p, ns, repeats=int(g.power_repeats), seed=kw["seed"],
                                             focus=IBO if IBO in strategies else None):
                    power.append({**keys, "statistic": stat, **_round([row])[0]})
            ind = [loaded[c.name]["in_distribution"] for c in members]
            if all(ind):  # the trust stage's reference-free scores, mean over the seeds' classifiers
                for s in strategies + [REFERENCE]:
                    vals = {k: [x[s][k] for x in ind if s in x and x[s].get(k) is not None]
                            for k in ("ood_percentile", "r_oms")}
                    in_dist.append({**keys, "strategy": s, **{k: (float(np.mean(v)) if v else None)
                                                              for k, v in vals.items()}})
            for s in strategies:
                secs, n = 0.0, 0
                resumed = False
                for c, t in zip(members, tables):
                    m = pipeline.read_manifest(workdir / "cells" / c.name / "occlude") or {}
                    secs += float((m.get("summary") or {}).get("seconds_per_strategy", {}).get(f"{s}/{curve}", 0.0))
                    resumed |= bool(m.get("resumed"))
                    n += int(np.isfinite(t.dense[(s, curve)]["p"][..., 1:]).sum())
                # a resumed occlude stage timed only its last run: its seconds per fill are too low
                fills.append({**keys, "strategy": s, "fills": n, "seconds": round(secs, 2), "resumed": resumed,
                              "seconds_per_fill": round(secs / n, 5) if n and not resumed else None})
    variants = _variants(config, cells, loaded, tie, kw)
    seconds = stage_seconds(workdir, [c.name for c in cells])
    return {
        "seeds": [int(s) for s in g.seeds],
        "regimes": list(g.regimes), "archs": list(g.archs), "curves": list(g.curves),
        "statistic": primary, "tie_tol": tie, "margin": {"kendall": stats.TAU_MARGIN, "decided": stats.TAU_MARGIN,
                                                          "mard": stats.MARD_MARGIN},
        "n_boot": kw["n_boot"], "alpha": kw["alpha"],
        "draws_per_mask": int(config.occlude.n_draws),
        "cells": [{"name": c.name, "regime": c.regime, "arch": c.arch, "seed": c.seed, "variant": c.variant,
                   "test_accuracy": loaded[c.name]["test_accuracy"],
                   "n_patches": int(len(loaded[c.name]["table"].image_id))} for c in cells],
        "agreement": _round(agreement), "pairwise": pairwise, "per_seed_pairwise": per_seed,
        "per_seed_agreement": _round(per_seed_agreement),
        "goal": goal, "power": power, "fills": fills, "undecided_ibo_pairs": undecided, "skipped": skipped,
        "in_distribution": _round(in_dist), "variants": variants, "seconds": seconds,
    }


def _variants(config, cells, loaded, tie: float, kw: dict) -> list[dict]:
    """Each variant cell against its base cell: every strategy both ran, agreement (primary
    statistic) in each with the paired difference; with several draws per mask, also one draw
    against their mean."""
    by_name = {c.name: c for c in cells}
    stat = str(config.grid.statistic)
    out = []
    for c in cells:
        if not c.variant:
            continue
        base = by_name[c.base]
        tv, tb = loaded[c.name]["table"], loaded[base.name]["table"]
        names, ri = _ranked_index(tb)
        if _ranked_index(tv)[0] != names or not np.array_equal(tv.image_id, tb.image_id):
            raise GridError(f"cell {c.name}: its methods or evaluation patches differ from its base cell {base.name}'s")
        for curve in config.grid.curves:
            if (REFERENCE, curve) not in tv.dense:
                continue
            ref_v = tv.aucs(REFERENCE, curve)["p"][None, :, ri]
            ref_b = tb.aucs(REFERENCE, curve)["p"][None, :, ri]
            for s in sorted({s for s, cv in tv.dense if cv == curve and s != REFERENCE}):
                if (s, curve) not in tb.dense:
                    continue
                v = per_patch(stat, tv.aucs(s, curve)["p"][None, :, ri], ref_v, tie)
                b = per_patch(stat, tb.aucs(s, curve)["p"][None, :, ri], ref_b, tie)
                row = {"variant": c.variant, "cell": c.name, "base": base.name, "curve": curve, "strategy": s,
                       "statistic": stat, "base_estimate": _estimate(b, **kw), "variant_estimate": _estimate(v, **kw)}
                row["difference"] = stats.pairwise_verdicts({"variant": v, "base": b}, **kw)[0]
                per_draw = _per_draw_aucs(tv, s, curve)[:, ri]  # [P, M, D]
                if per_draw.shape[-1] > 1:
                    one = per_patch(stat, per_draw[None, ..., 0], ref_v, tie)
                    row["draws"] = int(per_draw.shape[-1])
                    row["one_draw_estimate"] = _estimate(one, **kw)
                    row["one_draw_vs_mean"] = stats.pairwise_verdicts({"one_draw": one, "mean_of_draws": v}, **kw)[0]
                out.append(json.loads(json.dumps(row, default=float)))
            # with several draws per mask: the pairwise verdicts from one draw against those from their mean
            ss = sorted({s for s, cv in tv.dense if cv == curve and s != REFERENCE})
            draws = {s: _per_draw_aucs(tv, s, curve)[:, ri] for s in ss}
            if len(ss) >= 2 and min(d.shape[-1] for d in draws.values()) > 1:
                one = stats.pairwise_verdicts({s: per_patch(stat, d[None, ..., 0], ref_v, tie) for s, d in draws.items()},
                                              **kw)
                mean = stats.pairwise_verdicts({s: per_patch(stat, tv.aucs(s, curve)["p"][None, :, ri], ref_v, tie)
                                                for s in ss}, **kw)
                for r1, rm in zip(one, mean):
                    out.append({"variant": c.variant, "cell": c.name, "curve": curve, "statistic": stat,
                                "pair": [r1["a"], r1["b"]], "draws": int(min(d.shape[-1] for d in draws.values())),
                                "one_draw": {k: r1.get(k) for k in ("verdict", "difference", "lo", "hi")},
                                "mean_of_draws": {k: rm.get(k) for k in ("verdict", "difference", "lo", "hi")}})
    return out


def from_workdir(workdir: str | Path, overrides: dict | None = None, *, say=print) -> dict:
    """Aggregates the grid in `workdir` as it was run (its `grid.json` and the cells' `config.json`),
    optionally with `grid` fields overridden; no stage runs. The cells must be finished."""
    import ml_collections

    from ibo_jax.grid.cells import Cell, default_config

    workdir = Path(workdir)
    meta = ibo_io.read_json(workdir / "grid.json")
    names = [c["name"] for c in meta["cells"]]
    cell_cfgs = {}
    for n in names:
        path = workdir / "cells" / n / "config.json"
        if not path.is_file():
            raise GridError(f"{path}: missing; the cell {n} never started (rerun the grid)")
        cell_cfgs[n] = ibo_io.read_json(path)
    first = cell_cfgs[names[0]]
    config = ml_collections.ConfigDict({"seed": first["seed"], "occlude": {"n_draws": first["occlude"]["n_draws"]}})
    g = default_config()
    for k, v in {**meta["grid"], **(overrides or {})}.items():
        if k in g and k not in ("variants", "arch_kwargs"):
            g[k] = tuple(v) if isinstance(v, list) else v
    config.grid = g
    cells = [Cell(c["name"], c["regime"], c["arch"], int(c["seed"]), c["variant"],
                             ml_collections.ConfigDict(cell_cfgs[c["name"]])) for c in meta["cells"]]
    return run(config, workdir, cells, say=say)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m ibo_jax.grid.aggregate",
                                 description="Aggregate a finished benchmark grid again (no stage runs).")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--grid.n_boot", dest="n_boot", type=int)
    ap.add_argument("--grid.tie_tol", dest="tie_tol", type=float)
    ap.add_argument("--grid.statistic", dest="statistic")
    a = ap.parse_args(argv)
    over = {k: v for k, v in (("n_boot", a.n_boot), ("tie_tol", a.tie_tol), ("statistic", a.statistic)) if v is not None}
    try:
        from_workdir(a.workdir, over)
    except (GridError, artifacts.ArtifactError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
