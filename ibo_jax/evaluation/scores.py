"""Dense score arrays of one run and everything computed from them: AUCs, rankings against the
ground truth, bootstrap intervals, paired tests, realism, the tidy table.

    study = ScoreTable.from_geometry(geo, image_id=..., label=..., methods=..., controls=..., p0=..., logit0=...)
    study.add("ibo", curve_registry.PRIMARY, rows)          # one (strategy, curve)'s flat rows
    summary = study.summarize(n_boot=1000)  # the statistics of score/summary.json (scoring.score_summary)
    study.write_csv(path)                   # score/scores.csv

No I/O but `write_csv`; curves come from `evaluation.curves.CURVES`.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ibo_jax import io as ibo_io
from ibo_jax import stats
from ibo_jax.evaluation import curves as curve_registry
from ibo_jax.evaluation import deletion, geometry, ranking, realism
from ibo_jax.stats import nanmean  # also public here (evaluation.study.nanmean)


@dataclasses.dataclass
class ScoreTable:
    """Dense score arrays of one run and everything computed from them (no I/O but write_csv).

    N images, M methods (controls included, flagged), D draws, n points of a curve after the
    original. `add` takes one (strategy, curve)'s flat rows: pos [R] (eval-set position), method [R]
    (name or index), mask [R] (1..n), draw [R], p [R], logit [R], optional ssim/psnr/lpips [R] and
    feat [R, C].
    """

    image_id: np.ndarray  # [N]
    label: np.ndarray  # [N]
    methods: list[str]
    controls: list[str]
    areas: Mapping[str, np.ndarray]  # curve -> [N, M, n] |mask| / HW (the primary curve always)
    valid: np.ndarray  # [N, M] heatmap usable and M_n non-empty
    gt_iou: np.ndarray  # [N, M] IoU(M_n, tumor mask), NaN if excluded
    p0: np.ndarray  # [N] p(tumor) of the originals
    logit0: np.ndarray  # [N]
    fractions: dict = dataclasses.field(default_factory=dict)  # curve -> q grid (fixed-fraction)
    dense: dict = dataclasses.field(default_factory=dict)  # (strategy, curve) -> arrays

    REALISM = ("lpips", "lpips_vgg", "ssim", "psnr")

    @classmethod
    def from_geometry(cls, geo: dict, *, image_id, label, methods: Sequence[str], controls: Sequence[str],
                      p0, logit0, fractions: Mapping | None = None) -> ScoreTable:
        """A study over the (image, method) pairs and mask areas of `evaluation.geometry`."""
        return cls(image_id=np.asarray(image_id), label=np.asarray(label), methods=list(methods),
                   controls=list(controls), areas=geometry.all_areas(geo), valid=geo["valid"],
                   gt_iou=geo["gt_iou"], p0=np.asarray(p0), logit0=np.asarray(logit0),
                   fractions=dict(fractions or {}))

    def add(self, strategy: str, curve: str, rows: dict) -> None:
        n_img, n_m = self.valid.shape
        pos = np.asarray(rows["pos"], np.int64)
        meth = np.asarray(rows["method"])
        if meth.dtype.kind in "US":
            unknown = sorted(set(meth.tolist()) - set(self.methods))
            if unknown:
                raise ValueError(f"occluded images of {strategy}/{curve}: unknown methods {unknown}")
            meth = np.array([self.methods.index(x) for x in meth.tolist()], np.int64)
        mask, draw = np.asarray(rows["mask"], np.int64), np.asarray(rows["draw"], np.int64)
        if pos.size and (pos.min() < 0 or pos.max() >= n_img or mask.min() < 1 or meth.min() < 0
                         or meth.max() >= n_m or draw.min() < 0):
            raise ValueError(f"occluded images of {strategy}/{curve}: image positions, method indices, mask "
                             f"numbers or draws out of range (N={n_img}, M={n_m}, masks start at 1)")
        n_pts = int(mask.max()) if mask.size else 0
        n_draw = int(draw.max()) + 1 if draw.size else 1
        shape = (n_img, n_m, n_draw, n_pts + 1)
        d = {"p": np.full(shape, np.nan), "logit": np.full(shape, np.nan)}
        d["p"][..., 0], d["logit"][..., 0] = self.p0[:, None, None], self.logit0[:, None, None]
        p = deletion.check_probs(rows["p"], name=f"p_tumor of {strategy}/{curve}")
        d["p"][pos, meth, draw, mask] = p
        d["logit"][pos, meth, draw, mask] = rows["logit"]
        for k in self.REALISM:
            if k in rows:
                d[k] = np.full(shape[:-1] + (n_pts,), np.nan)
                d[k][pos, meth, draw, mask - 1] = rows[k]
        if "feat" in rows:
            d["feat"], d["feat_mask"], d["feat_method"] = rows["feat"], mask, meth
        self.dense[(strategy, curve)] = d

    def save(self, path: str | Path, extra: Mapping[str, np.ndarray] | None = None) -> None:
        """Everything needed to rebuild the study (`ScoreTable.load`), plus `extra` arrays (the score
        stage's twins and residual fills): score/scores.npz, what the trust checks read."""
        arrays = {"image_id": self.image_id, "label": self.label, "methods": np.asarray(self.methods),
                  "controls": np.asarray(self.controls, dtype=str), "valid": self.valid, "gt_iou": self.gt_iou,
                  "p0": self.p0, "logit0": self.logit0}
        arrays.update({f"areas__{c}": v for c, v in self.areas.items()})
        arrays.update({f"fractions__{c}": np.asarray(q, np.float64) for c, q in self.fractions.items()})
        for (strategy, curve), d in self.dense.items():
            arrays.update({f"dense__{strategy}__{curve}__{k}": np.asarray(v) for k, v in d.items()})
        arrays.update({f"extra__{k}": np.asarray(v) for k, v in (extra or {}).items()})
        ibo_io.write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> tuple[ScoreTable, dict[str, np.ndarray]]:
        """(study, extra arrays) from `save`."""
        z = ibo_io.read_npz(path)
        for k in ("image_id", "methods", "valid", "gt_iou", "p0", "logit0"):
            if k not in z:
                raise ValueError(f"{path}: missing array {k!r} (not a saved ScoreTable; rerun the score stage)")
        study = cls(image_id=z["image_id"], label=z["label"], methods=[str(m) for m in z["methods"]],
                    controls=[str(m) for m in z["controls"]], valid=z["valid"].astype(bool), gt_iou=z["gt_iou"],
                    p0=z["p0"], logit0=z["logit0"],
                    areas={k[len("areas__"):]: v for k, v in z.items() if k.startswith("areas__")},
                    fractions={k[len("fractions__"):]: v.tolist() for k, v in z.items() if k.startswith("fractions__")})
        for k, v in z.items():
            if k.startswith("dense__"):
                _, strategy, curve, name = k.split("__", 3)
                study.dense.setdefault((strategy, curve), {})[name] = v
        return study, {k[len("extra__"):]: v for k, v in z.items() if k.startswith("extra__")}

    def x(self, curve: str, n_pts: int) -> np.ndarray:
        """x positions [N, M or 1, 1, n+1] of a curve with n_pts points after the original."""
        return curve_registry.get(curve).x(self.areas, self.fractions.get(curve), n_pts)

    def aucs(self, strategy: str, curve: str) -> dict[str, np.ndarray]:
        """Per image and method, averaged over draws: AUC on p and on the logit, [N, M] each."""
        d = self.dense[(strategy, curve)]
        x = self.x(curve, d["p"].shape[-1] - 1)
        first = curve_registry.get(curve).first  # the insertion curve starts fully occluded
        out = {}
        for k in ("p", "logit"):
            per_draw = deletion.curve_auc(d[k][..., first:], x[..., first:])  # [N, M, D], NaN where a point is missing
            out[k] = np.where(self.valid, nanmean(per_draw, 2), np.nan)
        return out

    def mean_curves(self, strategy: str, curve: str) -> dict[str, dict[str, list]]:
        """Mean deletion curve per method (valid patches and draws): {method: {x, y}}."""
        d = self.dense[(strategy, curve)]
        npt = d["p"].shape[-1]
        x = np.broadcast_to(self.x(curve, npt - 1), d["p"].shape)
        first = curve_registry.get(curve).first
        out = {}
        for j, m in enumerate(self.methods):
            y = np.where(self.valid[:, j, None, None], d["p"][:, j], np.nan)[..., first:].reshape(-1, npt - first)
            mx, my = deletion.mean_curve(y, x[:, j, :, first:].reshape(-1, npt - first))
            out[m] = {"x": mx.tolist(), "y": my.tolist()}
        return out

    @property
    def n_rows(self) -> int:
        return int(sum(np.prod(d["p"].shape) for d in self.dense.values()))

    def summarize(self, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict:
        """GT IoU and ranking, per (strategy, curve) AUCs with bootstrap CIs, rankings, agreement,
        rank frequencies, mean curves, areas, realism; paired MARD tests between MoRF strategies.
        score/summary.json is this plus the run's facts (`scoring.score_summary`)."""
        ranked = [m for m in self.methods if m not in self.controls]
        ri = [self.methods.index(m) for m in ranked]
        ci = lambda v: _ci_dict(stats.bootstrap_mean_ci(v, n_boot=n_boot, seed=seed, alpha=alpha), self.methods)
        gt_ci = ci(self.gt_iou)
        gt_rank = ranking.rank({m: gt_ci[m]["mean"] for m in ranked if gt_ci[m]["mean"] is not None}, ascending=False)
        out = {"gt": {"iou": gt_ci, "ranking": gt_rank}, "methods": ranked, "controls": self.controls,
               "strategies": {}, "exclusions": {}, "paired_mard_tests": {}}
        aucs = {}
        for (strategy, curve), d in sorted(self.dense.items()):
            a = self.aucs(strategy, curve)
            aucs[(strategy, curve)] = a["p"]
            lower = curve_registry.get(curve).lower_is_better
            s = {"auc": ci(a["p"]), "auc_logit": ci(a["logit"]), "lower_is_better": lower}
            for key in ("", "_logit"):
                ok = [m for m in ranked if s["auc" + key][m]["mean"] is not None and gt_ci[m]["mean"] is not None]
                s["unranked" + key] = [m for m in ranked if m not in ok]  # no valid patch at all
                if not ok:
                    continue
                rank = ranking.rank({m: s["auc" + key][m]["mean"] for m in ok}, ascending=lower)
                gt_ok = gt_rank if len(ok) == len(ranked) else ranking.rank({m: gt_ci[m]["mean"] for m in ok}, ascending=False)
                s["ranking" + key] = rank
                s["agreement" + key] = ranking.agreement(rank, gt_ok)
            boot = ranking.bootstrap_rankings(a["p"][:, ri], self.gt_iou[:, ri], ranked, n_boot=n_boot, seed=seed, ascending=lower)
            s["rank_freq"] = {m: boot["rank_freq"][i].tolist() for i, m in enumerate(ranked)}
            out["gt"]["rank_freq"] = {m: boot["gt_rank_freq"][i].tolist() for i, m in enumerate(ranked)}
            s["mard_boot"] = {"mean": float(boot["mard"].mean()), "lo": float(np.quantile(boot["mard"], alpha / 2)),
                              "hi": float(np.quantile(boot["mard"], 1 - alpha / 2))}
            s["mean_curve"] = self.mean_curves(strategy, curve)
            if curve == curve_registry.PRIMARY:
                s["area"] = {m: nanmean(np.where(self.valid[:, j, None], self.areas[curve_registry.PRIMARY][:, j], np.nan), 0).tolist()
                             for j, m in enumerate(self.methods)}
            s["realism"] = {k: [_ci_one(stats.bootstrap_mean_ci(nanmean(d[k][:, ri, :, i], (1, 2)), n_boot=n_boot, seed=seed, alpha=alpha))
                                for i in range(d[k].shape[-1])] for k in self.REALISM if k in d}
            # images a curve left out on purpose (occlude.curve_images) and maps it left out on purpose
            # (occlude.control_curves: e.g. derived controls on the fixed-fraction curve only) have no
            # point at all; a valid pair without its points in an image and a map the curve did score
            # is missing
            pts = np.isfinite(d["p"][..., 1:])
            scored = pts.any(axis=(1, 2, 3))  # [N]
            # a control with no point on this curve, or in this image (occlude.control_images), was left
            # out on purpose; a ranked method never is
            ran = pts.any(axis=(2, 3)) | ~np.isin(self.methods, self.controls)[None, :]  # [N, M]
            s["missing"] = int(np.sum(self.valid & scored[:, None] & ran & ~np.isfinite(a["p"])))
            out["strategies"].setdefault(strategy, {})[curve] = s
        for (sa, ca), (sb, cb) in itertools.permutations(aucs, 2):
            if ca == cb == curve_registry.PRIMARY:
                out["paired_mard_tests"][f"{sa}<{sb}"] = stats.paired_mard_test(
                    aucs[(sa, ca)][:, ri], aucs[(sb, cb)][:, ri], self.gt_iou[:, ri], ranked, n_boot=n_boot, seed=seed, alpha=alpha)
        out["exclusions"]["missing_or_nonfinite"] = int(sum(
            s["missing"] for st in out["strategies"].values() for s in st.values()))
        return out

    def kid(self, feat0: np.ndarray, *, subset_size: int | None = None, seed: int = 0) -> dict:
        """KID between the originals' pooled features and each strategy's occluded ones, per mask."""
        out = {}
        ranked = np.array([m not in self.controls for m in self.methods])
        for (strategy, curve), d in sorted(self.dense.items()):
            if "feat" not in d or curve != curve_registry.PRIMARY:
                continue
            vals = []
            for i in range(1, d["p"].shape[-1]):
                sel = (d["feat_mask"] == i) & ranked[d["feat_method"]]
                f = np.asarray(d["feat"][sel], np.float64)
                vals.append(realism.kid(feat0, f, subset_size=subset_size, seed=seed)["kid"] if len(f) >= 2 and len(feat0) >= 2 else None)
            out[strategy] = vals
        return out

    def write_csv(self, path: Path) -> None:
        cols = ["image_id", "method", "control", "strategy", "curve", "mask", "draw", "fraction", "area",
                "p_tumor", "logit", "label", *self.REALISM]
        with ibo_io.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for (strategy, curve), d in sorted(self.dense.items()):
                n, m, nd, npt = d["p"].shape
                x = np.broadcast_to(self.x(curve, npt - 1), d["p"].shape)
                area = (np.broadcast_to(self.x(curve, npt - 1)[:, :, 0], (n, m, npt))
                        if curve_registry.get(curve).area_is_x or curve not in self.areas
                        else np.concatenate([np.zeros((n, m, 1)), self.areas[curve][..., : npt - 1]], -1))
                for i, j, k, t in itertools.product(range(n), range(m), range(nd), range(npt)):
                    if not np.isfinite(d["p"][i, j, k, t]) or (t == 0 and k > 0):
                        continue
                    real = [_fmt(d[r][i, j, k, t - 1]) if (r in d and t > 0) else "" for r in self.REALISM]
                    w.writerow([int(self.image_id[i]), self.methods[j], int(self.methods[j] in self.controls), strategy, curve,
                                t, k, _fmt(x[i, j, k, t]), _fmt(area[i, j, t]), _fmt(d["p"][i, j, k, t]),
                                _fmt(d["logit"][i, j, k, t]), int(self.label[i]), *real])


def _fmt(v: float) -> str:
    return "" if not np.isfinite(v) else f"{float(v):.6g}"


def _ci_one(c: dict) -> dict:
    return {k: (None if not np.isfinite(float(v)) else float(v)) for k, v in c.items()}


def _ci_dict(c: dict, names: list[str]) -> dict:
    return {m: _ci_one({k: c[k][j] for k in c}) for j, m in enumerate(names)}


