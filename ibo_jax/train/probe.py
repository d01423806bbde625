"""A linear probe: only the head `model.fc` trained, on the frozen backbone's pooled features.

    summary = train_linear_probe(spec, TrainConfig(epochs=20), train=(x, y), val=(xv, yv),
                                 workdir=path, key=key, init_weights="uni.bin")

The backbone (a ViT from `init_weights`, usually a foundation model) is frozen, so its features
`model.embed(x)` [N, F] are computed once (no augmentation: cached features cannot be augmented) and
written to `workdir/probe_features.npz`, which a resumed run reads instead of recomputing them.
The head is then trained on those features: AdamW with the TrainConfig's schedule, label smoothing,
batch size and epochs, one jitted scan per epoch; the best-on-validation head (the last epoch
without validation) is put back into the model, which is saved like a trained classifier
(`model/`, `model_config.json`, `best.json`, `history.json`), so `load_classifier` reads it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ibo_jax import io as ibo_io
from ibo_jax.train import classifier as tc

FEATURES = "probe_features.npz"


def embed_features(model: nnx.Module, images: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    """The pooled features `model.embed(x)` [N, F] float32 of uint8 or [0, 1] images, batched."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda st, x: nnx.merge(graphdef, st).embed(x))
    out = []
    for s in range(0, len(images), batch_size):
        chunk = np.asarray(images[s:s + batch_size])
        x = chunk.astype(np.float32) / 255.0 if chunk.dtype == np.uint8 else chunk.astype(np.float32)
        padded, n = _pad(x, batch_size)
        out.append(np.asarray(fn(state, padded))[:n])
    return np.concatenate(out, 0) if out else np.zeros((0, 0), np.float32)


def _pad(x: np.ndarray, batch: int) -> tuple[np.ndarray, int]:
    n = len(x)
    if n == batch:
        return x, n
    return np.concatenate([x, np.zeros((batch - n,) + x.shape[1:], x.dtype)]), n


def _epoch_fn(tx, cfg: tc.TrainConfig, num_classes: int):
    @jax.jit
    def epoch(head, opt, feats, labels):  # feats [S, B, F], labels [S, B]
        def step(carry, batch):
            head, opt = carry
            f, y = batch
            target = optax.smooth_labels(jax.nn.one_hot(y, num_classes), cfg.label_smoothing)

            def loss_fn(h):
                return optax.softmax_cross_entropy(f @ h["kernel"] + h["bias"], target).mean()

            loss, grads = jax.value_and_grad(loss_fn)(head)
            updates, opt = tx.update(grads, opt, head)
            return (optax.apply_updates(head, updates), opt), loss

        (head, opt), losses = jax.lax.scan(step, (head, opt), (feats, labels))
        return head, opt, losses[-1]

    return epoch


def train_linear_probe(spec: tc.ModelSpec, cfg: tc.TrainConfig, *, train: tuple, workdir: str | Path,
                       key: jax.Array, val: tuple | None = None, init_weights: Any = None,
                       class_names: list[str] | None = None, seed: int = 0) -> dict:
    """Trains `model.fc` on cached `model.embed` features (see the module docstring). `train` and
    `val` are (images uint8 or [0, 1] float [N, H, W, 3], labels int [N]). Returns the summary
    `train` returns (steps, best, history, seconds, train_images_per_s)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    k_init, _ = jax.random.split(key)
    model, spec = tc.initial_model(spec, init_weights, k_init)
    if not (hasattr(model, "embed") and isinstance(getattr(model, "fc", None), nnx.Linear)):
        raise ValueError(f"freeze_backbone: a linear probe needs a classifier with embed() and an nnx.Linear fc "
                         f"(a ViT), got {type(model).__name__} (arch {spec.arch!r}); set freeze_backbone=False")
    model.eval()
    if cfg.epochs < 1:
        raise ValueError(f"epochs: a linear probe trains its head for >= 1 epoch, got {cfg.epochs}")
    y = tc.check_labels(train[1], spec.num_classes, name="train labels")
    n = len(y)
    if n < cfg.batch_size:
        raise ValueError(f"batch_size: {cfg.batch_size} is more than the {n} training examples")
    t0 = time.time()
    cache = workdir / FEATURES
    if cache.is_file():
        feats = ibo_io.read_npz(cache)
    else:
        feats = {"train": embed_features(model, train[0], batch_size=cfg.eval_batch_size)}
        if val is not None:
            feats["val"] = embed_features(model, val[0], batch_size=cfg.eval_batch_size)
        ibo_io.write_npz(cache, feats)
    feature_seconds = time.time() - t0
    steps = n // cfg.batch_size
    tx = tc.make_optimizer(cfg, cfg.epochs * steps)
    head = {"kernel": jnp.asarray(model.fc.kernel[...]), "bias": jnp.asarray(model.fc.bias[...])}
    opt = tx.init(head)
    epoch_fn = _epoch_fn(tx, cfg, spec.num_classes)
    best, best_head, history = {"accuracy": -1.0}, head, []
    yv = tc.check_labels(val[1], spec.num_classes, name="val labels") if val is not None else None
    for e in range(cfg.epochs):
        order = np.random.default_rng([seed, e]).permutation(n)[: steps * cfg.batch_size]
        f = feats["train"][order].reshape(steps, cfg.batch_size, -1)
        head, opt, loss = epoch_fn(head, opt, jnp.asarray(f), jnp.asarray(y[order].reshape(steps, -1)))
        entry = {"epoch": e + 1, "step": (e + 1) * steps, "train_loss": float(loss)}
        if yv is not None:
            logits = feats["val"] @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
            probs = np.asarray(jax.nn.softmax(logits, -1))
            vm = tc.classification_metrics(yv, probs, class_names)
            entry.update(val_accuracy=vm["accuracy"], val_loss=vm["loss"])
        score = entry.get("val_accuracy", e)
        if score > best["accuracy"]:
            best, best_head = {"accuracy": score, "epoch": e + 1, "loss": entry.get("val_loss")}, head
        history.append(entry)
    model.fc.kernel[...] = best_head["kernel"]
    model.fc.bias[...] = best_head["bias"]
    _, params, stats, _ = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    ibo_io.write_json(workdir / "model_config.json", spec.to_json())
    tc._save(workdir / "model", {"params": params, "stats": stats})
    best["linear_probe"] = True
    ibo_io.write_json(workdir / "best.json", best)
    ibo_io.write_json(workdir / "history.json", history)
    seconds = time.time() - t0
    return {"steps": cfg.epochs * steps, "finished": True, "best": best, "history": history,
            "train_seconds": seconds, "feature_seconds": feature_seconds,
            "train_images_per_s": cfg.epochs * steps * cfg.batch_size / max(seconds - feature_seconds, 1e-9)}
