"""Occlusion strategies: one registry from name to function.

    out = occlusion.apply("nli", images, remove_mask, key=key, **options)

images float32 [B, H, W, 3] in [0, 1]; remove_mask bool [B, H, W], True = removed; the result is
float32 [B, H, W, 3] in [0, 1] with kept pixels unchanged (for `ibo` with n_draws > 1:
[B, n_draws, H, W, 3]). Random strategies (histogram, nli, ibo) take `key`: one key (folded with
the batch position) or, better, per-example keys [B] so results do not depend on batching.
`ffidelity` (F-Fidelity, `ibo_jax/occlusion/ffidelity.py`) returns predictions instead of images:
{"p", "logit"} [B], the mean over random sub-masks predicted by a fine-tuned classifier (`model=`,
`fill=`, from the `finetune_ffidelity` stage); it is declared "stored" in `PREDICTED_BY`.
`token_drop` (ViT classifiers only, `ibo_jax/occlusion/token_drop.py`) also predicts instead of
producing images: the ViT (`model=`) predicts the original image with the tokens of the removed
patches dropped (a token goes when at least half of its pixels are removed); "stored" too.

Every strategy is `fn(images, remove_mask, *, key=None, **options)`. `counterfactual` (synthetic
data only) takes `twin=` (the patches without their tumor) and gives the faithfulness reference. `ibo` comes from
`ibo_jax/occlusion/ibo.py` (RePaint) and needs `eps_model=` (an `EpsModel`); without that
module the registry simply lacks it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import jax
import numpy as np

from ibo_jax.occlusion import (
    blurring,
    counterfactual,
    ffidelity,
    histogram,
    nli,
    simple,
    token_drop,
)
from ibo_jax.occlusion.simple import check_inputs, to_uint8
from ibo_jax.rng import example_keys

# Submodules keep their names (`occlusion.nli` is the module); the functions live in REGISTRY.
REGISTRY: dict[str, Callable[..., jax.Array]] = {
    "blackening": simple.blackening,
    "blurring": blurring.blurring,
    "mean": simple.mean,
    "histogram": histogram.histogram,
    "nli": nli.nli,
    "counterfactual": counterfactual.counterfactual,  # synthetic data only: needs twin=
    # F-Fidelity: stochastic sub-masks predicted by the fine-tuned classifier (needs model=, fill=)
    "ffidelity": ffidelity.ffidelity,
    # ViTs only: the removed patches' tokens dropped, predicted by the ViT itself (needs model=)
    "token_drop": token_drop.token_drop,
}
RANDOM = frozenset({"histogram", "nli", "ibo"})

try:
    _ibo_module = importlib.import_module("ibo_jax.occlusion.ibo")
except ModuleNotFoundError as e:  # only the missing module itself is tolerated
    if e.name != "ibo_jax.occlusion.ibo":
        raise
else:
    REGISTRY["ibo"] = _ibo_module.ibo

STRATEGIES: tuple[str, ...] = tuple(REGISTRY)

# How a strategy's results are predicted (`ibo_jax.artifacts`): "classifier" (its images are
# re-predicted by the run's classifier), "stored" (it writes p(tumor) and the logit itself, e.g.
# a ViT's token dropping) or the name of another model that re-predicts its images (a retrained
# classifier). Strategies not listed are "classifier".
PREDICTED_BY: dict[str, str] = {"ffidelity": "stored", "token_drop": "stored"}


def predicted_by(name: str) -> str:
    return PREDICTED_BY.get(name, "classifier")


def apply(name: str, images, remove_mask, key=None, **options) -> jax.Array:
    """Occludes `images` where `remove_mask` is True with strategy `name` (see STRATEGIES)."""
    if name not in REGISTRY:
        hint = " (needs ibo_jax/occlusion/ibo.py)" if name == "ibo" else ""
        raise ValueError(f"occlusion strategy {name!r} unknown{hint}; expected one of {STRATEGIES}")
    images, remove_mask = check_inputs(images, remove_mask)
    return REGISTRY[name](images, remove_mask, key=key, **options)


def unique_rows(pos, draw, remove) -> tuple[np.ndarray, np.ndarray]:
    """Rows with the same patch, draw and removed pixels have the same input: computed once.
    Returns (first: the first row of each distinct input, in row order; inverse: for every row,
    its input's position in `first`). On the demo a fifth of the masks repeat within a patch
    (graded_0 is the oracle, graded_100 the random map; MoRF masks of maps with few levels)."""
    seen: dict[tuple[int, int, bytes], int] = {}
    first, inverse = [], np.empty(len(pos), np.int64)
    packed = np.packbits(np.asarray(remove, bool).reshape(len(pos), -1), axis=1)
    for r in range(len(pos)):
        k = (int(pos[r]), int(draw[r]), packed[r].tobytes())
        if k not in seen:
            seen[k] = len(first)
            first.append(r)
        inverse[r] = seen[k]
    return np.asarray(first, np.int64), inverse


__all__ = ["REGISTRY", "STRATEGIES", "RANDOM", "PREDICTED_BY", "predicted_by", "apply", "check_inputs", "unique_rows", "example_keys", "to_uint8"]
