"""How in-distribution is each fill, measured rather than assumed.

The study's premise is that a fill closer to the data gives a truer verdict. Both halves are
measured here, without building the answer in:

    fit = fit_gaussians(feat_train, label_train)        # class means + tied covariance (Ledoit-Wolf)
    d = mahalanobis(feat, fit)                         # [N] distance to the nearest class Gaussian
    pct = percentile(d, reference_d)                   # [N] share of real test patches' distances <= d, 0..100
    ood = ood_scores(table, fit, reference_d)          # per strategy: mean percentile of its filled images
    r = r_oms(table)                                   # per strategy: R-OMS against the counterfactual fill
    public = per_strategy(ood, r)                      # {strategy: {ood_percentile, r_oms}} (trust/summary.json)

`ood_scores` needs no reference fill: it asks how typical the classifier's penultimate (pooled
target-layer) features of a filled image are among real test patches (Lee et al. 2018's
class-conditional Gaussians with a tied covariance). A fill as typical as real data has a mean
percentile of 50 and 5% of its images above the 95th percentile. `r_oms` (Blücher et al. 2024)
asks instead how close the classifier's output on the filled image is to its output on a reference
removal of the same pixels: on synthetic data the tumor-free twin's pixels, i.e. the
`counterfactual` strategy's fill of the same mask.

Pure numpy, no config; everything returned is plain JSON (floats, lists, None for no value).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ibo_jax.evaluation import deletion
from ibo_jax.evaluation.curves import CURVES, PRIMARY
from ibo_jax.stats import bootstrap_indices, mean_ci, nanmean

REFERENCE = "counterfactual"
SIMILARITY = "1 - |p - p_ref|"


@dataclasses.dataclass
class GaussianFit:
    """Class-conditional Gaussians with one shared (tied) covariance, float64.

    classes [K], means [K, C], cov [C, C] (shrunk), precision [C, C] (its inverse), shrinkage: the
    weight a of the scaled identity in cov = (1 - a) S + a (tr S / C) I, S the pooled within-class
    covariance; method: 'ledoit_wolf' (a estimated) or 'fixed' (a given)."""

    classes: np.ndarray
    means: np.ndarray
    cov: np.ndarray
    precision: np.ndarray
    shrinkage: float
    method: str
    n_per_class: dict

    @property
    def n_features(self) -> int:
        return int(self.means.shape[1])

    def summary(self) -> dict:
        return {"shrinkage": float(self.shrinkage), "shrinkage_method": self.method,
                "covariance": "tied (pooled within-class), (1 - a) S + a (tr S / C) I",
                "C": self.n_features, "classes": [int(c) for c in self.classes],
                "n_per_class": {str(k): int(v) for k, v in self.n_per_class.items()}}


def _ledoit_wolf_weight(x: np.ndarray, s: np.ndarray) -> float:
    """Ledoit & Wolf (2004)'s weight of the scaled identity for centred rows x [n, C] with
    s = x^T x / n: a = min(b, d) / d, d = ||S - m I||_F^2, b = (1/n^2) sum_k ||x_k x_k^T - S||_F^2."""
    n, c = x.shape
    m = np.trace(s) / c
    d = float(np.sum((s - m * np.eye(c)) ** 2))
    if d <= 0.0:
        return 0.0  # S is already a multiple of the identity
    sq = np.sum(x * x, axis=1)
    b = float((np.sum(sq**2) - n * np.sum(s * s)) / n**2)
    return float(min(max(b, 0.0), d) / d)


def fit_gaussians(feat: np.ndarray, labels: np.ndarray, *, shrinkage: float | str = "ledoit_wolf") -> GaussianFit:
    """Class means and a shared covariance of features feat [N, C] with class labels [N].

    The covariance is the pooled within-class one, S = sum_k (x_k - mu_y(k))(...)^T / N, shrunk
    towards the scaled identity (tr S / C) I: cov = (1 - a) S + a (tr S / C) I. `shrinkage`:
    'ledoit_wolf' estimates a from the data (Ledoit & Wolf 2004; a -> 0 as N / C grows), a float
    in [0, 1] fixes it (a ridge relative to the trace). The precision is cov's inverse (float64)."""
    x = np.asarray(feat, np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"feat [N, C] and labels [N] expected, got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("feat: non-finite features")
    classes, inv = np.unique(y, return_inverse=True)
    if len(x) < len(classes) + 1:
        raise ValueError(f"fit_gaussians: {len(x)} rows for {len(classes)} classes; need at least one more")
    means = np.stack([x[inv == k].mean(0) for k in range(len(classes))])
    r = x - means[inv]
    n, c = r.shape
    s = r.T @ r / n
    mu = float(np.trace(s) / c)
    if mu <= 0.0:
        raise ValueError("fit_gaussians: features do not vary within classes")
    if isinstance(shrinkage, str):
        if shrinkage != "ledoit_wolf":
            raise ValueError(f"shrinkage: 'ledoit_wolf' or a float in [0, 1], got {shrinkage!r}")
        a, method = _ledoit_wolf_weight(r, s), "ledoit_wolf"
    else:
        a, method = float(shrinkage), "fixed"
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"shrinkage: a float in [0, 1], got {a}")
    cov = (1.0 - a) * s + a * mu * np.eye(c)
    try:
        precision = np.linalg.inv(cov)
    except np.linalg.LinAlgError as e:
        raise ValueError(f"fit_gaussians: singular covariance with shrinkage {a} ({n} rows, C = {c}); "
                         "use shrinkage > 0 or 'ledoit_wolf'") from e
    precision = (precision + precision.T) / 2
    return GaussianFit(classes=classes, means=means, cov=cov, precision=precision, shrinkage=a, method=method,
                       n_per_class={c_: int(np.sum(inv == k)) for k, c_ in enumerate(classes.tolist())})


def mahalanobis(feat: np.ndarray, fit: GaussianFit) -> np.ndarray:
    """[N] Mahalanobis distance of each row of feat [N, C] to the nearest class mean under the
    tied covariance: min_k sqrt((x - mu_k)^T P (x - mu_k)). Non-finite rows give NaN."""
    x = np.asarray(feat, np.float64)
    if x.ndim != 2 or x.shape[1] != fit.n_features:
        raise ValueError(f"feat: expected [N, {fit.n_features}], got {x.shape}")
    ok = np.all(np.isfinite(x), axis=1)
    d2 = np.full((len(x), len(fit.means)), np.inf)
    rows = np.flatnonzero(ok)
    for start in range(0, len(rows), 4096):  # blocks: [B, C] float64 at a time (C = 2048 for a ResNet-50)
        r = rows[start:start + 4096]
        for k, mu in enumerate(fit.means):
            diff = x[r] - mu
            d2[r, k] = np.sum((diff @ fit.precision) * diff, axis=1)
    out = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    out[~ok] = np.nan
    return out


def percentile(d: np.ndarray, reference_d: np.ndarray) -> np.ndarray:
    """100 x the share of reference distances <= d, per entry of d (NaN stays NaN). Against the
    distances of real test patches: uniform on [0, 100] for patches like them, near 100 far off."""
    ref = np.sort(np.asarray(reference_d, np.float64)[np.isfinite(reference_d)])
    if not ref.size:
        raise ValueError("percentile: no finite reference distance")
    d = np.asarray(d, np.float64)
    out = 100.0 * np.searchsorted(ref, np.where(np.isfinite(d), d, 0.0), side="right") / ref.size
    return np.where(np.isfinite(d), out, np.nan)


def _mean_interval(v: np.ndarray, n_boot: int, seed: int, alpha: float) -> dict:
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    return mean_ci(v, bootstrap_indices(len(v), n_boot, seed), alpha)


def ood_scores(table, fit: GaussianFit, reference_d: np.ndarray, *, curve: str = PRIMARY, feat0: np.ndarray | None = None,
               n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Per strategy with pooled features on `curve` (the study's: the score stage keeps them there
    only): the Mahalanobis percentile (`percentile`, against `reference_d`, the real test patches'
    distances) of its filled images of ranked methods (controls left out), all masks together
    (`mean` with a bootstrap interval over the filled images: feature rows carry no patch index),
    the share above the 95th percentile, and the mean per mask number 1..n. `feat0`: the
    evaluation originals' features, reported as `original` (the same patches unfilled)."""
    ranked = np.array([m not in table.controls for m in table.methods], bool)
    out = {"reference": "percentile of real test patches' distances (in distribution: mean 50, 5% above 95)",
           "curve": curve, "interval": "bootstrap over the filled images (feature rows carry no patch index)",
           "strategies": {}}
    if feat0 is not None and np.ndim(feat0) == 2 and np.shape(feat0)[1] == fit.n_features:
        p0 = percentile(mahalanobis(feat0, fit), reference_d)
        out["original"] = {**_mean_interval(p0, n_boot, seed, alpha), "share_above_95": _share_above(p0, 95.0)}
    for (strategy, c), d in sorted(table.dense.items()):
        if c != curve:
            continue
        f = d.get("feat")
        if f is None or np.ndim(f) != 2 or np.shape(f)[1] != fit.n_features:
            out["strategies"][strategy] = {"unavailable": "no classifier features of its filled images "
                                           f"(shape {None if f is None else list(np.shape(f))}, the fit has C = {fit.n_features})"}
            continue
        sel = ranked[np.asarray(d["feat_method"], np.int64)]
        masks = np.asarray(d["feat_mask"], np.int64)[sel]
        pct = percentile(mahalanobis(np.asarray(f, np.float64)[sel], fit), reference_d)
        n_pts = d["p"].shape[-1] - 1
        per_mask = [float(np.nanmean(pct[masks == i])) if np.isfinite(pct[masks == i]).any() else None
                    for i in range(1, n_pts + 1)]
        out["strategies"][strategy] = {**_mean_interval(pct, n_boot, seed, alpha),
                                       "share_above_95": _share_above(pct, 95.0), "per_mask": per_mask}
    return out


def _share_above(pct: np.ndarray, q: float) -> float | None:
    ok = np.isfinite(pct)
    return float(np.mean(pct[ok] > q)) if ok.any() else None


def _none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def r_oms(table, *, reference: str = REFERENCE, curve: str = PRIMARY, n_boot: int = 1000, seed: int = 0,
          alpha: float = 0.05) -> dict:
    """R-OMS (Blücher et al. 2024) of each strategy on `curve` against the `reference` strategy's
    removal of the same pixels (the counterfactual twin's pixels: the known answer).

    What is reported is the similarity s = 1 - |p - p_ref| (p: p(tumor); 1 = the same output as
    under the reference fill, 0 = opposite certainties), i.e. 1 minus the total-variation (half L1)
    distance of the two class-probability vectors q = [1 - p, p]. Not their cosine: with two
    classes the cosine is not a function of |p - p_ref| alone (p = 0, p_ref = 0.1 gives 0.994;
    p = 0.5, p_ref = 0.6 gives 0.981), so it would weigh the same change of p differently along
    the curve.

    Per (image, method) and draw: s at every point of the curve (point 0, the original, is 1), its
    area over the removed fraction x = table.x(curve, n) (trapezoid as `deletion.curve_auc`, from
    the curve's first point) divided by the x range, so in [0, 1]; the mean over the draws (the
    reference's draws are averaged first), then over the ranked methods of a patch (valid pairs
    only), then over patches with a bootstrap interval (`auc`). The reference itself scores 1 (a
    check; `is_reference`). Unavailable, with the reason, without a reference strategy on `curve`.
    Also per method and the mean s per point."""
    key = (reference, curve)
    if key not in table.dense:
        return {"unavailable": f"no {reference!r} strategy on the {curve!r} curve (the reference removal: "
                "the twins' pixels, synthetic data only)"}
    first = CURVES[curve].first
    names = [m for m in table.methods if m not in table.controls]
    ri = [table.methods.index(m) for m in names]
    p_ref = nanmean(np.asarray(table.dense[key]["p"], np.float64), 2)  # [N, M, n+1]
    n_pts = p_ref.shape[-1] - 1
    x = np.asarray(table.x(curve, n_pts), np.float64)[:, :, 0]  # [N, M or 1, n+1]
    x = np.broadcast_to(x, p_ref.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        span = x[..., -1] - x[..., first]
        span = np.where(span > 0, span, np.nan)
    idx = bootstrap_indices(p_ref.shape[0], n_boot, seed)
    out = {"reference": reference, "curve": curve, "similarity": SIMILARITY,
           "note": "s = 1 - |p - p_ref| = 1 - L1(q, q_ref) / 2 for q = [1 - p, p] (not the cosine of q and q_ref, which "
                   "is not a function of |p - p_ref| alone); AUC of s over the removed fraction divided by the "
                   "fraction's range (1 = the reference's outputs throughout)",
           "strategies": {}}
    for (strategy, c), d in sorted(table.dense.items()):
        if c != curve:
            continue
        p = np.asarray(d["p"], np.float64)  # [N, M, D, n+1]
        if p.shape[:2] != p_ref.shape[:2] or p.shape[-1] != p_ref.shape[-1]:
            out["strategies"][strategy] = {"unavailable": f"curve shape {list(p.shape)} differs from the reference's "
                                           f"{list(table.dense[key]['p'].shape)}"}
            continue
        s = 1.0 - np.abs(p - p_ref[:, :, None])  # [N, M, D, n+1]
        auc = deletion.curve_auc(s[..., first:], x[:, :, None, first:]) / span[:, :, None]
        per_pair = np.where(table.valid, nanmean(auc, 2), np.nan)[:, ri]  # [N, Mr]
        per_patch = nanmean(per_pair, 1)  # [N]
        curve_s = np.where(table.valid[:, ri, None, None], s[:, ri], np.nan)
        out["strategies"][strategy] = {
            "auc": mean_ci(per_patch, idx, alpha),
            "per_method": {m: _none(nanmean(per_pair[:, j], 0)) for j, m in enumerate(names)},
            "mean_similarity_per_point": [_none(v) for v in nanmean(curve_s.reshape(-1, n_pts + 1), 0)],
            "is_reference": strategy == reference}
    return out


def per_strategy(ood: dict, roms: dict) -> dict:
    """The public per-strategy numbers: {strategy: {ood_percentile, r_oms}}, the mean Mahalanobis
    percentile of its filled images and its mean R-OMS AUC (None where unavailable)."""
    names = sorted(set(ood.get("strategies", {})) | set(roms.get("strategies", {})))
    return {s: {"ood_percentile": ood.get("strategies", {}).get(s, {}).get("mean"),
                "r_oms": roms.get("strategies", {}).get(s, {}).get("auc", {}).get("mean")} for s in names}
