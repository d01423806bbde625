"""The sampler sweep's fixed inputs: what every setting inpaints, with the same keys (common random
numbers), and the references it is judged against.

- box masks: one random square per image (`box_masks`), from the image's index and the seed;
- the whole annotated region of each tumor image (residual evidence);
- on synthetic data, the counterfactual fills of both (the twin's pixels) and their quality;
- the rank agreement's rows (`rank_setup`): every ranked method's MoRF masks M1..Mn on the first
  evaluation patches, computed here from the importance levels (`evaluation.geometry`), so the
  sweep does not need the occlude stage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from ibo_jax import rng
from ibo_jax.evaluation.curves import PRIMARY

PredictFn = Callable[[np.ndarray], tuple]  # uint8 [N, H, W, 3] -> (p_tumor [N], logit [N], features [N, D])


def box_masks(indices: np.ndarray, size: int, fraction: float, seed: int) -> np.ndarray:
    """One random square per image covering ~fraction of it: bool [N, size, size], from the index."""
    side = max(1, int(round(np.sqrt(fraction) * size)))
    masks = np.zeros((len(indices), size, size), bool)
    for i, idx in enumerate(indices):
        r = np.random.default_rng([seed, rng.stable_int(int(idx))])
        y, x = r.integers(0, size - side + 1, size=2)
        masks[i, y:y + side, x:x + side] = True
    return masks


class SweepInputs:
    """The fixed inputs of every setting: box masks, residual regions, their counterfactuals.

    data_dir: the data stage's directory; `split`, `label` (None: any) and `n_images` select the
    patches; `key` is the sweep's root key (per image: fold_in(key, stable_int(index))).
    """

    def __init__(self, data_dir: Path, predict: PredictFn, *, split: str, label: int | None, n_images: int,
                 mask_fraction: float, residual: bool, seed: int, key: jax.Array):
        from ibo_jax import artifacts
        from ibo_jax.data.patches import hematoxylin_share, read_split

        d = read_split(data_dir, split, label=label, limit=int(n_images))
        if len(d["index"]) == 0:
            raise ValueError(f"repaint_sweep: split {split!r} has no images with label {-1 if label is None else label}")
        self.data, self.seed = d, int(seed)
        self.size = d["image"].shape[1]
        self.box = box_masks(d["index"], self.size, float(mask_fraction), self.seed)  # [N, H, W]
        self.keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
            np.asarray([rng.stable_int(int(i)) for i in d["index"]], np.uint32))
        self.twins, _ = artifacts.twins_of(data_dir, d["index"], d["image"])
        self.hshare = lambda idx: (lambda imgs, m: hematoxylin_share(data_dir, d["index"][idx], imgs, m))
        self.res_idx = np.flatnonzero(d["tumor_mask"].reshape(len(d["index"]), -1).any(1)) if residual else []
        self.refs = {}
        if self.twins is not None:
            from ibo_jax.generator.sweep import reference_quality

            for part, idx, masks in (("box", np.arange(len(d["index"])), self.box),
                                     ("residual", self.res_idx, d["tumor_mask"][self.res_idx])):
                if len(idx):
                    cf = np.where(masks[..., None], self.twins[idx], d["image"][idx])
                    self.refs[part] = (cf, reference_quality(cf, masks, predict, self.hshare(idx)))


def rank_setup(explain_dir: Path, predict: PredictFn, *, n_images: int, n_masks: int, n_draws: int,
               key: jax.Array) -> dict | None:
    """The rank agreement's fixed inputs: MoRF rows of the ranked methods, keys, references.

    n_images: evaluation patches (0: no rank agreement, None returned; -1: all); key: the sweep's
    root key (rows draw from fold(key, 'rank') and the row's identity)."""
    from ibo_jax import artifacts, occlusion
    from ibo_jax.evaluation import geometry
    from ibo_jax.occlusion import to_uint8

    n_req = int(n_images)
    if n_req == 0:
        return None
    ev, hm = artifacts.read_explained(explain_dir, need=("levels",))
    n = len(ev["index"]) if n_req < 0 else min(n_req, len(ev["index"]))
    twins, _ = artifacts.twins(ev)
    ev = {k: ev[k][:n] for k in ("image", "label", "tumor_mask", "index")}
    methods, controls = hm["methods"], hm["controls"]
    k = int(n_masks)
    geo = geometry.compute(None, hm["levels"][:n], hm["n_levels"][:n] if "n_levels" in hm else None,
                           hm["valid"][:n] if "valid" in hm else None, ev["tumor_mask"], n_masks=k, keep_masks=True)
    masks = geo.pop("morf_masks")  # [n, m, k, H, W]
    ranked = np.array([m not in controls for m in methods])
    pos, meth, mask, draw = (np.asarray(v, np.int64).ravel() for v in np.meshgrid(
        np.arange(n), np.flatnonzero(ranked), np.arange(1, k + 1), np.arange(int(n_draws)), indexing="ij"))
    use = geo["valid"][pos, meth]
    pos, meth, mask, draw = pos[use], meth[use], mask[use], draw[use]
    ids = np.stack([[rng.stable_int(int(ev["index"][p])) for p in pos], [rng.stable_int(methods[i]) for i in meth],
                    [rng.stable_int(f"morf:{i}") for i in mask], draw], axis=1)
    p0, logit0, _ = predict(ev["image"])
    remove = masks[pos, meth, mask - 1]
    first, inverse = occlusion.unique_rows(pos, draw, remove)  # identical inputs inpainted once
    setup = {"ev": ev, "methods": methods, "controls": controls, "geo": geo,
             "rows": {"pos": pos, "method": meth, "mask": mask, "draw": draw},
             "remove": remove, "keys": rng.row_keys(rng.fold(key, "rank"), ids),
             "first": first, "inverse": inverse, "p0": p0, "logit0": logit0}
    if twins is not None:  # the counterfactual reference of the same rows, computed once
        cf = occlusion.apply("counterfactual", ev["image"][pos].astype(np.float32) / 255.0, setup["remove"],
                             twin=twins[:n][pos])
        setup["cf_p"], setup["cf_logit"], _ = predict(to_uint8(cf))
    return setup


def rank_summary(setup: dict, results: dict[str, dict], *, n_boot: int, seed: int) -> dict:
    """Every setting as one 'strategy' of a ScoreTable: MARD against the IoU and counterfactual rankings.
    results: setting name -> {'rank_p': [R], 'rank_logit': [R]} in the rows' order."""
    from ibo_jax.evaluation.scores import ScoreTable
    from ibo_jax.trust import checks

    ev = setup["ev"]
    study = ScoreTable.from_geometry(setup["geo"], image_id=ev["index"], label=ev["label"], methods=setup["methods"],
                                controls=setup["controls"], p0=setup["p0"], logit0=setup["logit0"])
    for name, res in results.items():
        study.add(name, PRIMARY, {**setup["rows"], "p": res["rank_p"], "logit": res["rank_logit"]})
    out = study.summarize(n_boot=n_boot, seed=seed)
    if "cf_p" in setup:
        study.add(checks.REFERENCE, PRIMARY, {**setup["rows"], "p": setup["cf_p"], "logit": setup["cf_logit"]})
        out["counterfactual"] = checks.counterfactual_agreement(study, curves=(PRIMARY,), n_boot=n_boot, seed=seed)
    return out
