"""Scoring a run: re-predict every block of occluded images, then the study and its summary.

    results = scoring.score_occluded(blocks, ev["image"], predict_fn, store=ChunkDir(...))
    study, summary = scoring.summarize_run(ev, geo, results, predict_fn, methods=..., controls=...)
    summary = scoring.score_summary(study, feat0, excluded=geo["excluded"])  # the same from a ScoreTable (summarize_run calls it)

`predict_fn(images) -> (p, logit, feat)` (`evaluation.predict.make_predict_fn`, or any stand-in
in a test); `store` (`io.ChunkDir`) keeps finished blocks so a killed run resumes; `share`
(process index, process count) splits the blocks over hosts, process 0 assembles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from ibo_jax import stats
from ibo_jax.evaluation import ranking, realism
from ibo_jax.evaluation.curves import PRIMARY
from ibo_jax.evaluation.predict import to_float
from ibo_jax.evaluation.scores import ScoreTable
from ibo_jax.occlusion.store import RESIDUAL, chunk_name

PredictFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def score_block(block: Mapping, originals: np.ndarray, predict_fn: PredictFn,
                lpips_fns: Mapping[str, Callable] | None = None, *, twins: np.ndarray | None = None,
                tumor_mask: np.ndarray | None = None) -> dict:
    """Predictions, realism (on the study's MoRF curve) and pooled features of one block; for the
    residual blocks (the whole annotated region removed) SSIM/PSNR inside the region against the
    originals and, when there are twins, against the twins."""
    pos = np.asarray(block["pos"])
    out = {"pos": pos, "method": np.asarray(block["method"]), "mask": np.asarray(block["mask"]),
           "draw": np.asarray(block["draw"])}
    if block.get("predicted_by") == "stored":  # the strategy predicted itself: no image to score
        out["p"], out["logit"] = np.asarray(block["p"], np.float32), np.asarray(block["logit"], np.float32)
        return out
    img = block["image"]
    p, logit, feat = predict_fn(img)
    out.update(p=p, logit=logit, feat=feat.astype(np.float16))
    if block["curve"] == PRIMARY:  # realism is reported per mask level of the study's curve only
        orig, occ = to_float(originals[pos]), to_float(img)  # [R, H, W, 3] each
        out.update(realism.pair_metrics(orig, occ))
        for name, fn in (lpips_fns or {}).items():
            out[name] = np.asarray(fn(orig, occ), np.float32)
    if block["curve"] == RESIDUAL and tumor_mask is not None and len(pos):
        occ, m = to_float(img), tumor_mask[pos]
        for ref_name, ref in (("orig", originals), ("twin", twins)):
            if ref is not None:
                q = realism.masked_pair_metrics(to_float(ref[pos]), occ, m)
                out[f"ssim_{ref_name}"], out[f"psnr_{ref_name}"] = q["ssim"], q["psnr"]
    return out


class _Memory:
    def __init__(self):
        self.chunks = {}

    def done(self, name):
        return name in self.chunks

    def save(self, name, arrays):
        self.chunks[name] = dict(arrays)

    def load(self, name):
        return self.chunks[name]

    def wait(self, name):
        if name not in self.chunks:
            raise KeyError(name)


def score_occluded(blocks: Iterable[Mapping], originals: np.ndarray, predict_fn: PredictFn, *,
                   lpips_fns: Mapping[str, Callable] | None = None, store=None,
                   share: tuple[int, int] = (0, 1), progress: Callable = lambda it: it,
                   twins: np.ndarray | None = None, tumor_mask: np.ndarray | None = None,
                   model_predict_fns: Mapping[str, PredictFn] | None = None) -> dict | None:
    """Scores every block once (finished ones in `store` are reused). Returns
    {(strategy, curve): rows concatenated} on process 0 of `share`, None on the others.

    A block's `predicted_by` (`ibo_jax.artifacts`) picks its predictor: 'classifier' (or absent)
    `predict_fn`, 'stored' its own p and logit, any other name `model_predict_fns[name]`."""
    models = dict(model_predict_fns or {})
    store = _Memory() if store is None else store
    index, count = share
    pending = []
    for i, block in enumerate(progress(blocks)):
        name = chunk_name(block["strategy"], block["curve"], block["name"])
        if i % count == index and not store.done(name):
            how = block.get("predicted_by", "classifier")
            if how not in ("classifier", "stored") and how not in models:
                raise ValueError(f"strategy {block['strategy']!r} is predicted by model {how!r}, which the score "
                                 f"stage was not given (has {sorted(models) or 'none'})")
            fn = models.get(how, predict_fn)
            store.save(name, score_block(block, originals, fn, lpips_fns, twins=twins, tumor_mask=tumor_mask))
        pending.append(((block["strategy"], block["curve"]), name))
    if index != 0:
        return None
    parts: dict[tuple[str, str], list[dict]] = {}
    for key, name in pending:
        store.wait(name)
        parts.setdefault(key, []).append(store.load(name))
    return {key: {k: np.concatenate([r[k] for r in rows]) for k in rows[0]} for key, rows in parts.items()}


def residual_arrays(rows: Mapping[str, np.ndarray], n_images: int) -> dict[str, np.ndarray]:
    """One strategy's residual rows (the annotated region removed) as [N, D] arrays (NaN where an
    image has no tumor region), keyed p, logit and the masked SSIM/PSNR, plus feat [R, C] rows."""
    pos, draw = np.asarray(rows["pos"], np.int64), np.asarray(rows["draw"], np.int64)
    n_draw = int(draw.max()) + 1 if draw.size else 1
    out = {}
    for k in ("p", "logit", "ssim_orig", "psnr_orig", "ssim_twin", "psnr_twin"):
        if k in rows:
            a = np.full((n_images, n_draw), np.nan)
            a[pos, draw] = rows[k]
            out[k] = a
    # a strategy that stores its own predictions has no classifier features: [R, 0]
    out["feat"] = np.asarray(rows["feat"], np.float32) if "feat" in rows else np.zeros((len(pos), 0), np.float32)
    out["pos"] = pos
    return out


def summarize_run(ev: Mapping, geo: dict, results: Mapping[tuple[str, str], dict], predict_fn: PredictFn, *,
                  methods: Sequence[str], controls: Sequence[str], fractions: Mapping | None = None,
                  n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, kid_subset_size: int | None = None,
                  lpips_available: bool = False, layout: Mapping | None = None,
                  originals: tuple | None = None) -> tuple[ScoreTable, dict]:
    """The ScoreTable of a run and the score stage's summary.json contents (`score_summary`);
    `originals`: the (p, logit, feat) of ev['image'] if already predicted."""
    p0, logit0, feat0 = originals if originals is not None else predict_fn(ev["image"])
    study = ScoreTable.from_geometry(geo, image_id=ev["index"], label=ev["label"], methods=methods, controls=controls,
                                p0=p0, logit0=logit0, fractions=fractions)
    for (strategy, curve), rows in results.items():
        study.add(strategy, curve, rows)
    summary = score_summary(study, feat0, excluded=geo["excluded"], n_boot=n_boot, alpha=alpha, seed=seed,
                            kid_subset_size=kid_subset_size, lpips_available=lpips_available, layout=layout)
    return study, summary


def score_summary(study: ScoreTable, feat0: np.ndarray, *, excluded: Mapping[str, int], n_boot: int = 1000,
                  alpha: float = 0.05, seed: int = 0, kid_subset_size: int | None = None,
                  lpips_available: bool = False, layout: Mapping | None = None) -> dict:
    """score/summary.json, all of it (the stage only writes it): the study's statistics
    (`ScoreTable.summarize`) with the run's facts: KID per strategy and mask against the originals'
    features feat0 [N, C], whether LPIPS ran, the mask geometry's exclusions, the misclassified
    originals (p(tumor) < 0.5 for a tumor label, or the reverse), the image count and the
    occluded-image layout (less its per-block lists)."""
    summary = study.summarize(n_boot=n_boot, alpha=alpha, seed=seed)
    summary["kid"] = study.kid(feat0, subset_size=kid_subset_size, seed=seed)
    summary["lpips_available"] = bool(lpips_available)
    summary["exclusions"].update(excluded)
    summary["misclassified"] = int(np.sum((study.p0 >= 0.5).astype(np.int32) != np.asarray(study.label)))
    summary["n_images"] = int(len(study.p0))
    summary["layout"] = {k: v for k, v in (layout or {}).items()
                         if k not in ("fractions", "blocks", "methods", "residual_blocks")}
    summary["ffidelity"] = ffidelity_scores(study, n_boot=n_boot, alpha=alpha, seed=seed)
    return summary


FFID_STRATEGY = "ffidelity"
# FFid+ removes each method's top-q pixels (MoRF), FFid- its bottom-q (LeRF), on the q grid
FFID_CURVES = {"ffid_plus": "fixed", "ffid_minus": "fixed_lerf"}


def ffidelity_per_patch(study: ScoreTable, curve: str, strategy: str = FFID_STRATEGY) -> np.ndarray:
    """[N, M]: per patch and method, the mean over the curve's q grid (and draws) of
    1(pred(x) = y) - 1(pred(x with the set stochastically removed) = y); NaN where the pair is not
    valid or has no point. pred = tumor (label 1) when p(tumor) > 0.5, normal otherwise (the argmax
    for two classes); y = the patch's label; pred(x) from the table's originals (mask 0)."""
    d = study.dense[(strategy, curve)]
    y = np.asarray(study.label, np.int64)
    p = np.asarray(d["p"], np.float64)  # [N, M, D, n+1], point 0 the original
    hit = np.where(np.isfinite(p), ((p > 0.5).astype(np.int64) == y[:, None, None, None]).astype(np.float64), np.nan)
    drop = hit[..., :1] - hit[..., 1:]  # [N, M, D, n]
    with np.errstate(invalid="ignore"):
        n_ok = np.isfinite(drop).sum(axis=(2, 3))
        per = np.where(n_ok > 0, np.nansum(drop, axis=(2, 3)) / np.maximum(n_ok, 1), np.nan)
    return np.where(study.valid, per, np.nan)


def ffidelity_scores(study: ScoreTable, *, strategy: str = FFID_STRATEGY, n_boot: int = 1000, alpha: float = 0.05,
                     seed: int = 0) -> dict:
    """F-Fidelity's label-based scores (Zheng et al. 2025) per method, from the `ffidelity` strategy's
    predictions (the fine-tuned model's mean p(tumor) over the random sub-masks): FFid+ on the
    'fixed' curve (top-q set removed; higher = more faithful), FFid- on 'fixed_lerf' (bottom-q set
    removed; lower = more faithful), each the mean over patches of `ffidelity_per_patch`, with a
    bootstrap interval over patches and the ranking of the (non-control) methods. A score whose curve
    the strategy did not run on is omitted with the reason."""
    curves = {c for (s, c) in study.dense if s == strategy}
    if not curves:
        return {"omitted": f"the occlude stage ran no {strategy!r} strategy"}
    ranked = [m for m in study.methods if m not in study.controls]
    out: dict = {
        "strategy": strategy,
        "definition": "mean over patches and the q grid of 1(pred(x) = y) - 1(pred(x with the set removed "
                      "stochastically) = y); pred = tumor iff p(tumor) > 0.5",
        "pred_x": "the original patch's prediction in the score table (mask 0: the run's classifier); the "
                  "removed sets are predicted by the fine-tuned model",
        "omitted": {},
    }
    for name, curve in FFID_CURVES.items():
        if curve not in curves:
            out["omitted"][name] = (f"{strategy!r} did not run on the {curve!r} curve (occlude.curves and "
                                    f"occlude.fixed_strategies)")
            continue
        per = ffidelity_per_patch(study, curve, strategy)
        c = stats.bootstrap_mean_ci(per, n_boot=n_boot, seed=seed, alpha=alpha)
        by_method = {m: {k: (float(c[k][j]) if np.isfinite(c[k][j]) else None) for k in ("mean", "lo", "hi")}
                     | {"n": int(c["n"][j])} for j, m in enumerate(study.methods)}
        ok = {m: by_method[m]["mean"] for m in ranked if by_method[m]["mean"] is not None}
        higher = name == "ffid_plus"
        out[name] = {"curve": curve, "fractions": list(study.fractions.get(curve, [])),
                     "higher_is_better": higher, "by_method": by_method,
                     "ranking": ranking.rank(ok, ascending=not higher) if ok else {}}
    return out
