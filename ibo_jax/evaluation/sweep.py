"""The sampler sweep's pieces: settings, the fixed inputs every setting sees, quality per setting,
non-inferiority against a reference setting, the cost-quality front.

A setting is (sampler, t_T, jump_length, jump_n_sample[, eta]); a 3-tuple is RePaint's. For every
setting the same images, masks and keys (common random numbers) are inpainted:
- box masks (a random square per image): realism against the originals (SSIM, PSNR, LPIPS) and,
  on synthetic data, against the counterfactual box (the twin's pixels in the box): KID in the
  classifier's features and the hematoxylin share inside the box;
- the whole annotated region of each tumor image (residual evidence): p(tumor) left against the
  twin's, the hematoxylin share inside the region against the twins';
- every ranked method's MoRF masks on evaluation patches: MARD of the CAM ranking against the IoU
  ranking and, with twins, against the counterfactual ranking.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from ibo_jax import rng
from ibo_jax.evaluation import realism
from ibo_jax.evaluation.ranking import bootstrap_indices
from ibo_jax.repaint.sampler import SAMPLERS, network_calls
from ibo_jax.repaint.schedule import schedule_cost


@dataclasses.dataclass(frozen=True)
class Setting:
    sampler: str
    t_T: int
    jump_length: int = 1
    jump_n_sample: int = 1
    eta: float | None = None

    @property
    def name(self) -> str:
        eta = "" if self.eta is None else f",eta={self.eta:g}"
        return f"{self.sampler}({self.t_T},{self.jump_length},{self.jump_n_sample}{eta})"

    @property
    def file_stem(self) -> str:
        eta = "" if self.eta is None else f"_eta{self.eta:g}"
        return f"{self.sampler}_{self.t_T}_{self.jump_length}_{self.jump_n_sample}{eta}"

    @property
    def network_calls(self) -> int:
        return network_calls(self.sampler, self.t_T, self.jump_length, self.jump_n_sample)

    @property
    def undo_steps(self) -> int:
        return schedule_cost(self.t_T, self.jump_length, self.jump_n_sample).undo_steps

    def ibo_kwargs(self) -> dict:
        return {"sampler": self.sampler, "t_T": self.t_T, "jump_length": self.jump_length,
                "jump_n_sample": self.jump_n_sample, "eta": self.eta}


def parse_grid(grid: Sequence[Sequence], field: str = "repaint_sweep.grid") -> list[Setting]:
    """(t_T, j, r) -> RePaint; (sampler, t_T, j, r) or (sampler, t_T, j, r, eta) for any sampler."""
    out = []
    for i, g in enumerate(grid):
        g = tuple(g)
        try:
            if len(g) == 3 and not isinstance(g[0], str):
                s = Setting("repaint", int(g[0]), int(g[1]), int(g[2]))
            elif len(g) in (4, 5) and isinstance(g[0], str):
                s = Setting(str(g[0]), int(g[1]), int(g[2]), int(g[3]), None if len(g) == 4 else float(g[4]))
            else:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"{field}[{i}] = {g!r}: expected (t_T, jump_length, jump_n_sample) or "
                             f"(sampler, t_T, jump_length, jump_n_sample[, eta]) with sampler in {tuple(SAMPLERS)}") from None
        if s.sampler not in SAMPLERS:
            raise ValueError(f"{field}[{i}] = {g!r}: sampler {s.sampler!r} unknown; expected one of {tuple(SAMPLERS)}")
        out.append(s)
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{field}: repeated settings {sorted({n for n in names if names.count(n) > 1})}")
    return out


def box_masks(indices: np.ndarray, size: int, fraction: float, seed: int) -> np.ndarray:
    """One random square per image covering ~fraction of it: bool [N, size, size], from the index."""
    side = max(1, int(round(np.sqrt(fraction) * size)))
    masks = np.zeros((len(indices), size, size), bool)
    for i, idx in enumerate(indices):
        r = np.random.default_rng([seed, rng.stable_int(int(idx))])
        y, x = r.integers(0, size - side + 1, size=2)
        masks[i, y:y + side, x:x + side] = True
    return masks


def _boot_mean(v: np.ndarray, idx: np.ndarray, alpha: float = 0.05) -> dict:
    v = np.asarray(v, np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan")}
    with np.errstate(invalid="ignore"):
        boots = np.nanmean(np.where(ok[idx], v[idx], np.nan), axis=1)
    return {"mean": float(np.nanmean(v)), "lo": float(np.nanquantile(boots, alpha / 2)),
            "hi": float(np.nanquantile(boots, 1 - alpha / 2))}


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
    idx = bootstrap_indices(len(fills), n_boot, seed)
    p, _, feat = predict_fn(fills)
    out = {"p_tumor": _boot_mean(p, idx)}
    if reference is not None:
        ref_feat = reference_feat if reference_feat is not None else predict_fn(reference)[2]
        out["kid_twin"] = _boot_kid(np.asarray(feat, np.float64), np.asarray(ref_feat, np.float64), idx)
        q = realism.masked_pair_metrics(reference.astype(np.float32) / 255.0, fills.astype(np.float32) / 255.0, masks)
        out["ssim_twin"], out["psnr_twin"] = _boot_mean(q["ssim"], idx), _boot_mean(q["psnr"], idx)
    h = hshare_fn(fills, masks) if hshare_fn is not None else None
    if h is not None:
        out["hshare"] = _boot_mean(h, idx)
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
