"""Stage `finetune_ffidelity`: F-Fidelity's explanation-agnostic fine-tune of the trained classifier.

A copy of the `train_classifier` stage's model is fine-tuned on the training patches with random
pixel removal: every training image, at every step, gets a uniformly random share `beta` of its
pixels (exactly floor(beta * H * W), drawn per image and epoch from the stage's key, so the draw
does not depend on batching or on where a run resumed) set to the fill. No explanation is used.
The fill is the per-channel mean of the training images in [0, 1]; the model normalizes its input
itself (ImageNet's mean/std or the run's `input_mean`/`input_std`), so in its normalized space the
fill is the dataset mean, as the paper prescribes. The removal is applied to a batch before the
training step's own augmentation (flips and rotations move the removed pixels with the image;
colour jitter moves the fill like every other pixel); `augment = False` fine-tunes on the exact fill.

Training is `ibo_jax.train.classifier.train` started from the trained parameters and BatchNorm
statistics (its optimizer, schedule, checkpoints, resume after a kill, best-on-validation model:
clean validation accuracy), with the stage's own `lr` (default 1e-4, below training's) and `epochs`
(default 1).

Outputs (finetune_ffidelity/), the train_classifier layout, so `loaders.load_classifier(dir)` and
`occlusion.ffidelity.load_finetuned(dir)` read it:
  model_config.json, model/   the fine-tuned classifier (same architecture)
  checkpoint/, history.json, best.json   training state (resume)
  metrics.json   clean val and test metrics of the fine-tuned model and of the original, the test
                 (and val) accuracy difference in points (the paper: within 2 points), accuracy with
                 a random share beta removed (val, both models), epochs, lr, beta, the fill
The occlude stage's `ffidelity` strategy reads the model and the fill from here.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ibo_jax import rng
from ibo_jax.models import loaders
from ibo_jax.occlusion import ffidelity
from ibo_jax.train import classifier as tc


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.update(dataclasses.asdict(tc.TrainConfig()))  # the training fields (optimizer, schedule, augmentation)
    c.epochs = 1
    c.lr = 1e-4              # peak learning rate of the stage's optimizer (AdamW, cosine with warmup)
    c.warmup_steps = 0
    c.beta = 0.1             # share of each training image's pixels set to the fill at every step
    c.seed = -1              # batch order and removal draws; -1 = the global seed (the stage's key)
    return c


@dataclasses.dataclass(frozen=True)
class _FromTrained(loaders.ModelSpec):
    """The trained classifier's spec whose `build` returns the trained parameters and BatchNorm
    statistics: `train` then fine-tunes them (and writes the same model_config.json)."""

    trained: Any = dataclasses.field(default=None, compare=False, repr=False)

    def build(self, *, rngs: nnx.Rngs | None = None, dtype: Any = None) -> nnx.Module:
        model = super().build(rngs=rngs, dtype=dtype)
        # copies: the training step donates its state, the trained model keeps its own buffers
        trained = jax.tree.map(jnp.copy, nnx.state(self.trained, nnx.Param, nnx.BatchStat))
        nnx.update(model, *trained)
        return model


def removal_size(beta: float, h: int, w: int) -> int:
    if not 0.0 <= float(beta) < 1.0:
        raise ValueError(f"finetune_ffidelity.beta: expected a share in [0, 1), got {beta}")
    return int(np.floor(float(beta) * h * w + 1e-9))


@partial(jax.jit, static_argnames=("size",))
def _remove(images, key_data, fill, *, size: int):
    """Each image [B, H, W, 3] with `size` uniformly random pixels (its own key) set to `fill`."""
    keys = jax.random.wrap_key_data(key_data)

    def one(x, k):
        chosen = ffidelity.random_subset(jnp.ones(x.shape[:2], bool), k, size)
        return jnp.where(chosen[..., None], fill, x)

    return jax.vmap(one)(images, keys)


def random_removal(images: np.ndarray, ids: np.ndarray, key: jax.Array, fill, size: int) -> np.ndarray:
    """float32 images [B, H, W, 3] in [0, 1] (uint8 accepted) with `size` random pixels each set to
    `fill`; image b draws from fold(key, *ids[b]) (ids [B, P] stable ints, e.g. epoch and index)."""
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if size == 0 or len(x) == 0:
        return x
    keys = jax.random.key_data(rng.row_keys(key, np.asarray(ids, np.int64) & 0x7FFFFFFF))
    return np.asarray(_remove(x, keys, jnp.asarray(fill, jnp.float32), size=int(size)))


def training_mean(data_dir, batch_size: int = 256) -> tuple[list[float], int]:
    """(per-channel mean of the training images in [0, 1], number of training images), streamed."""
    from ibo_jax.data.patches import make_loader

    total, count = np.zeros(3, np.float64), 0
    for batch in make_loader(data_dir, "train", batch_size=batch_size, shuffle=False, num_epochs=1,
                             drop_remainder=False):
        img = np.asarray(batch["image"], np.float64)
        total += img.sum(axis=(0, 1, 2)) / (img.shape[1] * img.shape[2])
        count += len(img)
    if count == 0:
        raise ValueError(f"{data_dir}: the train split is empty; finetune_ffidelity needs training patches")
    return [float(v) for v in total / count], count


def _train_config(cfg) -> tc.TrainConfig:
    fields = {f.name for f in dataclasses.fields(tc.TrainConfig)}
    return tc.TrainConfig(**{k: cfg[k] for k in fields if k in cfg})


def run(ctx) -> dict:
    from ibo_jax.data.patches import make_loader, read_split

    t0 = time.time()
    cfg, config = ctx.cfg, ctx.config
    data_dir, original_dir = ctx.input_dir("data"), ctx.input_dir("train_classifier")
    num_classes = int(config.num_classes)
    class_names = list(config.get("class_names", [str(i) for i in range(num_classes)]))
    tcfg = _train_config(cfg)
    if tcfg.epochs < 1:
        raise ValueError(f"finetune_ffidelity.epochs: expected >= 1, got {tcfg.epochs}")
    beta = float(cfg.beta)
    own = int(cfg.get("seed", -1))
    seed, key = (int(config.seed), ctx.key) if own < 0 else (own, rng.fold(rng.root_key(own), ctx.name))
    k_train, k_remove, k_val = (rng.fold(key, s) for s in ("train", "removal", "val_removed"))

    original = loaders.load_classifier(original_dir)
    spec = loaders.classifier_spec(original_dir)
    fill, n_train = training_mean(data_dir)
    size = removal_size(beta, int(config.image_size), int(config.image_size))
    if tcfg.batch_size % ctx.process_count:
        raise ValueError(f"finetune_ffidelity.batch_size: {tcfg.batch_size} must be a multiple of "
                         f"{ctx.process_count} processes")
    local_bs = tcfg.batch_size // ctx.process_count
    steps_per_epoch = n_train // tcfg.batch_size

    def train_batches(epoch: int):
        loader = make_loader(data_dir, "train", batch_size=local_bs, shuffle=True, seed=seed * 1009 + epoch,
                             num_epochs=1, shard_index=ctx.process_index, shard_count=ctx.process_count,
                             drop_remainder=True)
        for batch in loader:
            index = np.asarray(batch["index"], np.int64)
            ids = np.stack([np.full_like(index, epoch), index], 1)
            yield {"image": random_removal(batch["image"], ids, k_remove, fill, size),
                   "label": batch["label"], "index": index}

    val = read_split(data_dir, "val")
    summary = tc.train(_FromTrained(spec.arch, spec.num_classes, spec.kwargs, trained=original), tcfg,
                       train_batches=train_batches, steps_per_epoch=steps_per_epoch, workdir=ctx.dir, key=k_train,
                       val=(val["image"], val["label"]), mesh=ctx.mesh, progress=ctx.progress,
                       scalar=ctx.scalar, class_names=class_names)
    finetuned = loaders.load_classifier(ctx.dir)

    test = read_split(data_dir, "test")
    val_removed = random_removal(val["image"], val["index"][:, None], k_val, fill, size)
    metrics = {"epochs": tcfg.epochs, "lr": tcfg.lr, "schedule": tcfg.schedule, "batch_size": tcfg.batch_size,
               "augment": tcfg.augment, "beta": beta, "pixels_removed_per_image": size, "fill": fill,
               "fill_is": "per-channel mean of the training images in [0, 1]; the model's own input "
                          "normalization maps it to the dataset mean in its normalized space",
               "n_train": n_train, "steps": summary["steps"], "best": summary["best"],
               "history": summary["history"], "class_names": class_names, "arch": spec.to_json()}
    for name, model in (("original", original), ("finetuned", finetuned)):
        m = {}
        for split, images, labels in (("val", val["image"], val["label"]), ("test", test["image"], test["label"]),
                                      ("val_removed", val_removed, val["label"])):
            probs = tc.predict(model, images, batch_size=tcfg.eval_batch_size, mesh=ctx.mesh)
            m[split] = tc.classification_metrics(labels, probs, class_names)
        metrics[name] = m
    for split in ("val", "test", "val_removed"):
        a, b = metrics["original"][split]["accuracy"], metrics["finetuned"][split]["accuracy"]
        diff = None if a is None or b is None else 100.0 * (b - a)
        metrics[f"{split}_accuracy"] = {"original": a, "finetuned": b, "difference_points": diff}
    d = metrics["test_accuracy"]["difference_points"]
    metrics["test_accuracy"]["within_2_points"] = None if d is None else bool(abs(d) <= 2.0)
    if ctx.process_index == 0:
        ffidelity.write_metrics(ctx.dir, metrics)
    for split in ("val", "test"):
        ctx.scalar(f"{split}/accuracy_finetuned", metrics[f"{split}_accuracy"]["finetuned"] or 0.0, summary["steps"])
    return {"epochs": tcfg.epochs, "lr": tcfg.lr, "beta": beta, "steps": summary["steps"], "fill": fill,
            "val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics["test_accuracy"],
            "val_removed_accuracy": metrics["val_removed_accuracy"], "seconds": round(time.time() - t0, 2)}
