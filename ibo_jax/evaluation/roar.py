"""ROAR and KAR (Hooker et al. 2019): remove (or keep) the top-t pixels of every training and test
patch by a method's map, retrain from scratch, and see how much a fresh model can still learn.

    masks = roar.top_fraction_mask(maps, 0.3)                 # bool [N, H, W]: the top round(t*H*W)
    x = roar.apply_removal(images, masks, fill)               # ROAR: fill inside the masks
    x = roar.apply_removal(images, masks, fill, keep=True)    # KAR: fill outside (keep the top-t)
    noise = roar.random_maps(key, n, h, w)                    # the random baseline map
    m = roar.mask_only_images(masks)                          # the leakage control's input
    out = roar.scores(rows, known_ranking, n_test=..., chance=...)

Curves (public names): `roar` (remove the top-t) and `kar` (keep the top-t, remove the rest).
A row is one retraining: {curve, method, fraction, seed, test_accuracy, mean_p_tumor} with curve
'baseline' (nothing removed), 'roar', 'kar' or 'leakage' (trained on the masks alone).

The score of a method at a fraction t and seed is the drop of its retrained accuracy against a
random map's at the same t and seed: `drop_vs_random = acc(random) - acc(method)` (the random
map's accuracy minus the method's; the baseline cancels). ROAR: a larger drop is better (the
method removed more of what can be learned); KAR: a smaller drop is better (it kept more), so
`score` = drop_vs_random for ROAR and -drop_vs_random for KAR: higher is better on both curves.
The same on mean p(tumor) of the test tumor patches. Fractions 0 and 1 are reported but left out
of the mean (every map gives the same images there). ROAR measures what a fresh model can still
learn from the remaining pixels, not what the trained model used: its ranking can differ from the
counterfactual's without either being wrong, and `scores` lists where they differ.

Leakage (Rong et al. 2022): a classifier trained on the masks alone (no pixels). If the mask's
shape predicts the label, removing those pixels also writes the label into the image, and the
ROAR/KAR verdict of that method is confounded.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

CURVES = ("roar", "kar")
RANDOM = "random"
LEAKAGE_MARGIN = 0.1  # accuracy above chance that counts as "the mask predicts the label"


def top_fraction_mask(maps: np.ndarray, t: float, ids: np.ndarray | None = None) -> np.ndarray:
    """bool [N, H, W]: the round(t * H * W) pixels of highest value of each map [N, H, W].

    Ties are broken by a random pixel order per patch (`ids` [N]: the patch indices, the same order
    for every method and fraction), so a constant or mostly-zero map (e.g. a normal patch's map of
    the tumor logit) removes scattered pixels, not a shape that could carry the label; without
    `ids`, by raster order (row-major: the earlier pixel first). Deterministic either way."""
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps: expected [N, H, W], got shape {maps.shape}")
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t: expected a fraction in [0, 1], got {t}")
    n, h, w = maps.shape
    k = int(round(t * h * w))
    flat = maps.reshape(n, h * w).astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise ValueError(f"maps: {int(np.sum(~np.isfinite(flat)))} non-finite values")
    out = np.zeros((n, h * w), bool)
    if k:
        if ids is None:
            order = np.argsort(-flat, axis=1, kind="stable")[:, :k]  # stable: equal values keep raster order
        else:
            ids = np.asarray(ids, np.int64).reshape(-1)
            if ids.shape != (n,):
                raise ValueError(f"ids: expected one patch index per map ({n}), got shape {ids.shape}")
            tie = np.stack([np.random.default_rng([int(i) & 0x7FFFFFFF, 0x5EED]).permutation(h * w) for i in ids])
            order = np.lexsort((tie, -flat), axis=1)[:, :k]  # value first, then the patch's random order
        np.put_along_axis(out, order, True, axis=1)
    return out.reshape(n, h, w)


def apply_removal(images: np.ndarray, masks: np.ndarray, fill: Sequence[float], keep: bool = False) -> np.ndarray:
    """float32 [N, H, W, 3] in [0, 1]: uint8 images [N, H, W, 3] / 255 with the pixels inside
    `masks` [N, H, W] (ROAR; `keep=True`: outside them, KAR) set to `fill` (3 values in [0, 1], the
    per-channel dataset mean). Every other pixel is exactly image / 255."""
    images, masks = np.asarray(images), np.asarray(masks, bool)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if masks.shape != images.shape[:3]:
        raise ValueError(f"masks: expected shape {images.shape[:3]}, got {masks.shape}")
    fill = np.asarray(fill, np.float32).reshape(-1)
    if fill.shape != (3,) or np.any(fill < 0) or np.any(fill > 1):
        raise ValueError(f"fill: expected 3 values in [0, 1], got {fill.tolist()}")
    x = images.astype(np.float32) / 255.0
    where = ~masks if keep else masks
    x[where] = fill
    return x


def random_maps(key: jax.Array, n: int, h: int, w: int, *, grid: int = 8,
                ids: Sequence[int] | None = None) -> np.ndarray:
    """Smooth random maps [N, H, W] float32 in [0, 1]: uniform noise on a grid x grid lattice,
    bilinearly upsampled and min-max scaled (like the explain stage's 'random' control), map i
    from fold_in(key, ids[i]) (default ids 0..n-1; pass patch indices so a map does not depend on
    which patches are loaded with it). Smooth, not pixel noise: its top-t pixels form blobs of
    about a CAM map's size, so it removes as contiguous a region as the methods do."""
    from ibo_jax import cam

    ids = np.arange(n) if ids is None else np.asarray(ids, np.int64)
    if len(ids) != n:
        raise ValueError(f"ids: expected {n} values, got {len(ids)}")
    if n == 0:
        return np.zeros((0, h, w), np.float32)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(ids & 0x7FFFFFFF, jnp.uint32))
    noise = jax.vmap(lambda k: jax.random.uniform(k, (grid, grid)))(keys)
    return np.asarray(cam.minmax(cam.resize(noise, (h, w))), np.float32)


def mask_only_images(masks: np.ndarray) -> np.ndarray:
    """The leakage control's input: uint8 [N, H, W, 3], 255 inside the mask and 0 outside, in
    every channel. No pixel of the patch is left: only the mask's shape."""
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks: expected [N, H, W], got shape {masks.shape}")
    return np.repeat((masks.astype(np.uint8) * 255)[..., None], 3, axis=-1)


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (two-sided, level 1 - alpha)."""
    if n <= 0:
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = float(norm.ppf(1 - alpha / 2))
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def leakage_verdict(accuracy: float, *, n_test: int | None, chance: float, margin: float = LEAKAGE_MARGIN,
                    alpha: float = 0.05) -> dict:
    """'confounded' when the mask-only classifier's test accuracy is at least `chance + margin` and
    (given n_test) the lower end of its Wilson (1 - alpha) interval lies above chance; else
    'not confounded'."""
    out: dict = {"test_accuracy": float(accuracy), "chance": float(chance), "margin": float(margin)}
    above = accuracy >= chance + margin
    if n_test:
        lo, hi = wilson_interval(int(round(accuracy * n_test)), int(n_test), alpha)
        out.update(n_test=int(n_test), interval=[lo, hi])
        above = above and lo > chance
    out["verdict"] = "confounded" if above else "not confounded"
    return out


def _mean(values: Iterable[float]) -> float | None:
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def _ranked_fraction(t: float) -> bool:
    return 0.0 < t < 1.0


def _curve_scores(rows: Sequence[Mapping], curve: str, methods: Sequence[str], baseline: Mapping[int, Mapping],
                  random_method: str) -> dict:
    """Per method: per fraction (means over seeds), the means over the ranked fractions."""
    sign = 1.0 if curve == "roar" else -1.0
    by = {(r["method"], round(float(r["fraction"]), 6), int(r["seed"])): r for r in rows if r["curve"] == curve}
    fractions = sorted({k[1] for k in by})
    out = {}
    for m in [*methods, random_method]:
        per_t, scores, scores_p, per_seed = {}, [], [], {}
        for t in fractions:
            entries = []
            for (mm, tt, s), r in sorted(by.items()):
                if mm != m or tt != t:
                    continue
                rnd = by.get((random_method, t, s))
                e = {"seed": s, "accuracy": float(r["test_accuracy"]), "p_tumor": r.get("mean_p_tumor")}
                if s in baseline:
                    e["accuracy_drop"] = float(baseline[s]["test_accuracy"]) - e["accuracy"]
                if rnd is not None:
                    e["drop_vs_random"] = float(rnd["test_accuracy"]) - e["accuracy"]
                    if e["p_tumor"] is not None and rnd.get("mean_p_tumor") is not None:
                        e["p_tumor_drop_vs_random"] = float(rnd["mean_p_tumor"]) - float(e["p_tumor"])
                entries.append(e)
            if not entries:
                continue
            pt = {"n_seeds": len(entries), "accuracy": _mean(e["accuracy"] for e in entries),
                  "mean_p_tumor": _mean(e["p_tumor"] for e in entries),
                  "accuracy_drop": _mean(e.get("accuracy_drop") for e in entries),
                  "drop_vs_random": _mean(e.get("drop_vs_random") for e in entries),
                  "p_tumor_drop_vs_random": _mean(e.get("p_tumor_drop_vs_random") for e in entries)}
            per_t[f"{t:g}"] = pt
            if _ranked_fraction(t):
                for e in entries:
                    if "drop_vs_random" in e:
                        per_seed.setdefault(e["seed"], []).append(sign * e["drop_vs_random"])
                if pt["drop_vs_random"] is not None:
                    scores.append(sign * pt["drop_vs_random"])
                if pt["p_tumor_drop_vs_random"] is not None:
                    scores_p.append(sign * pt["p_tumor_drop_vs_random"])
        if not per_t:
            continue
        seed_scores = [float(np.mean(v)) for v in per_seed.values()]
        out[m] = {"per_fraction": per_t, "score": _mean(scores), "score_p_tumor": _mean(scores_p),
                  "score_per_seed": {str(s): float(np.mean(v)) for s, v in sorted(per_seed.items())},
                  "score_sd_over_seeds": float(np.std(seed_scores, ddof=1)) if len(seed_scores) > 1 else None}
    return out


def _ranking(values: Mapping[str, float | None]) -> dict[str, int]:
    from ibo_jax.evaluation.ranking import rank

    ok = {m: v for m, v in values.items() if v is not None and np.isfinite(v)}
    return rank(ok, ascending=False) if ok else {}


def compare_rankings(scores_by_method: Mapping[str, float], ranking: Mapping[str, int],
                     known: Mapping[str, int], *, tie_tol: float = 0.0) -> dict:
    """Kendall's tau of `ranking` with the `known` ranking on their shared methods, and every pair
    they order differently: the known answer puts `better` above `worse`, the scores do not
    (`tied`: the two scores lie within tie_tol, so the order came from the tie-break)."""
    from ibo_jax.evaluation.ranking import kendall

    shared = sorted((m for m in known if m in ranking), key=lambda m: (known[m], m))  # in the known order
    out: dict = {"methods": shared, "n_pairs": len(shared) * (len(shared) - 1) // 2,
                 "only_in_known": sorted(set(known) - set(ranking)),
                 "only_in_scores": sorted(set(ranking) - set(known))}
    if len(shared) < 2:
        out.update(kendall_tau=None, disagreements=[])
        return out
    sub = {m: ranking[m] for m in shared}
    sub = {m: i + 1 for i, m in enumerate(sorted(shared, key=lambda m: sub[m]))}
    ref = {m: i + 1 for i, m in enumerate(sorted(shared, key=lambda m: known[m]))}
    out["kendall_tau"] = kendall(sub, ref)
    dis = []
    for a, b in itertools.combinations(shared, 2):
        better, worse = (a, b) if ref[a] < ref[b] else (b, a)
        if sub[better] > sub[worse]:
            sb, sw = float(scores_by_method[better]), float(scores_by_method[worse])
            dis.append({"better": better, "worse": worse, "score_better": sb, "score_worse": sw,
                        "tied": bool(abs(sb - sw) <= tie_tol)})
    out["disagreements"] = dis
    out["n_disagreements"] = len(dis)
    out["n_tied_disagreements"] = sum(d["tied"] for d in dis)
    return out


def scores(rows: Iterable[Mapping], known_ranking: Mapping[str, int] | None = None, *,
           methods: Sequence[str] | None = None, n_test: int | None = None, chance: float = 0.5,
           margin: float = LEAKAGE_MARGIN, alpha: float = 0.05, random_method: str = RANDOM,
           tie_tol: float = 0.0) -> dict:
    """ROAR/KAR scores from retraining rows (see the module docstring), per curve:
      methods.<m>: per_fraction.<t> {n_seeds, accuracy, mean_p_tumor, accuracy_drop (against the
                   seed's baseline row), drop_vs_random, p_tumor_drop_vs_random}, score (mean over
                   the fractions strictly between 0 and 1 of +-drop_vs_random: higher is better),
                   score_p_tumor, score_per_seed, score_sd_over_seeds (None with one seed)
      ranking, ranking_p_tumor: ordinal ranks of the ranked methods (not the random map) by score
      known_answer, known_answer_p_tumor: `compare_rankings` against `known_ranking` (if given)
      confounded: the ranked methods whose leakage verdict is 'confounded'
    leakage: per method, `leakage_verdict` of its 'leakage' row (mean over seeds) with n_test and
    chance (the majority share of the test labels); notes: one sentence per confounded verdict."""
    rows = [dict(r) for r in rows]
    for r in rows:
        for k in ("curve", "method", "fraction", "seed", "test_accuracy"):
            if k not in r:
                raise ValueError(f"rows: every row needs {k!r}; got {sorted(r)}")
    if methods is None:
        methods = sorted({r["method"] for r in rows if r["curve"] in CURVES and r["method"] != random_method},
                         key=lambda m: (list(known_ranking or {}).index(m) if m in (known_ranking or {}) else 1 << 30, m))
    methods = [m for m in methods if m != random_method]
    baseline = {int(r["seed"]): r for r in rows if r["curve"] == "baseline"}

    leak: dict = {"rule": (f"confounded when the mask-only classifier's test accuracy is >= chance + {margin:g} "
                           f"and the lower end of its Wilson {100 * (1 - alpha):g}% interval is above chance"
                           if n_test else f"confounded when the mask-only test accuracy is >= chance + {margin:g}"),
                  "chance": float(chance), "methods": {}}
    for m in [*methods, random_method]:
        lr = [r for r in rows if r["curve"] == "leakage" and r["method"] == m]
        if lr:
            acc = float(np.mean([float(r["test_accuracy"]) for r in lr]))
            leak["methods"][m] = {**leakage_verdict(acc, n_test=n_test, chance=chance, margin=margin, alpha=alpha),
                                  "fraction": float(lr[0]["fraction"]), "n_seeds": len(lr)}
    confounded = [m for m in methods if leak["methods"].get(m, {}).get("verdict") == "confounded"]

    out: dict = {"random_method": random_method, "methods": list(methods),
                 "baseline": {str(s): {"test_accuracy": float(r["test_accuracy"]), "mean_p_tumor": r.get("mean_p_tumor")}
                              for s, r in sorted(baseline.items())},
                 "score_is": "drop_vs_random = acc(random) - acc(method) at the same fraction and seed; score = "
                             "+drop_vs_random (roar) or -drop_vs_random (kar), mean over seeds and over the "
                             "fractions strictly between 0 and 1: higher is better on both curves",
                 "curves": {}, "leakage": leak, "notes": []}
    for curve in CURVES:
        per = _curve_scores(rows, curve, methods, baseline, random_method)
        if not per:
            continue
        ranked = [m for m in methods if m in per]
        entry: dict = {"methods": per,
                       "ranking": _ranking({m: per[m]["score"] for m in ranked}),
                       "ranking_p_tumor": _ranking({m: per[m]["score_p_tumor"] for m in ranked}),
                       "confounded": [m for m in confounded if m in ranked]}
        if known_ranking:
            entry["known_answer"] = compare_rankings({m: per[m]["score"] for m in entry["ranking"]},
                                                     entry["ranking"], known_ranking, tie_tol=tie_tol)
            entry["known_answer_p_tumor"] = compare_rankings(
                {m: per[m]["score_p_tumor"] for m in entry["ranking_p_tumor"]}, entry["ranking_p_tumor"],
                known_ranking, tie_tol=tie_tol)
        out["curves"][curve] = entry
        ka = entry.get("known_answer") or {}
        if ka.get("disagreements"):
            pairs = ", ".join(f"{d['better']} > {d['worse']}" + (" (tied)" if d["tied"] else "") for d in ka["disagreements"])
            out["notes"].append(f"{curve.upper()} orders {len(ka['disagreements'])} of {ka['n_pairs']} method pairs "
                                f"otherwise than the known answer ({pairs} by the known answer): {curve.upper()} measures "
                                "what a retrained model can still learn, not what the trained model used")
        for m in entry["confounded"]:
            e = leak["methods"][m]
            out["notes"].append(f"{curve.upper()}'s verdict for {m} is confounded: a classifier trained on its masks "
                                f"alone (no pixels) reaches test accuracy {e['test_accuracy']:.3f} against chance "
                                f"{chance:.3f}, so the removal itself tells the label")
    if leak["methods"].get(random_method, {}).get("verdict") == "confounded":
        out["notes"].append(f"the {random_method} map's masks alone predict the label: the leakage control itself "
                            "is suspect (the masks do not depend on the patch)")
    return out


__all__ = ["CURVES", "LEAKAGE_MARGIN", "RANDOM", "apply_removal", "compare_rankings", "leakage_verdict",
           "mask_only_images", "random_maps", "scores", "top_fraction_mask", "wilson_interval"]
