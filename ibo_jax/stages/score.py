"""Stage `score`: re-predict p(tumor) on every occluded image, measure realism, rank the methods.

Inputs: `explain/eval_set.npz` + `explain/heatmaps.npz` (masks, areas and GT IoU are recomputed
from the stored levels), the occluded uint8 images of stage `occlude` (its `load_occluded`
reader), and the classifier of `train_classifier`.

Outputs (score/):
  scores.csv      tidy, one row per image x method x strategy x curve x mask x draw; mask 0 is the
                  original image. Columns: image_id, method, control, strategy, curve, mask, draw,
                  fraction, area, p_tumor, logit, label, lpips, ssim, psnr.
  summary.json    per strategy and curve: mean AUC per method with bootstrap CIs (probability and
                  logit), the ranking, agreement with the GT ranking (MARD, exact-match share,
                  Spearman, Kendall), rank frequencies; realism per mask; GT IoU per method; paired
                  MARD tests between strategies; exclusions with reasons; misclassified count.
  chunks/         one .npz per occluded block (predictions, realism, pooled features): resume.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ibo_jax import io as ibo_io
from ibo_jax.evaluation import deletion, ranking, realism
from ibo_jax.evaluation import levels as lv


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.batch_size = 32
    c.tumor_class = 1
    c.lpips_alexnet_weights = ""  # torchvision AlexNet state dict; "" = LPIPS unavailable
    c.lpips_vgg = False  # also lpips-j's VGG LPIPS (needs the Hugging Face hub)
    c.n_boot = 1000
    c.alpha = 0.05
    c.kid_subset_size = 0  # 0 = one KID estimate on all samples
    # The DDPM's own samples against held-out normal patches, in the classifier's features
    # (0 = skip): KID, with train-vs-test normal patches as the noise floor and tumor-vs-normal as
    # the class gap, and the classifier's p(tumor) on the samples.
    c.ddpm_samples = 64
    c.ddpm_sample_steps = 50
    return c


def make_predict_fn(model: nnx.Module, *, tumor_class: int = 1, batch_size: int = 32):
    """fn(uint8 or float images [N, H, W, 3]) -> (p_tumor [N], logit [N], feat [N, C]) numpy.

    One pass: features(x) at the CAM target layer, then head(); `feat` is that activation
    global-average pooled (for KID). logit = log p_t - log(1 - p_t), the tumor log-odds (for two
    classes the logit difference).
    """
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x):  # [B, H, W, 3] -> [B, K], [B, C]
        net = nnx.merge(graphdef, state)
        a = net.features(x)  # [B, h, w, C]
        logits = net.head(a).astype(jnp.float32)
        return jax.nn.log_softmax(logits, axis=-1), jnp.mean(a.astype(jnp.float32), axis=(1, 2))

    def fn(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = to_float(images)
        lps, feats = [], []
        for s in range(0, len(x), batch_size):
            xb = x[s : s + batch_size]
            n = len(xb)
            if n < batch_size and len(x) > batch_size:  # pad the tail: one compiled shape
                xb = np.pad(xb, ((0, batch_size - n), (0, 0), (0, 0), (0, 0)))
            lp, f = forward(state, xb)
            lps.append(np.asarray(lp, np.float64)[:n])
            feats.append(np.asarray(f, np.float32)[:n])
        lp = np.concatenate(lps)
        lt = lp[:, tumor_class]
        rest = np.log(np.clip(-np.expm1(lt), 1e-300, None))  # log(1 - p_t), stable
        return np.exp(lt), lt - rest, np.concatenate(feats)

    return fn


def to_float(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images: expected [N, H, W, 3], got shape {x.shape}")
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


@dataclasses.dataclass
class Study:
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
    areas: np.ndarray  # [N, M, n_masks] |M_i| / HW
    valid: np.ndarray  # [N, M] heatmap usable and M_n non-empty
    gt_iou: np.ndarray  # [N, M] IoU(M_n, tumor mask), NaN if excluded
    p0: np.ndarray  # [N] p(tumor) of the originals
    logit0: np.ndarray  # [N]
    fractions: dict = dataclasses.field(default_factory=dict)  # curve -> q grid (fixed-fraction)
    curve_areas: dict = dataclasses.field(default_factory=dict)  # curve -> [N, M, n] (e.g. lerf)
    dense: dict = dataclasses.field(default_factory=dict)  # (strategy, curve) -> arrays

    REALISM = ("lpips", "lpips_vgg", "ssim", "psnr")

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

    def x(self, curve: str, n_pts: int) -> np.ndarray:
        """x positions [N, M, 1, n+1]: p_i = |M_i|/|M_n| for MoRF, the q grid for fixed.

        Insertion: point 0 is the original (x = 1, kept for the tidy table but not part of the
        curve), point 1 has everything removed (x = 0), point i+1 has M_i back (x = |M_i|/|M_n|).
        """
        if curve == "insertion":
            fr, _ = deletion.mask_fractions(self.areas[..., : n_pts - 1])
            return np.concatenate([np.ones(fr.shape[:-1] + (1,)), fr], -1)[:, :, None, :]
        if curve == "morf" or curve in self.curve_areas:
            fr, _ = deletion.mask_fractions(self._areas(curve)[..., :n_pts])
            return fr[:, :, None, :]
        q = self.fractions.get(curve)
        q = np.linspace(0, 1, n_pts + 1)[1:] if q is None or len(q) != n_pts else np.asarray(q, np.float64)
        return np.concatenate([[0.0], q])[None, None, None, :]

    def _areas(self, curve: str) -> np.ndarray:
        return self.areas if curve == "morf" else np.asarray(self.curve_areas[curve], np.float64)

    def aucs(self, strategy: str, curve: str) -> dict[str, np.ndarray]:
        """Per image and method, averaged over draws: AUC on p and on the logit, [N, M] each."""
        d = self.dense[(strategy, curve)]
        x = self.x(curve, d["p"].shape[-1] - 1)
        first = 1 if curve == "insertion" else 0  # the insertion curve starts fully occluded
        out = {}
        for k in ("p", "logit"):
            per_draw = deletion.curve_auc(d[k][..., first:], x[..., first:])  # [N, M, D], NaN where a point is missing
            out[k] = np.where(self.valid, _nanmean(per_draw, 2), np.nan)
        return out

    def mean_curves(self, strategy: str, curve: str) -> dict[str, dict[str, list]]:
        """Mean deletion curve per method (valid patches and draws): {method: {x, y}}."""
        d = self.dense[(strategy, curve)]
        npt = d["p"].shape[-1]
        x = np.broadcast_to(self.x(curve, npt - 1), d["p"].shape)
        first = 1 if curve == "insertion" else 0
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
        ranked = [m for m in self.methods if m not in self.controls]
        ri = [self.methods.index(m) for m in ranked]
        ci = lambda v: _ci_dict(ranking.bootstrap_mean_ci(v, n_boot=n_boot, seed=seed, alpha=alpha), self.methods)
        gt_ci = ci(self.gt_iou)
        gt_rank = ranking.rank({m: gt_ci[m]["mean"] for m in ranked if gt_ci[m]["mean"] is not None}, ascending=False)
        out = {"gt": {"iou": gt_ci, "ranking": gt_rank}, "methods": ranked, "controls": self.controls,
               "strategies": {}, "exclusions": {}, "paired_mard_tests": {}}
        aucs = {}
        for (strategy, curve), d in sorted(self.dense.items()):
            a = self.aucs(strategy, curve)
            aucs[(strategy, curve)] = a["p"]
            lower = deletion.LOWER_IS_BETTER.get(curve, True)
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
            if curve == "morf":
                s["area"] = {m: _nanmean(np.where(self.valid[:, j, None], self.areas[:, j], np.nan), 0).tolist()
                             for j, m in enumerate(self.methods)}
            s["realism"] = {k: [_ci_one(ranking.bootstrap_mean_ci(_nanmean(d[k][:, ri, :, i], (1, 2)), n_boot=n_boot, seed=seed, alpha=alpha))
                                for i in range(d[k].shape[-1])] for k in self.REALISM if k in d}
            s["missing"] = int(np.sum(self.valid & ~np.isfinite(a["p"])))
            out["strategies"].setdefault(strategy, {})[curve] = s
        for (sa, ca), (sb, cb) in itertools.permutations(aucs, 2):
            if ca == cb == "morf":
                out["paired_mard_tests"][f"{sa}<{sb}"] = ranking.paired_mard_test(
                    aucs[(sa, ca)][:, ri], aucs[(sb, cb)][:, ri], self.gt_iou[:, ri], ranked, n_boot=n_boot, seed=seed, alpha=alpha)
        out["exclusions"]["missing_or_nonfinite"] = int(sum(
            s["missing"] for st in out["strategies"].values() for s in st.values()))
        return out

    def kid(self, feat0: np.ndarray, *, subset_size: int | None = None, seed: int = 0) -> dict:
        """KID between the originals' pooled features and each strategy's occluded ones, per mask."""
        out = {}
        ranked = np.array([m not in self.controls for m in self.methods])
        for (strategy, curve), d in sorted(self.dense.items()):
            if "feat" not in d or curve != "morf":
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
                area = (np.concatenate([np.zeros((n, m, 1)), self._areas(curve)[..., : npt - 1]], -1)
                        if curve == "morf" or curve in self.curve_areas
                        else np.broadcast_to(self.x(curve, npt - 1)[:, :, 0], (n, m, npt)))
                for i, j, k, t in itertools.product(range(n), range(m), range(nd), range(npt)):
                    if not np.isfinite(d["p"][i, j, k, t]) or (t == 0 and k > 0):
                        continue
                    real = [_fmt(d[r][i, j, k, t - 1]) if (r in d and t > 0) else "" for r in self.REALISM]
                    w.writerow([int(self.image_id[i]), self.methods[j], int(self.methods[j] in self.controls), strategy, curve,
                                t, k, _fmt(x[i, j, k, t]), _fmt(area[i, j, t]), _fmt(d["p"][i, j, k, t]),
                                _fmt(d["logit"][i, j, k, t]), int(self.label[i]), *real])


def _fmt(v: float) -> str:
    return "" if not np.isfinite(v) else f"{float(v):.6g}"


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _ci_one(c: dict) -> dict:
    return {k: (None if not np.isfinite(float(v)) else float(v)) for k, v in c.items()}


def _ci_dict(c: dict, names: list[str]) -> dict:
    return {m: _ci_one({k: c[k][j] for k in c}) for j, m in enumerate(names)}


def _read_inputs(explain_dir: Path) -> tuple[dict, dict]:
    ev = ibo_io.read_npz(explain_dir / "eval_set.npz")
    hm = ibo_io.read_npz(explain_dir / "heatmaps.npz")
    for key in ("image", "label", "tumor_mask", "index"):
        if key not in ev:
            raise ValueError(f"{explain_dir}/eval_set.npz: missing array {key!r}")
    for key in ("methods", "levels"):
        if key not in hm:
            raise ValueError(f"{explain_dir}/heatmaps.npz: missing array {key!r}")
    n, h, w = ev["tumor_mask"].shape
    m = len(hm["methods"])
    if hm["levels"].shape != (n, m, h, w):
        raise ValueError(
            f"{explain_dir}/heatmaps.npz: levels has shape {hm['levels'].shape}, expected "
            f"[N={n}, M={m}, H={h}, W={w}] to match eval_set.npz and the methods list"
        )
    return ev, hm


def _geometry(ev: dict, hm: dict, n_masks: int) -> dict:
    """Masks M_1..M_n from the stored levels: masks bool [N, M, n, H, W], areas [N, M, n],
    GT IoU [N, M], reasons."""
    n, m, h, w = hm["levels"].shape
    levels = hm["levels"].reshape(n * m, h, w)
    n_levels = hm["n_levels"].reshape(-1) if "n_levels" in hm else None
    masks = lv.progressive_masks(levels, n=n_masks, n_levels=n_levels).reshape(n, m, n_masks, h, w)
    areas = masks.sum(axis=(-2, -1)) / float(h * w)  # [N, M, n]
    valid = hm["valid"].astype(bool) if "valid" in hm else np.ones((n, m), bool)
    empty = areas[..., -1] <= 0
    gt_iou = ranking.iou(masks[:, :, -1], ev["tumor_mask"][:, None])  # [N, M]
    gt_iou = np.where(valid & ~empty, gt_iou, np.nan)
    return {"masks": masks, "areas": areas, "valid": valid & ~empty, "gt_iou": gt_iou,
            "excluded": {"invalid_heatmap": int(np.sum(~valid)), "empty_m4": int(np.sum(valid & empty))}}


def _score_block(block: dict, originals: np.ndarray, predict, lpips_fns) -> dict:
    """Predictions, realism and pooled features for one block of occluded images."""
    img = block["image"]
    pos = np.asarray(block["pos"])
    p, logit, feat = predict(img)
    orig, occ = to_float(originals[pos]), to_float(img)  # [R, H, W, 3] each
    out = {"pos": pos, "method": np.asarray(block["method"]), "mask": np.asarray(block["mask"]),
           "draw": np.asarray(block["draw"]), "p": p, "logit": logit,
           "feat": feat.astype(np.float16)}
    if block["curve"] == "morf":  # realism is reported per mask level of the study's curve only
        out.update(realism.pair_metrics(orig, occ))
        for name, fn in lpips_fns.items():
            out[name] = np.asarray(fn(orig, occ), np.float32)
    return out


def _load_model(stage_dir: Path) -> nnx.Module:
    from ibo_jax.train.classifier import load_classifier

    return load_classifier(stage_dir)


def _occluded(occ_dir: Path) -> tuple[dict, Iterator[dict]]:
    """(layout, blocks) from the occlude stage. layout: n_masks, fractions {curve: q grid}, ...;
    each block: strategy, curve, name (unique per strategy and curve), pos [R], method [R],
    mask [R] (1..n), draw [R], image uint8 [R, H, W, 3]."""
    from ibo_jax.stages import occlude

    layout = occlude.occluded_layout(occ_dir)
    return layout, occlude.load_occluded(occ_dir)


def ddpm_quality(ctx, predict, n: int, steps: int) -> dict:
    """KID of n DDPM samples (ancestral, `steps` respaced steps, resized to the patches' size)
    against n held-out normal patches; references on real patches of the same count."""
    from ibo_jax import rng
    from ibo_jax.data.patches import read_split
    from ibo_jax.train import ddpm

    data_dir = ctx.input_dir("data")
    sets = {"test_normal": read_split(data_dir, "test", label=0, limit=n)["image"],
            "train_normal": read_split(data_dir, "train", label=0, limit=n)["image"],
            "test_tumor": read_split(data_dir, "test", label=1, limit=n)["image"]}
    size = sets["test_normal"].shape[1]
    eps_model = ddpm.load_eps_model(ctx.input_dir("train_ddpm"))
    x = ddpm.sample(eps_model, rng.fold(ctx.key, "ddpm_samples"), n, num_steps=steps)
    if x.shape[1] != size:
        x = jnp.clip(jax.image.resize(x, (n, size, size, 3), "linear", antialias=True), 0.0, 1.0)
    sets["samples"] = np.asarray(x, np.float32)
    feats, p = {}, {}
    for name, imgs in sets.items():
        if len(imgs) >= 2:
            p[name], _, feats[name] = predict(imgs)
    ref = feats.get("test_normal")
    if ref is None:
        return {"skipped": "fewer than 2 normal patches in the test split"}
    out = {"n": int(len(ref)), "sample_steps": int(steps), "kid": {}, "p_tumor_mean": {},
           "share_called_normal": {}}
    for name in ("samples", "train_normal", "test_tumor"):
        if name in feats:
            out["kid"][name] = realism.kid(feats[name], ref)
    for name, v in p.items():
        out["p_tumor_mean"][name] = float(np.mean(v))
        out["share_called_normal"][name] = float(np.mean(v < 0.5))
    return out


def run(ctx) -> dict:
    t0 = time.time()
    cfg = ctx.cfg
    ev, hm = _read_inputs(ctx.input_dir("explain"))
    methods = [str(x) for x in hm["methods"]]
    controls = [str(x) for x in hm.get("controls", [])] or [x for x in methods if x in ranking.CONTROLS]
    occ_dir = ctx.input_dir("occlude")
    layout, blocks = _occluded(occ_dir)
    if layout.get("methods") and list(layout["methods"]) != methods:
        raise ValueError(f"{occ_dir}/layout.json: methods {layout['methods']} differ from explain's {methods}; "
                         "rerun the occlude stage")
    curve_areas = {}
    if (occ_dir / "masks.npz").is_file():
        masks_npz = ibo_io.read_npz(occ_dir / "masks.npz")
        curve_areas = {k[len("areas_"):]: v for k, v in masks_npz.items()
                       if k.startswith("areas_") and k not in ("areas_morf", "areas_fixed")}
    geo = _geometry(ev, hm, int(layout["n_masks"]))

    model = _load_model(ctx.input_dir("train_classifier"))
    predict = make_predict_fn(model, tumor_class=int(cfg.tumor_class), batch_size=int(cfg.batch_size))
    lpips_fns = {}
    if cfg.lpips_alexnet_weights:
        from ibo_jax.evaluation import lpips

        lpips_fns["lpips"] = lpips.make_lpips_fn(lpips.load_lpips(cfg.lpips_alexnet_weights))
    if cfg.lpips_vgg:
        from ibo_jax.evaluation import lpips

        vgg = lpips.load_lpips_vgg()
        if vgg is not None:
            lpips_fns["lpips_vgg"] = vgg

    p0, logit0, feat0 = predict(ev["image"])
    pred = (p0 >= 0.5).astype(np.int32)
    results: dict[tuple[str, str], list[dict]] = {}
    n_blocks = 0
    pending = []
    for block in ctx.progress(blocks, desc="score", unit="block"):
        chunk = f"{block['strategy']}__{block['curve']}__{block['name']}.npz"
        mine = n_blocks % ctx.process_count == ctx.process_index  # hosts split the blocks
        n_blocks += 1
        if not ctx.chunk_done(chunk) and mine:
            ibo_io.write_npz(ctx.chunk_path(chunk), _score_block(block, ev["image"], predict, lpips_fns))
        pending.append(((block["strategy"], block["curve"]), chunk))
    if ctx.process_index != 0:  # process 0 assembles once every host's chunks are there
        return {"blocks": n_blocks, "seconds": round(time.time() - t0, 2)}
    for key, chunk in pending:
        ctx.wait_for_chunk(chunk)
        results.setdefault(key, []).append(ibo_io.read_npz(ctx.chunk_path(chunk)))

    study = Study(
        image_id=np.asarray(ev["index"]), label=np.asarray(ev["label"]), methods=methods,
        controls=controls, areas=geo["areas"], valid=geo["valid"], gt_iou=geo["gt_iou"],
        p0=p0, logit0=logit0, fractions=layout.get("fractions", {}), curve_areas=curve_areas,
    )
    for (strategy, curve), parts in results.items():
        study.add(strategy, curve, {k: np.concatenate([r[k] for r in parts]) for k in parts[0]})
    summary = study.summarize(n_boot=int(cfg.n_boot), alpha=float(cfg.alpha), seed=int(ctx.config.seed))
    summary["kid"] = study.kid(feat0, subset_size=int(cfg.kid_subset_size) or None, seed=int(ctx.config.seed))
    if int(cfg.ddpm_samples) > 0:
        summary["ddpm_quality"] = ddpm_quality(ctx, predict, int(cfg.ddpm_samples), int(cfg.ddpm_sample_steps))
    summary["lpips_available"] = "lpips" in lpips_fns
    summary["exclusions"].update(geo["excluded"])
    summary["misclassified"] = int(np.sum(pred != ev["label"]))
    summary["n_images"] = int(len(p0))
    summary["layout"] = {k: v for k, v in layout.items() if k not in ("fractions", "blocks", "methods")}
    for strategy, curves in summary["strategies"].items():
        if "agreement" in curves.get("morf", {}):
            ctx.scalar(f"mard/{strategy}", curves["morf"]["agreement"]["mard"], 0)
    study.write_csv(ctx.dir / "scores.csv")
    ibo_io.write_json(ctx.dir / "summary.json", summary)
    return {"images": int(len(p0)), "blocks": n_blocks, "rows": study.n_rows,
            "misclassified": summary["misclassified"], "seconds": round(time.time() - t0, 2)}
