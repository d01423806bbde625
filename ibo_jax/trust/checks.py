"""Does the verdict hold? Known-answer checks of a scored run (docs/method.md, 'Knowing whether the verdict is right').

All functions take a `ScoreTable` (the score stage's dense arrays, `artifacts.read_score_arrays`) and
return plain dicts for trust/summary.json:

    counterfactual_agreement(study, ...)   each strategy's CAM ranking against the ranking under the
                                           counterfactual strategy (the faithfulness ground truth)
    residual_evidence(study, arrays, ...)   p(tumor) left after removing the whole annotated region,
                                           against the twin's, and how close each fill is to the twin
    graded_controls(study, ...)            does a strategy recover the known order of the graded
                                           oracle controls (fixed-fraction curve)?
    blur_bias(study, ...)                  does a strategy reward Gaussian-smoothed maps more than
                                           the counterfactual does (<method>_smooth controls)?
    shuffle(study, ...)                    does a strategy recover the known order of the shuffled-
                                           score copies of each method (<method>_shuffle_<pct>)?
    srg(study, ...)                        symmetric relevance gain on the fixed-fraction curves
    power(study, ...)                      the run's resolution, Holm-adjusted tests, patches needed

Bootstraps resample patches jointly for every strategy and the reference (paired); the
statistics (bootstrap indices and intervals, Holm, rank data, the paired MARD test) come from
`ibo_jax.stats`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ibo_jax.cam.controls import derived_of, graded_level, smooth_name
from ibo_jax.evaluation import realism
from ibo_jax.evaluation.curves import CURVES, KNOWN_ANSWER, PRIMARY, RANKED
from ibo_jax.evaluation.ranking import kendall, rank, spearman
from ibo_jax.stats import (
    TAU_MARGIN,
    bootstrap_indices,
    col_means,
    holm,
    interval,
    kendall_rows,
    mean_ci,
    nanmean,
    paired_mard_test,
    pairwise_verdicts,
    rank_step,
    rankdata,
    ranks_array,
)

REFERENCE = "counterfactual"


def _ranked(study) -> tuple[list[str], list[int]]:
    names = [m for m in study.methods if m not in study.controls]
    return names, [study.methods.index(m) for m in names]


def _aucs(study, strategy: str, curve: str) -> np.ndarray | None:
    return study.aucs(strategy, curve)["p"] if (strategy, curve) in study.dense else None


def _ranking(means: np.ndarray, names: Sequence[str], ascending: bool) -> dict[str, int]:
    ok = {m: float(v) for m, v in zip(names, means, strict=True) if np.isfinite(v)}
    return rank(ok, ascending=ascending) if ok else {}


def decided_pairs(ref: np.ndarray, idx: np.ndarray, alpha: float) -> list[tuple[int, int, int]]:
    """Method pairs the reference orders beyond patch sampling: (i, j, sign of mean_i - mean_j)
    where the bootstrap interval of the paired difference of column means excludes 0."""
    boots = col_means(ref[idx])  # [B, M]
    means = col_means(ref)
    out = []
    for i, j in itertools.combinations(range(ref.shape[1]), 2):
        d = boots[:, i] - boots[:, j]
        d = d[np.isfinite(d)]
        if d.size and (np.quantile(d, alpha / 2) > 0 or np.quantile(d, 1 - alpha / 2) < 0):
            out.append((i, j, int(np.sign(means[i] - means[j]))))
    return out


def verdict_counts(rows: Sequence[dict]) -> dict[str, int]:
    """How many pairs came out separated, equivalent, undecided."""
    return {v: sum(r["verdict"] == v for r in rows) for v in ("separated", "equivalent", "undecided")}


def counterfactual_agreement(study, *, reference: str = REFERENCE, curves: Sequence[str] = RANKED,
                             n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, tie_tol: float = 0.0) -> dict:
    """Per curve and strategy: the strategy's ranking of the CAM methods against the reference's
    (MARD with a paired bootstrap interval, Kendall on all pairs and on the pairs the reference
    decides, per-patch Spearman of AUCs per method and its median), the within-patch rank
    agreement (Kendall's tau between the strategy's and the reference's AUCs across the methods,
    per patch: `within_patch`, mean with interval) and the pairwise verdicts between strategies on
    it (`stats.pairwise_verdicts`: separated / equivalent within `stats.TAU_MARGIN` / undecided,
    Holm over the pairs), paired MARD tests between strategies. `tie_tol`: AUC differences within
    it count as ties in the within-patch agreement (near-ties that could swap between CPUs)."""
    names, ri = _ranked(study)
    out = {"reference": reference, "curves": {}}
    for curve in curves:
        ref = _aucs(study, reference, curve)
        if ref is None or not names:
            continue
        lower = CURVES[curve].lower_is_better
        ref = ref[:, ri]
        idx = bootstrap_indices(ref.shape[0], n_boot, seed)
        ref_rank = _ranking(col_means(ref), names, lower)
        pairs = decided_pairs(ref, idx, alpha)
        strategies = {}
        aucs = {}
        within = {}
        for (strategy, c) in sorted(study.dense):
            if c != curve or strategy == reference:
                continue
            a = _aucs(study, strategy, curve)[:, ri]
            aucs[strategy] = a
            r = _ranking(col_means(a), names, lower)
            entry = {"ranking": r}
            if set(r) == set(ref_rank) and len(r) >= 2:
                ra, rr = ranks_array(col_means(a[idx]), names, lower), ranks_array(col_means(ref[idx]), names, lower)
                boot = np.mean(np.abs(ra - rr), axis=1)
                means = col_means(a)
                conc = [np.sign(means[i] - means[j]) == s for i, j, s in pairs]
                entry.update(mard=float(np.mean([abs(r[m] - ref_rank[m]) for m in names])),
                             mard_boot={"mean": float(boot.mean()), **interval(boot, alpha)},
                             kendall=kendall(r, ref_rank),
                             kendall_decided=(float((2 * np.sum(conc) - len(conc)) / len(conc)) if conc else None),
                             n_decided_pairs=len(pairs))
            per_method = {}
            for j, m in enumerate(names):
                ok = np.isfinite(a[:, j]) & np.isfinite(ref[:, j])
                if ok.sum() >= 3 and np.ptp(a[ok, j]) > 0 and np.ptp(ref[ok, j]) > 0:
                    per_method[m] = float(np.corrcoef(rankdata(a[ok, j]), rankdata(ref[ok, j]))[0, 1])
            entry["patch_spearman"] = per_method
            entry["patch_spearman_median"] = float(np.median(list(per_method.values()))) if per_method else None
            within[strategy] = kendall_rows(a, ref, tie_tol=tie_tol)  # [P]
            entry["within_patch"] = mean_ci(within[strategy], idx, alpha)
            strategies[strategy] = entry
        tests = {}
        for sa, sb in itertools.permutations(aucs, 2):
            tests[f"{sa}<{sb}"] = paired_mard_test(aucs[sa], aucs[sb], ref, names, n_boot=n_boot, seed=seed,
                                                   alpha=alpha, ascending=lower, gt_ascending=lower)
        verdicts = pairwise_verdicts(within, n_boot=n_boot, seed=seed, alpha=alpha) if len(within) >= 2 else []
        out["curves"][curve] = {"reference_ranking": ref_rank, "n_decided_pairs": len(pairs),
                                "n_pairs": len(names) * (len(names) - 1) // 2, "strategies": strategies,
                                "paired_mard_tests": tests,
                                "pairwise": {"statistic": "within_patch_kendall", "margin": TAU_MARGIN, "tie_tol": tie_tol,
                                             "rows": verdicts, "counts": verdict_counts(verdicts)}}
    return out


def residual_evidence(study, arrays, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Per strategy: p(tumor) after removing the whole annotated region (mean over patches, CI),
    its difference to the twin's p(tumor) (paired), and the fill against the twin: KID in the
    classifier's features, SSIM/PSNR inside the region (and against the original, for reference).

    `arrays`: the score stage's `artifacts.ScoreArrays` (twins' predictions, residual fills)."""
    n = len(study.p0)
    idx = bootstrap_indices(n, n_boot, seed)
    twin_p = arrays.twin_p
    out = {"original": mean_ci(study.p0, idx, alpha), "strategies": {}}
    if twin_p is not None:
        out["twin"] = mean_ci(twin_p, idx, alpha)
    for s in sorted(arrays.residual):
        r = arrays.residual[s]
        p = r.get("p")
        e = {"p_tumor": mean_ci(p, idx, alpha)}
        if twin_p is not None:
            e["minus_twin"] = mean_ci(np.nanmean(p, axis=1) - twin_p, idx, alpha)
            feat = r.feat if np.ndim(r.feat) == 2 and np.all(np.isfinite(r.feat)) else None
            if feat is not None and len(feat) >= 2 and arrays.twin_feat is not None and len(r.pos) == len(feat):
                tf = np.asarray(arrays.twin_feat, np.float64)[r.pos]  # each fill beside its own twin: paired
                e["kid_vs_twin"] = realism.kid(np.asarray(feat, np.float64), tf, paired=True)["kid"]
        for k in ("ssim_twin", "psnr_twin", "ssim_orig", "psnr_orig"):
            if r.get(k) is not None:
                e[k] = mean_ci(r.get(k), idx, alpha)
        out["strategies"][s] = e
    return out


def graded_controls(study, *, curves: Sequence[str] = (KNOWN_ANSWER, PRIMARY), n_boot: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> dict:
    """Per curve and strategy: mean AUC of each graded control (a = share of the oracle made
    random), Kendall's tau between a and the mean AUC (1 = the known order recovered; the
    known answer is the fixed-fraction curve's), its bootstrap distribution, the shifted
    oracle's AUC, and the share of the real methods a strategy ranks below `random`."""
    graded = sorted((graded_level(m), m) for m in study.methods if graded_level(m) is not None)
    names, ri = _ranked(study)
    out = {"levels": [a for a, _ in graded], "names": [m for _, m in graded], "curves": {}}
    if len(graded) < 2:
        return {**out, "skipped": "fewer than 2 graded controls (explain.controls lacks 'graded')"}
    gi = [study.methods.index(m) for _, m in graded]
    levels = np.array([a for a, _ in graded])
    for curve in curves:
        sign = 1.0 if CURVES[curve].lower_is_better else -1.0  # worse explanation = higher AUC on MoRF
        res = {}
        for (strategy, c) in sorted(study.dense):
            if c != curve:
                continue
            a = _aucs(study, strategy, curve)
            idx = bootstrap_indices(a.shape[0], n_boot, seed)
            means = col_means(a[:, gi])
            boots = col_means(a[idx][:, :, gi])  # [B, A]
            tau = _tau_with(levels, sign * means)
            tau_boot = np.array([_tau_with(levels, sign * b) for b in boots])
            entry = {"auc": {m: (None if not np.isfinite(v) else float(v)) for (_, m), v in zip(graded, means)},
                     "kendall_tau": tau, "kendall_tau_boot": {"mean": float(np.nanmean(tau_boot)), **interval(tau_boot, alpha)},
                     "share_boot_order_exact": float(np.mean(tau_boot == 1.0))}
            if "oracle_shifted" in study.methods:
                v = col_means(a[:, [study.methods.index("oracle_shifted")]])[0]
                entry["auc_oracle_shifted"] = None if not np.isfinite(v) else float(v)
            if "random" in study.methods and names:
                rnd = col_means(a[:, [study.methods.index("random")]])[0]
                real = col_means(a[:, ri])
                better = (real > rnd) if CURVES[curve].lower_is_better else (real < rnd)
                entry["share_methods_below_random"] = float(np.mean(better[np.isfinite(real)]))
            res[strategy] = entry
        out["curves"][curve] = res
    return out


def _tau_with(levels: np.ndarray, values: np.ndarray) -> float:
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return float("nan")
    lv, v = levels[ok], values[ok]
    s = [np.sign(lv[j] - lv[i]) * np.sign(v[j] - v[i]) for i, j in itertools.combinations(range(len(v)), 2)]
    return float(np.mean(s))


def srg(study, *, morf_curve: str = KNOWN_ANSWER, lerf_curve: str | None = None, n_boot: int = 1000, seed: int = 0,
        alpha: float = 0.05) -> dict:
    """Symmetric relevance gain (Blücher et al. 2024) per strategy and method: the mean over q of
    p(tumor | least important q removed) - p(tumor | most important q removed) (higher = better),
    its ranking, and whether the MoRF (fixed-fraction AUC) and LeRF rankings agree. `lerf_curve`
    defaults to the registry's partner of `morf_curve` (`Curve.srg_partner`)."""
    lerf_curve = CURVES[morf_curve].srg_partner if lerf_curve is None else lerf_curve
    names, ri = _ranked(study)
    out = {"curves": [morf_curve, lerf_curve], "strategies": {}}
    for (strategy, c) in sorted(study.dense):
        if c != morf_curve or (strategy, lerf_curve) not in study.dense:
            continue
        pm = nanmean(study.dense[(strategy, morf_curve)]["p"][..., 1:], 2)  # [N, M, Q] draw mean
        pl = nanmean(study.dense[(strategy, lerf_curve)]["p"][..., 1:], 2)  # NaN: no curve (curve_images)
        if pm.shape != pl.shape:
            continue
        per = np.where(study.valid[..., None], pl - pm, np.nan).mean(-1)  # [N, M]
        idx = bootstrap_indices(per.shape[0], n_boot, seed)
        vals = {m: mean_ci(per[:, j], idx, alpha) for j, m in enumerate(study.methods)}
        srg_rank = _ranking(col_means(per[:, ri]), names, ascending=False)
        morf_rank = _ranking(col_means(_aucs(study, strategy, morf_curve)[:, ri]), names, ascending=True)
        lerf_rank = _ranking(col_means(_aucs(study, strategy, lerf_curve)[:, ri]), names, ascending=False)
        e = {"srg": vals, "ranking": srg_rank, "morf_ranking": morf_rank, "lerf_ranking": lerf_rank}
        if len(morf_rank) >= 2 and set(morf_rank) == set(lerf_rank):
            e["morf_lerf_kendall"] = kendall(morf_rank, lerf_rank)
            e["morf_lerf_spearman"] = spearman(morf_rank, lerf_rank)
        out["strategies"][strategy] = e
    return out


def _half_width(a, b, ref, names, idx, ascending, ref_ascending) -> float:
    ra = ranks_array(col_means(a[idx]), names, ascending)
    rb = ranks_array(col_means(b[idx]), names, ascending)
    rr = ranks_array(col_means(ref[idx]), names, ref_ascending)
    d = np.mean(np.abs(ra - rr), axis=1) - np.mean(np.abs(rb - rr), axis=1)
    return float((np.quantile(d, 0.975) - np.quantile(d, 0.025)) / 2)


def power(study, *, reference: str | None = REFERENCE, curve: str = PRIMARY, n_boot: int = 1000, seed: int = 0,
          alpha: float = 0.05, subsample_repeats: int = 4) -> dict:
    """How finely this run can tell strategies apart, against `reference` (a strategy's ranking, or
    None for the IoU ground truth): per pair of strategies the paired bootstrap interval of their
    MARD difference, its half-width (the resolution) and Holm-adjusted two-sided p-values; whether
    the best strategy is decisively best; how many patches would make it so (1/sqrt(n)
    extrapolation, checked by subsampling the patches)."""
    names, ri = _ranked(study)
    lower = CURVES[curve].lower_is_better
    use_gt = reference is None or (reference, curve) not in study.dense
    ref = study.gt_iou[:, ri] if use_gt else _aucs(study, reference, curve)[:, ri]
    ref_asc = False if use_gt else lower
    aucs = {s: _aucs(study, s, curve)[:, ri] for (s, c) in sorted(study.dense) if c == curve and s != reference}
    step = rank_step(len(names))  # one swap of neighbours in a ranking of the methods actually ranked
    out = {"reference": "plausibility (IoU with the annotation)" if use_gt else reference, "curve": curve,
           "n_patches": int(len(study.p0)), "mard_step": step}
    if len(aucs) < 2 or len(names) < 2:
        return {**out, "skipped": "fewer than 2 strategies or methods to compare"}
    n = ref.shape[0]
    mards = {}
    for s, a in aucs.items():
        rs = ranks_array(col_means(a), names, lower)
        rr = ranks_array(col_means(ref), names, ref_asc)
        mards[s] = float(np.mean(np.abs(rs - rr)))
    pairs = list(itertools.combinations(sorted(aucs), 2))
    tests = {}
    for sa, sb in pairs:
        t = paired_mard_test(aucs[sa], aucs[sb], ref, names, n_boot=n_boot, seed=seed, alpha=alpha,
                             ascending=lower, gt_ascending=ref_asc)
        tests[f"{sa} vs {sb}"] = {**t, "half_width": (t["hi"] - t["lo"]) / 2}
    adj = holm([t["p_two_sided"] for t in tests.values()])
    for t, p in zip(tests.values(), adj, strict=True):
        t["p_holm"] = p
    resolution = float(np.median([t["half_width"] for t in tests.values()]))
    best = min(mards, key=mards.get)
    others = [t for k, t in tests.items() if best in k.split(" vs ")]
    runner_up = sorted(mards.values())[1]
    decisive = all(t["p_holm"] < alpha for t in others) and runner_up > mards[best]
    target = max(runner_up - mards[best], step)
    needed = int(np.ceil(n * (resolution / target) ** 2)) if resolution > 0 else n
    # the 1/sqrt(n) rule checked: the resolution of subsamples of n/4 and n/2 patches
    sub = []
    r = np.random.default_rng(seed + 1)
    sa, sb = pairs[0]
    for frac in (0.25, 0.5, 1.0):
        m = max(4, int(round(frac * n)))
        hw = []
        for rep in range(subsample_repeats if frac < 1 else 1):
            rows = r.choice(n, m, replace=False) if frac < 1 else np.arange(n)
            sidx = bootstrap_indices(m, n_boot, seed + rep)
            hw.append(_half_width(aucs[sa][rows], aucs[sb][rows], ref[rows], names, sidx, lower, ref_asc))
        sub.append({"n": m, "half_width": float(np.mean(hw))})
    c = float(np.sum([s["half_width"] * np.sqrt(s["n"]) for s in sub]) / len(sub))
    for s in sub:
        s["predicted"] = c / np.sqrt(s["n"])
    tied = sorted(s for s, v in mards.items() if v <= mards[best] + 1e-9)
    lead = (f"{' and '.join(tied)} tie at {mards[best]:.2f}" if len(tied) > 1 else
            f"{best}'s lead ({mards[best]:.2f} against {runner_up:.2f}) is not significant against every other "
            "strategy after Holm correction")
    sentence = (f"Decisive: {best} agrees best with the {out['reference']} ranking (MARD {mards[best]:.2f}), and "
                f"every paired test against it is significant after Holm correction."
                if decisive else
                f"Not decisive: with {n} patches this run resolves MARD differences of about "
                f"{resolution:.2f} (median half-width of the paired intervals; one rank step is {step:.2f}), and "
                f"{lead}; about {needed} patches would resolve a difference of {target:.2f}.")
    return {**out, "mard": mards, "best": best, "resolution": resolution, "decisive": bool(decisive),
            "patches_needed": needed, "target_difference": target, "tests": tests,
            "subsampling": {"pair": f"{sa} vs {sb}", "rows": sub, "c": c}, "sentence": sentence}


def _curves_with_rows(study, curves: Sequence[str], cols: Sequence[int]) -> dict[str, dict[str, np.ndarray]]:
    """{curve: {strategy: AUCs [N, M]}} for the curves (in the given order) where some strategy has
    a finite AUC in one of the columns `cols` (a control not occluded on a curve has none there)."""
    out = {}
    for curve in curves:
        found = {}
        for (strategy, c) in sorted(study.dense):
            if c == curve:
                a = _aucs(study, strategy, curve)
                if np.isfinite(a[:, cols]).any():
                    found[strategy] = a
        if found:
            out[curve] = found
    return out


def blur_bias(study, *, reference: str = REFERENCE, curves: Sequence[str] = (KNOWN_ANSWER, PRIMARY),
              sigma_px: float | None = None, sigma: float | None = None, n_boot: int = 1000, seed: int = 0,
              alpha: float = 0.05) -> dict:
    """Blur bias (after Song et al.): per curve and strategy, the smoothing gain of each ranked
    method, sign * (AUC(method) - AUC(<method>_smooth)) with sign = +1 where lower AUC is better
    (deletion) and -1 otherwise, so positive = the smoothed map scores better. Smoothing adds no
    information, so a strategy without blur bias gains no more than the `reference`
    (counterfactual) says: `excess` = the strategy's gain - the reference's, per patch (paired),
    positive = blur bias. Gains are averaged over the methods per patch, then over patches, with
    bootstrap intervals over patches; `per_method` beside. Curves in the given order (the
    fixed-fraction one first), those where the smoothed controls have AUCs; `curve` = the first."""
    names, _ = _ranked(study)
    pairs = {m: smooth_name(m) for m in names if smooth_name(m) in study.methods and smooth_name(m) in study.controls}
    out = {"sigma_px": sigma_px, "sigma_fraction": sigma, "reference": reference, "pairs": pairs,
           "definition": "gain = AUC(method) - AUC(<method>_smooth), signed so that positive = the smoothed map "
                         "scores better; excess = the strategy's gain - the reference's (positive = blur bias)",
           "curves": {}}
    if not pairs:
        return {**out, "skipped": "no <method>_smooth controls (explain.derived_controls lacks 'smooth')"}
    oi = [study.methods.index(m) for m in pairs]
    si = [study.methods.index(c) for c in pairs.values()]
    found = _curves_with_rows(study, curves, si)
    if not found:
        return {**out, "skipped": f"the <method>_smooth controls have no AUCs on the curves {list(curves)}"}
    for curve, aucs in found.items():
        sign = 1.0 if CURVES[curve].lower_is_better else -1.0
        gains = {s: sign * (a[:, oi] - a[:, si]) for s, a in aucs.items()}  # [N, K]
        idx = bootstrap_indices(len(study.p0), n_boot, seed)
        ref = gains.get(reference)
        res = {}
        for s, g in gains.items():
            e = {"gain": mean_ci(g, idx, alpha),
                 "per_method": {m: mean_ci(g[:, j], idx, alpha) for j, m in enumerate(pairs)}}
            if ref is not None and s != reference:
                e["excess"] = mean_ci(g - ref, idx, alpha)
                lo = e["excess"]["lo"]
                e["blur_bias"] = None if lo is None else bool(lo > 0)  # interval above 0
            res[s] = e
        entry = {"strategies": res}
        entry["reference_gain"] = res[reference]["gain"] if reference in res else None
        if reference not in res:
            entry["excess_unavailable"] = f"no {reference!r} strategy on the {curve!r} curve"
        out["curves"][curve] = entry
    out["curve"] = next(iter(out["curves"]))
    return out


def _spearman_rows(levels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Spearman's rho between levels [S] (distinct) and each row of values [..., S] (average ranks
    for ties): [...], NaN where a row has a non-finite value or is constant."""
    from scipy.stats import rankdata as _rank

    v = np.asarray(values, np.float64)
    ok = np.all(np.isfinite(v), -1)
    r = _rank(np.where(np.isfinite(v), v, 0.0), axis=-1)
    lv = _rank(np.asarray(levels, np.float64))
    rc, lc = r - r.mean(-1, keepdims=True), lv - lv.mean()
    den = np.sqrt((rc ** 2).sum(-1) * (lc ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rc * lc).sum(-1) / den
    return np.where(ok & (den > 0), rho, np.nan)


def shuffle(study, *, curves: Sequence[str] = (KNOWN_ANSWER, PRIMARY), graded: dict | None = None,
            n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Shuffled-score degradation (F-Fidelity's validation): per curve and strategy, for each ranked
    method with <method>_shuffle_<pct> controls, Spearman's rho between the share s (0 = the
    method's own map, then the shares) and the mean AUC in the worse direction (higher on a
    deletion curve): 1 = the known order recovered. `spearman`: the mean over methods, with the
    bootstrap interval over patches of that mean; `per_method` (mean AUC per share, rho);
    `share_methods_order_exact` (rho = 1); `graded_kendall_tau` from `graded` (the graded_controls
    section) beside. Curves in the given order where the shuffle controls have AUCs."""
    names, _ = _ranked(study)
    groups: dict[str, list[tuple[float, str]]] = {}
    for c in study.controls:
        d = derived_of(c, names)
        if d and d[1] == "shuffle" and c in study.methods:
            groups.setdefault(d[0], [(0.0, d[0])]).append((d[2], c))
    groups = {m: sorted(g) for m, g in groups.items()}
    shares = sorted({s for g in groups.values() for s, _ in g})
    out = {"shares": shares, "methods": {m: [c for _, c in g] for m, g in groups.items()},
           "definition": "Spearman's rho between s (0 = the method's map) and the mean AUC in the worse "
                         "direction, averaged over methods (1 = the known order recovered)", "curves": {}}
    if not groups:
        return {**out, "skipped": "no <method>_shuffle_<pct> controls (explain.derived_controls lacks 'shuffle')"}
    cols = [study.methods.index(c) for g in groups.values() for _, c in g[1:]]
    found = _curves_with_rows(study, curves, cols)
    if not found:
        return {**out, "skipped": f"the shuffle controls have no AUCs on the curves {list(curves)}"}
    idx = bootstrap_indices(len(study.p0), n_boot, seed)
    for curve, aucs in found.items():
        sign = 1.0 if CURVES[curve].lower_is_better else -1.0  # worse = higher AUC on a deletion curve
        res = {}
        for strategy, a in aucs.items():
            per_method, rho, boot = {}, [], []
            for m, g in groups.items():
                gi = [study.methods.index(c) for _, c in g]
                lv = np.array([s for s, _ in g])
                means = col_means(a[:, gi])  # [S]
                r = float(_spearman_rows(lv, sign * means))
                rho.append(r)
                boot.append(_spearman_rows(lv, sign * col_means(a[idx][:, :, gi])))  # [B]
                per_method[m] = {"auc": {c: (None if not np.isfinite(v) else float(v)) for (_, c), v in zip(g, means)},
                                 "spearman": None if not np.isfinite(r) else r}
            rho_a, boot_mean = np.array(rho), nanmean(np.stack(boot, 1), 1)  # [K], [B]
            fin = rho_a[np.isfinite(rho_a)]
            e = {"spearman": float(fin.mean()) if fin.size else None,
                 "spearman_boot": {"mean": float(np.nanmean(boot_mean)) if np.isfinite(boot_mean).any() else None,
                                   **interval(boot_mean, alpha)},
                 "share_methods_order_exact": float(np.mean(np.isclose(fin, 1.0))) if fin.size else None,
                 "per_method": per_method}
            if graded is not None:
                e["graded_kendall_tau"] = (graded.get("curves", {}).get(curve, {}).get(strategy, {}) or {}).get("kendall_tau")
            res[strategy] = e
        out["curves"][curve] = res
    out["curve"] = next(iter(out["curves"]))
    return out
