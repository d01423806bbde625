"""Is the generator IBO inpaints with any good? Its samples against held-out normal patches.

    q = ddpm_check.sample_quality(eps_model, predict_fn, real, key, n=64, steps=50)

`real`: {'test_normal': uint8 [n, H, W, 3] (the reference), 'train_normal' (a second real normal
set: the noise floor), 'test_tumor' (the class gap)}. KID in the classifier's feature space of the
DDPM's samples (ancestral, `steps` respaced steps, resized to the patches' size) and of the real
sets against the reference, and the classifier's p(tumor) on each: samples close to the floor and
far below the gap look like normal tissue to the classifier.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ibo_jax.evaluation import realism
from ibo_jax.repaint.unconditional import sample


def sample_quality(eps_model, predict_fn, real: Mapping[str, np.ndarray], key: jax.Array, *, n: int,
                   steps: int, kid_subset_size: int | None = None) -> dict:
    sets = dict(real)
    size = sets["test_normal"].shape[1]
    x = sample(eps_model, key, n, num_steps=steps)
    if x.shape[1] != size:
        x = jnp.clip(jax.image.resize(x, (n, size, size, 3), "linear", antialias=True), 0.0, 1.0)
    sets["samples"] = np.asarray(x, np.float32)
    feats, p = {}, {}
    for name, imgs in sets.items():
        if len(imgs) >= 2:
            p[name], _, feats[name] = predict_fn(imgs)
    ref = feats.get("test_normal")
    if ref is None:
        return {"skipped": "fewer than 2 normal patches in the test split"}
    out = {"n": int(len(ref)), "sample_steps": int(steps), "kid": {}, "p_tumor_mean": {},
           "share_called_normal": {}}
    for name in ("samples", "train_normal", "test_tumor"):
        if name in feats:
            sub = kid_subset_size if kid_subset_size and kid_subset_size < min(len(feats[name]), len(ref)) else None
            out["kid"][name] = realism.kid(feats[name], ref, subset_size=sub)
    for name, v in p.items():
        out["p_tumor_mean"][name] = float(np.mean(v))
        out["share_called_normal"][name] = float(np.mean(v < 0.5))
    out["targets"] = targets(out)
    return out


def targets(q: Mapping) -> dict:
    """The generator's targets: samples called normal within 3 points of real normal patches,
    and KID at most 5% of the tumor-normal gap."""
    out = {}
    share = q["share_called_normal"]
    if "samples" in share and "test_normal" in share:
        out["called_normal"] = {"value": share["samples"], "target": share["test_normal"] - 0.03,
                                "met": bool(share["samples"] >= share["test_normal"] - 0.03)}
    kid = q["kid"]
    if "samples" in kid and "test_tumor" in kid:
        bound = 0.05 * kid["test_tumor"]["kid"]
        out["kid_vs_gap"] = {"value": kid["samples"]["kid"], "target": bound,
                             "ratio": kid["samples"]["kid"] / kid["test_tumor"]["kid"],
                             "met": bool(kid["samples"]["kid"] <= bound)}
    return out
