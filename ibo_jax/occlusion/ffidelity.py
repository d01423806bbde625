"""F-Fidelity (Zheng et al., ICLR 2025): stochastic removal, re-predicted by a fine-tuned classifier.

    out = occlusion.apply("ffidelity", images, remove, key=keys, model=finetuned, fill=(r, g, b))
    out["p"], out["logit"]                                   # [U] each: this strategy predicts itself
    masks = ffidelity.submasks(remove, keys, n_samples=50, alpha=0.5, beta=0.1)   # [U, N, H, W]

For each row (an image and the pixel set a curve point removes, e.g. the top-k of a heatmap for
MoRF, the bottom-k for LeRF) N random sub-masks are drawn: every pixel of the set is removed with
probability `alpha`, and when a sub-mask removes more than `floor(beta * H * W)` pixels a
uniformly random subset of that size is kept (the paper's `use_max`: no sub-mask removes more than
the share beta the model was fine-tuned on). Removed pixels get the constant `fill` (the training
images' per-channel mean in [0, 1], which the model's own input normalization maps to the dataset
mean in its normalized space), the fine-tuned model predicts every filled image, and the N
predictions are averaged:

    p     = mean over the N sub-masks of p(tumor)            (the probability-based curve)
    logit = log(p) - log(1 - p), the log-odds of that mean   (not the mean of the N log-odds)

computed from the N log-probabilities with log-sum-exp, so N = 1 gives exactly what
`evaluation.predict.make_predict_fn` gives for the filled image. The sub-masks are drawn with
`jax.vmap` over the N samples (the N filled images then go through the model as one batch), in one
jitted program per (model, shape, N), rows batched `batch_size` at a time and padded to that one
shape. Sample j of a row draws from `fold_in(row key, j)`, so results do not depend on how rows
are batched.

The fine-tuned model and the fill come from the `finetune_ffidelity` stage's folder
(`load_finetuned`); the label-based scores FFid+ / FFid- are computed from these predictions by
the score stage (`evaluation.scoring.ffidelity_scores`).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ibo_jax import artifacts
from ibo_jax.occlusion.simple import check_inputs
from ibo_jax.parallel import map_batches
from ibo_jax.rng import example_keys

STAGE = "finetune_ffidelity"
# The fine-tune stage's metrics (accuracies of both models, epochs, lr, beta) and the fill it used;
# its model is `model_config.json` + `model/` as the train_classifier stage writes them.
FINETUNE_METRICS = artifacts.Artifact(STAGE, "metrics.json",
                                      "the F-Fidelity fine-tune: both models' accuracies and the fill")


# ------------------------------------------------------------------------------- option checks


def cap_pixels(beta: float | None, h: int, w: int) -> int | None:
    """floor(beta * H * W), the most pixels a sub-mask may remove; None (no cap) for beta None / 0."""
    if beta is None or float(beta) == 0.0:
        return None
    beta = float(beta)
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"ffidelity beta: expected a share in (0, 1] (or None / 0: no cap), got {beta}")
    return int(math.floor(beta * h * w + 1e-9))


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"ffidelity alpha: expected a probability in (0, 1], got {alpha}")
    return alpha


def _check_n(n_samples: int) -> int:
    if int(n_samples) != n_samples or int(n_samples) < 1:
        raise ValueError(f"ffidelity n_samples: expected an integer >= 1, got {n_samples!r}")
    return int(n_samples)


def _fill_rows(fill, n: int) -> np.ndarray:
    """fill: 3 floats (every row) or [n, 3] (one per row), in [0, 1] -> float32 [n, 3]."""
    if fill is None:
        raise ValueError("ffidelity fill: required (the training images' per-channel mean in [0, 1], "
                         "from the finetune_ffidelity stage)")
    f = np.asarray(fill, np.float32)
    if f.shape == (3,):
        f = np.broadcast_to(f, (n, 3))
    if f.shape != (n, 3) or not np.all(np.isfinite(f)) or f.min() < 0.0 or f.max() > 1.0:
        raise ValueError(f"ffidelity fill: expected 3 values (R, G, B) in [0, 1] or one such triple per row "
                         f"[{n}, 3], got shape {np.shape(fill)}")
    return np.ascontiguousarray(f)


# ----------------------------------------------------------------------------------- sub-masks


def random_subset(candidates: jax.Array, key: jax.Array, size) -> jax.Array:
    """A uniformly random subset of `size` of the True pixels of `candidates` [H, W] (all of them
    when there are fewer): the candidates are put in a random order (argsort of uniform draws) and
    the first `size` kept. Exactly min(size, count) pixels."""
    flat = candidates.reshape(-1)
    n = flat.shape[0]
    u = jnp.where(flat, jax.random.uniform(key, (n,)), 2.0)  # non-candidates sort last
    order = jnp.argsort(u)
    rank = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return (flat & (rank < size)).reshape(candidates.shape)


def _submask(remove: jax.Array, key: jax.Array, alpha, cap, capped: bool) -> jax.Array:
    """One sub-mask [H, W] of one row's removal set: Bernoulli(alpha) per pixel, then the cap."""
    k_alpha, k_cap = jax.random.split(key)
    sub = remove & jax.random.bernoulli(k_alpha, alpha, remove.shape)
    return random_subset(sub, k_cap, cap) if capped else sub


def _row_submasks(remove: jax.Array, key: jax.Array, alpha, cap, n_samples: int, capped: bool) -> jax.Array:
    """[N, H, W]: sample j draws from fold_in(row key, j) (vmapped over the N samples)."""
    return jax.vmap(lambda j: _submask(remove, jax.random.fold_in(key, j), alpha, cap, capped))(
        jnp.arange(n_samples, dtype=jnp.uint32))


@partial(jax.jit, static_argnames=("n_samples", "capped"))
def _submasks_jit(remove, key_data, alpha, cap, n_samples, capped):
    keys = jax.random.wrap_key_data(key_data)
    return jax.vmap(lambda r, k: _row_submasks(r, k, alpha, cap, n_samples, capped))(remove, keys)


def submasks(remove_mask, key, *, n_samples: int = 50, alpha: float = 0.5, beta: float | None = 0.1) -> np.ndarray:
    """The N sub-masks of every row, bool [U, N, H, W] (True = removed): what `ffidelity` fills and
    predicts. `key`: per-row keys [U] (or one key, folded with the row position)."""
    remove = jnp.asarray(remove_mask)
    if remove.ndim != 3 or remove.dtype != jnp.bool_:
        raise ValueError(f"remove_mask: expected bool [U, H, W], got {remove.dtype}{tuple(remove.shape)}")
    u, h, w = remove.shape
    cap = cap_pixels(beta, h, w)
    keys = jax.random.key_data(example_keys(key, u))
    out = _submasks_jit(remove, keys, jnp.float32(_check_alpha(alpha)), jnp.int32(cap or h * w),
                        _check_n(n_samples), cap is not None)
    return np.asarray(out)


# ---------------------------------------------------------------------------------- prediction


@partial(jax.jit, static_argnames=("graphdef", "tumor_class", "n_samples", "capped"))
def _log_p(graphdef, state, images, remove, key_data, fill, alpha, cap, *, tumor_class, n_samples, capped):
    """log p(tumor) [b, N] of every row's N filled images."""
    keys = jax.random.wrap_key_data(key_data)
    masks = jax.vmap(lambda r, k: _row_submasks(r, k, alpha, cap, n_samples, capped))(remove, keys)  # [b,N,H,W]
    x = jnp.where(masks[..., None], fill[:, None, None, None, :], images[:, None])  # [b, N, H, W, 3]
    b = images.shape[0]
    net = nnx.merge(graphdef, state)
    logits = net(x.reshape((b * n_samples,) + images.shape[1:])).astype(jnp.float32)  # CNN or ViT
    return jax.nn.log_softmax(logits, axis=-1)[:, tumor_class].reshape(b, n_samples)


def sample_log_probs(images, remove_mask, *, key=None, model: nnx.Module, tumor_class: int = 1, fill=None,
                     n_samples: int = 50, alpha: float = 0.5, beta: float | None = 0.1,
                     batch_size: int = 8) -> np.ndarray:
    """log p(tumor) of each row's N filled images, float64 [U, N] (the sub-masks of `submasks`)."""
    images, remove_mask = check_inputs(images, remove_mask)
    u, h, w = remove_mask.shape
    if model is None or not isinstance(model, nnx.Module):
        raise ValueError("ffidelity model: required, the fine-tuned classifier (an NNX module, CNN or ViT)")
    n_samples, alpha, cap = _check_n(n_samples), _check_alpha(alpha), cap_pixels(beta, h, w)
    if int(batch_size) < 1:
        raise ValueError(f"ffidelity batch_size: expected >= 1 rows per batch, got {batch_size}")
    fills = _fill_rows(fill, u)
    if u == 0:
        return np.zeros((0, n_samples), np.float64)
    keys = np.asarray(jax.random.key_data(example_keys(key, u)))
    model.eval()
    graphdef, state = nnx.split(model)
    fn = partial(_log_p, graphdef, state, tumor_class=int(tumor_class), n_samples=n_samples, capped=cap is not None)
    alpha_, cap_ = jnp.float32(alpha), jnp.int32(cap or h * w)

    def batch(x, r, k, f):
        return np.asarray(fn(x, r, k, f, alpha_, cap_), np.float64)

    # every batch padded to `batch_size` rows: one compiled shape for every call
    return map_batches(batch, np.asarray(images), np.asarray(remove_mask), keys, fills,
                       batch_size=int(batch_size), pad_single=True)


def average(log_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p, logit) [U] from the N log-probabilities [U, N]: p the mean probability, logit its log-odds
    (log-sum-exp of log p and of log(1 - p) over the samples; N = 1 is make_predict_fn's logit)."""
    lp = np.asarray(log_p, np.float64)
    n = lp.shape[1]
    log1m = np.log(np.clip(-np.expm1(lp), 1e-300, None))  # log(1 - p), stable
    log_mean_p = _logsumexp(lp) - np.log(n)
    log_mean_q = _logsumexp(log1m) - np.log(n)
    return np.exp(log_mean_p), log_mean_p - log_mean_q


def _logsumexp(a: np.ndarray) -> np.ndarray:
    m = np.max(a, axis=1, keepdims=True)
    return (m + np.log(np.sum(np.exp(a - m), axis=1, keepdims=True)))[:, 0]


def ffidelity(images, remove_mask, *, key=None, model: nnx.Module = None, tumor_class: int = 1, fill=None,
              n_samples: int = 50, alpha: float = 0.5, beta: float | None = 0.1, batch_size: int = 8) -> dict:
    """F-Fidelity's stochastic removal of each row's set, predicted by the fine-tuned `model`:
    {"p": mean p(tumor) over the N sub-masks [U], "logit": the log-odds of that mean [U]}.

    images float [U, H, W, 3] in [0, 1]; remove_mask bool [U, H, W] (the set: e.g. top-k or
    bottom-k pixels); key: per-row keys [U]; fill: 3 floats in [0, 1] (or [U, 3]); alpha: the
    probability that a pixel of the set is removed in a sub-mask; beta: the cap, at most
    floor(beta * H * W) pixels removed per sub-mask (None / 0: no cap); batch_size: rows per
    compiled call (each row is N images)."""
    lp = sample_log_probs(images, remove_mask, key=key, model=model, tumor_class=tumor_class, fill=fill,
                          n_samples=n_samples, alpha=alpha, beta=beta, batch_size=batch_size)
    p, logit = average(lp) if len(lp) else (np.zeros(0), np.zeros(0))
    return {"p": p, "logit": logit}


# ---------------------------------------------------------------- the fine-tune stage's outputs


def write_metrics(stage_dir: str | Path, metrics: dict) -> Path:
    """The fine-tune stage's metrics.json (it must carry `fill`: 3 floats in [0, 1])."""
    _fill_rows(metrics.get("fill"), 1)
    return artifacts.write_json(FINETUNE_METRICS, stage_dir, metrics)


def read_metrics(stage_dir: str | Path) -> dict:
    m = artifacts.read_json(FINETUNE_METRICS, stage_dir)
    if not isinstance(m, dict) or "fill" not in m:
        raise artifacts.ArtifactError(f"{FINETUNE_METRICS.path(stage_dir)}: no 'fill' (rerun the {STAGE} stage)")
    try:
        _fill_rows(m["fill"], 1)
    except ValueError as e:
        raise artifacts.ArtifactError(f"{FINETUNE_METRICS.path(stage_dir)}: {e}") from e
    return m


def load_finetuned(stage_dir: str | Path) -> tuple[nnx.Module, tuple[float, float, float]]:
    """(the fine-tuned classifier, eval mode; the fill it was fine-tuned with) of a finished
    finetune_ffidelity folder."""
    from ibo_jax.models import loaders

    fill = tuple(float(v) for v in read_metrics(stage_dir)["fill"])
    return loaders.load_classifier(stage_dir), fill


__all__ = ["FINETUNE_METRICS", "average", "cap_pixels", "ffidelity", "load_finetuned", "random_subset",
           "read_metrics", "sample_log_probs", "submasks", "write_metrics"]
