"""Classifier training and evaluation: pure jitted steps, a resumable loop, metrics, loading.

    spec = ModelSpec("resnet_small", num_classes=2)
    summary = train(spec, TrainConfig(epochs=3), train_batches=fn, steps_per_epoch=n, val=(x, y),
                    workdir=path, key=key)
    model = ibo_jax.models.loaders.load_classifier(path)   # eval mode, best-on-validation weights

ViTs: `model_spec("uni" | {ViTConfig fields}, num_classes)` gives the spec (arch 'vit', the
ViTConfig fields as kwargs); `init_weights` is then a timm or Hugging Face checkpoint
(`models.from_timm` / `models.from_hf_vit`), and `train_linear_probe` trains only the head `fc` on
the frozen backbone's pooled features `model.embed(x)`, computed once and cached.

The model is split once (`nnx.split` into graphdef, params, batch stats, rest); `train_step` and
`eval_step` are plain `jax.jit` functions of (state, batch) that `nnx.merge` inside. Batches are
sharded over the mesh axis `data`, parameters replicated (BatchNorm statistics are then global-batch
statistics: synchronized BN for free). Augmentation runs inside the step with one key per example
(`fold_in(step key, example index)`).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from ibo_jax import io as ibo_io
from ibo_jax import parallel
from ibo_jax.models.loaders import FACTORIES, ModelSpec, load_classifier, restore_pytree  # noqa: F401  (re-exported)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    lr: float = 2e-3                  # the demo's (the stage's defaults are these)
    schedule: str = "cosine"          # 'cosine' (with warmup) | 'constant'
    warmup_steps: int = 20
    weight_decay: float = 1e-4        # decoupled (AdamW); 0 = plain Adam
    label_smoothing: float = 0.0
    augment: bool = True
    jitter: float = 0.05              # brightness/contrast/saturation amplitude
    bf16: bool = False                # bf16 compute, float32 params and optimizer
    checkpoint_every: int = 200       # steps; also at the end of every epoch
    eval_batch_size: int = 128


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    if cfg.schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, min(cfg.warmup_steps, max(total_steps - 1, 1)),
                                                max(total_steps, 2), end_value=cfg.lr * 0.01)
    elif cfg.schedule == "constant":
        lr = cfg.lr
    else:
        raise ValueError(f"schedule: expected 'cosine' or 'constant', got {cfg.schedule!r}")
    if cfg.weight_decay > 0:
        return optax.adamw(lr, weight_decay=cfg.weight_decay)
    return optax.adam(lr)


def augment_example(x: jax.Array, key: jax.Array, *, jitter: float) -> jax.Array:
    """Histology augmentation of one image [H,W,3] in [0,1]: flips, 90-degree rotations (square
    images), mild brightness/contrast/saturation jitter."""
    k = jax.random.split(key, 6)
    x = jnp.where(jax.random.bernoulli(k[0]), x[:, ::-1], x)
    x = jnp.where(jax.random.bernoulli(k[1]), x[::-1], x)
    if x.shape[0] == x.shape[1]:
        rot = jax.random.randint(k[2], (), 0, 4)
        x = jax.lax.switch(rot, [lambda a, r=r: jnp.rot90(a, r, axes=(0, 1)) for r in range(4)], x)
    if jitter > 0:
        u = lambda kk: jax.random.uniform(kk, (), minval=-jitter, maxval=jitter)
        x = x + u(k[3])                                                   # brightness
        mean = jnp.mean(x, axis=(0, 1), keepdims=True)
        x = (x - mean) * (1.0 + u(k[4])) + mean                           # contrast
        gray = jnp.mean(x, axis=-1, keepdims=True)
        x = (x - gray) * (1.0 + u(k[5])) + gray                           # saturation
    return jnp.clip(x, 0.0, 1.0)


def augment_batch(x: jax.Array, keys: jax.Array, *, jitter: float) -> jax.Array:  # [B,H,W,3], [B] keys
    return jax.vmap(partial(augment_example, jitter=jitter))(x, keys)


def _images(x: jax.Array) -> jax.Array:
    return x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)


def train_step(graphdef, tx, cfg: TrainConfig, num_classes: int, state: dict, batch: dict, key: jax.Array):
    """One optimizer step. state = {params, stats, rest, opt, step}; batch = {image, label, index}."""
    x = _images(batch["image"])                                   # [B,H,W,3]
    if cfg.augment:
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, state["step"]), i))(batch["index"])
        x = augment_batch(x, keys, jitter=cfg.jitter)
    labels = optax.smooth_labels(jax.nn.one_hot(batch["label"], num_classes), cfg.label_smoothing)

    def loss_fn(params):
        # fresh Variable objects at this trace level (BatchNorm updates them in train mode)
        stats, rest = jax.tree.map(lambda a: a, (state["stats"], state["rest"]))
        model = nnx.merge(graphdef, params, stats, rest)
        logits = model(x)                                          # [B,K] float32
        loss = optax.softmax_cross_entropy(logits, labels).mean()
        _, _, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        return loss, (logits, stats, rest)

    (loss, (logits, stats, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    new = {"params": params, "stats": stats, "rest": rest, "opt": opt, "step": state["step"] + 1}
    return new, {"loss": loss, "accuracy": acc}


def eval_step(graphdef, params, stats, rest, images: jax.Array) -> jax.Array:
    """Softmax probabilities [B,K] in inference mode (running BatchNorm statistics)."""
    model = nnx.merge(graphdef, params, stats, rest)
    return jax.nn.softmax(model(_images(images)), axis=-1)


def check_labels(labels: np.ndarray, num_classes: int, *, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: expected integer class ids [N], got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name}: values must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int32)


def predict(model_or_split, images: np.ndarray, *, batch_size: int = 128, mesh=None) -> np.ndarray:
    """Probabilities [N,K] for uint8 or [0,1]-float images [N,H,W,3], batched and sharded."""
    mesh = mesh or parallel.make_mesh()
    if isinstance(model_or_split, nnx.Module):
        model_or_split.eval()
        graphdef, params, stats, rest = nnx.split(model_or_split, nnx.Param, nnx.BatchStat, ...)
        params, stats, rest = parallel.replicate((params, stats, rest), mesh)
    else:
        graphdef, params, stats, rest = model_or_split
    step = _jit_eval(graphdef)
    mult = parallel.local_batch_multiple(mesh)
    bs = max(mult, batch_size - batch_size % mult)
    out = []
    for s in range(0, len(images), bs):
        chunk = np.asarray(images[s:s + bs])
        if chunk.dtype != np.uint8:
            from ibo_jax.models.base import check_images

            check_images(chunk)
        padded, n = parallel.pad_batch(chunk, mult)
        probs = step(params, stats, rest, parallel.shard_batch(padded, mesh))
        out.append(parallel.to_host(probs)[:n])
    return np.concatenate(out, 0) if out else np.zeros((0, 0), np.float32)


@partial(jax.jit, static_argnums=0)
def _eval_jit(graphdef, params, stats, rest, images):
    return eval_step(graphdef, params, stats, rest, images)


def _jit_eval(graphdef):
    return partial(_eval_jit, graphdef)


def _save(path: Path, tree) -> None:
    """Atomic orbax save of a pytree to `path` (written beside it, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp.absolute(), tree)
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def classification_metrics(labels: np.ndarray, probs: np.ndarray, class_names: list[str] | None = None) -> dict:
    """Accuracy, NLL, per-class precision/recall/F1/support, confusion matrix, ROC AUC (sklearn)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    labels, probs = np.asarray(labels), np.asarray(probs, np.float64)
    k = probs.shape[1]
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    pred = probs.argmax(-1)
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=list(range(k)), zero_division=0)
    auc = None
    present = np.unique(labels)
    if len(present) == k and k == 2:
        auc = float(roc_auc_score(labels, probs[:, 1]))
    elif len(present) == k and k > 2:
        auc = float(roc_auc_score(labels, probs / probs.sum(1, keepdims=True), multi_class="ovr"))
    nll = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)))) if len(labels) else None
    return {
        "n": int(len(labels)),
        "accuracy": float(np.mean(pred == labels)) if len(labels) else None,
        "loss": nll,
        "per_class": {names[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                 "support": int(s[i])} for i in range(k)},
        "confusion_matrix": confusion_matrix(labels, pred, labels=list(range(k))).tolist(),
        "roc_auc": auc,
    }


def array_batches(images: np.ndarray, labels: np.ndarray, *, batch_size: int, seed: int, epoch: int,
                  index: np.ndarray | None = None) -> Iterable[dict]:
    """In-memory shuffled batches (drop remainder): {image, label, index}; a stand-in for a loader."""
    n = len(images)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    idx = np.arange(n) if index is None else np.asarray(index)
    for s in range(0, n - batch_size + 1, batch_size):
        sel = order[s:s + batch_size]
        yield {"image": images[sel], "label": labels[sel], "index": idx[sel]}


def _host_batch(batch: Mapping[str, Any], num_classes: int) -> dict:
    img = np.asarray(batch["image"])
    if img.dtype != np.uint8:
        from ibo_jax.models.base import check_images

        check_images(img, name="batch['image']")
    label = check_labels(batch["label"], num_classes, name="batch['label']")
    index = np.asarray(batch.get("index", np.arange(len(label)))).astype(np.int64) & 0x7FFFFFFF
    return {"image": img, "label": label, "index": index.astype(np.int32)}


VIT = "vit"  # ModelSpec.arch of every ViT (its kwargs are the ViTConfig fields but num_classes)


def model_spec(arch: Any, num_classes: int, kwargs: Mapping[str, Any] | None = None) -> ModelSpec:
    """The ModelSpec of `arch`: a CNN name of FACTORIES (kwargs = its constructor's), a ViT preset
    name (`models.vit_preset`; kwargs override its ViTConfig fields), a mapping of ViTConfig fields
    (optionally with 'preset': the fields override that preset; kwargs override both) or 'vit'
    (the mapping is kwargs: what a config file can say, as ConfigDict fields keep their type).
    Errors name `arch`."""
    from ibo_jax.models import vit_preset
    from ibo_jax.models.vit import ViTConfig
    from ibo_jax.models.vit_presets import PRESETS

    kwargs = dict(kwargs or {})
    if arch == VIT:  # 'vit': the ViTConfig fields are all in kwargs (a config file's model_kwargs)
        arch = {}
    if isinstance(arch, str) and arch not in PRESETS:
        if arch not in FACTORIES:
            raise ValueError(f"arch: expected a CNN of {sorted(set(FACTORIES) - {VIT})}, a ViT preset of "
                             f"{sorted(PRESETS)} or a mapping of ViTConfig fields, got {arch!r}")
        return ModelSpec(arch, int(num_classes), kwargs)
    if isinstance(arch, str):
        fields, base = kwargs, arch
    elif isinstance(arch, Mapping):
        fields = {**{k: v for k, v in dict(arch).items() if k != "preset"}, **kwargs}
        base = dict(arch).get("preset")
    else:
        raise ValueError(f"arch: expected a name or a mapping of ViTConfig fields, got {type(arch).__name__}")
    known = {f.name for f in dataclasses.fields(ViTConfig)} - {"num_classes"}
    bad = sorted(set(fields) - known)
    if bad:
        raise ValueError(f"arch: {bad} are not ViTConfig fields (num_classes is the global one); "
                         f"expected some of {sorted(known)}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    try:
        config = vit_preset(base, **fields) if base else ViTConfig(**fields)
        config = dataclasses.replace(config, num_classes=int(num_classes))
    except (ValueError, TypeError) as e:
        raise ValueError(f"arch: {e}") from e
    return vit_spec(config)


def vit_spec(config) -> ModelSpec:
    """The ModelSpec that rebuilds a ViT of ViTConfig `config`."""
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
    return ModelSpec(VIT, int(fields.pop("num_classes")), fields)


def _pretrained_vit(spec: ModelSpec, weights: Any, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """A ViT from a timm checkpoint (onto the spec's config) or a Hugging Face ViTModel /
    Dinov2Model one (a folder with config.json, or keys under `embeddings.`: its own config). A head
    the checkpoint lacks (or of another class count) is initialized from `rngs`."""
    from ibo_jax import models
    from ibo_jax.models.convert import load_state_dict
    from ibo_jax.models.vit import ViTConfig

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(spec.kwargs).items()}
    config = ViTConfig(**fields, num_classes=int(spec.num_classes))
    is_dir = isinstance(weights, (str, Path)) and Path(weights).is_dir()
    sd = None if is_dir else load_state_dict(weights)
    if is_dir or any(k.startswith(("embeddings.", "vit.embeddings.", "dinov2.embeddings.")) for k in sd):
        return models.from_hf_vit(weights if is_dir else sd, num_classes=spec.num_classes, rngs=rngs)
    return models.from_timm(config, sd, num_classes=spec.num_classes, rngs=rngs)


def _pretrained(spec: ModelSpec, weights: Any, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """`spec`'s module with a torchvision/timm checkpoint loaded (a ViT: timm or Hugging Face
    layout, `_pretrained_vit`); errors name `init_weights`."""
    from ibo_jax.models import from_torchvision

    try:
        if spec.arch == VIT:
            return _pretrained_vit(spec, weights, rngs)
        return from_torchvision(spec.arch, weights, num_classes=spec.num_classes, **dict(spec.kwargs))
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"init_weights: cannot load the checkpoint into {spec.arch} with model_kwargs "
                         f"{dict(spec.kwargs)}: {e}") from e


def initial_model(spec: ModelSpec, init_weights: Any, key: jax.Array, *, bf16: bool = False
                  ) -> tuple[nnx.Module, ModelSpec]:
    """(the module training starts from, its spec): random init from `key`, then `init_weights`
    loaded if given. A ViT read from a Hugging Face checkpoint has that checkpoint's config, which
    the returned spec records (what model_config.json holds)."""
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    model = spec.build(rngs=nnx.Rngs(seed), dtype="bfloat16" if bf16 else None)
    if init_weights is None:
        return model, spec
    loaded = _pretrained(spec, init_weights, nnx.Rngs(seed))  # a ViT's new head: the classifier seed
    if spec.arch == VIT:
        spec = vit_spec(loaded.config)
        return loaded, spec
    nnx.update(model, nnx.state(loaded))
    return model, spec


def _use_as_is(spec: ModelSpec, cfg: TrainConfig, model: nnx.Module, workdir: Path, val, mesh,
               class_names) -> dict:
    """epochs = 0: the loaded checkpoint becomes `workdir/model`, scored on the validation set."""
    model.eval()
    _, params, stats, _ = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    ibo_io.write_json(workdir / "model_config.json", spec.to_json())
    best: dict = {"accuracy": None, "epoch": 0, "loss": None, "used_as_is": True}
    if val is not None:
        probs = predict(model, val[0], batch_size=cfg.eval_batch_size, mesh=mesh)
        vm = classification_metrics(check_labels(val[1], spec.num_classes, name="val labels"), probs, class_names)
        best.update(accuracy=vm["accuracy"], loss=vm["loss"])
    _save(workdir / "model", {"params": params, "stats": stats})
    ibo_io.write_json(workdir / "best.json", best)
    ibo_io.write_json(workdir / "history.json", [])
    return {"steps": 0, "finished": True, "best": best, "history": [], "train_seconds": 0.0,
            "train_images_per_s": None}


def train(spec: ModelSpec, cfg: TrainConfig, *, train_batches: Callable[[int], Iterable[Mapping]],
          steps_per_epoch: int, workdir: str | Path, key: jax.Array, val: tuple | None = None,
          mesh=None, progress: Callable | None = None, scalar: Callable | None = None,
          class_names: list[str] | None = None, max_steps: int | None = None,
          init_weights: Any = None) -> dict:
    """Trains with resume; keeps the best-on-validation weights in `workdir/model` (+ model_config.json).

    init_weights: start from a torchvision/timm checkpoint (a path or a state dict, read by
    `models.from_torchvision`; a new head when its class count differs) instead of a random init:
    ImageNet-pretrained fine-tuning. A resumed run continues from its own checkpoint instead.
    The spec's kwargs must keep the checkpoint's tensor layout (e.g. `strides`, `mean`/`std`).
    With `cfg.epochs == 0` the checkpoint is the classifier, used as is (your own trained model):
    it is saved as the best model, with its validation accuracy, and nothing is trained.

    train_batches(epoch) yields host-local batches {image uint8|float [B,H,W,3], label [B], index [B]};
    val = (images, labels) numpy. `max_steps` stops early (a test's stand-in for a kill).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = mesh or parallel.make_mesh()
    mult = parallel.local_batch_multiple(mesh)
    if cfg.batch_size % mult:
        raise ValueError(f"batch_size: {cfg.batch_size} is not a multiple of the {mult} local devices")
    if cfg.epochs < 0:
        raise ValueError(f"epochs: expected >= 0, got {cfg.epochs}")
    if cfg.epochs == 0 and init_weights is None:
        raise ValueError("epochs: 0 means 'use init_weights as the trained classifier as is', but no "
                         "init_weights checkpoint was given (train_classifier.init_weights in a config)")
    if steps_per_epoch < 1 and cfg.epochs:
        raise ValueError(f"steps_per_epoch: expected >= 1 (fewer training examples than one batch?), got {steps_per_epoch}")
    total = cfg.epochs * steps_per_epoch
    k_init, k_aug = jax.random.split(key)
    model, spec = initial_model(spec, init_weights, k_init, bf16=cfg.bf16)
    if cfg.epochs == 0:
        return _use_as_is(spec, cfg, model, workdir, val, mesh, class_names)
    model.train()
    graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    model.eval()
    eval_graphdef = nnx.split(model, nnx.Param, nnx.BatchStat, ...)[0]
    tx = make_optimizer(cfg, total)
    state = {"params": params, "stats": stats, "rest": rest, "opt": tx.init(params), "step": jnp.int32(0)}
    ckpt_dir, best_dir = workdir / "checkpoint", workdir / "model"
    best = ibo_io.read_json(workdir / "best.json") if (workdir / "best.json").exists() else {"accuracy": -1.0}
    history = ibo_io.read_json(workdir / "history.json") if (workdir / "history.json").exists() else []
    if ckpt_dir.exists():
        saved = restore_pytree(ckpt_dir, {k: v for k, v in state.items() if k != "rest"})
        state.update(saved)
    state = parallel.replicate(state, mesh)
    start = int(state["step"])
    step_fn = jax.jit(partial(train_step, graphdef, tx, cfg, spec.num_classes), donate_argnums=0)
    ibo_io.write_json(workdir / "model_config.json", spec.to_json())
    t0, seen, stopped, step = time.time(), 0, False, start
    for epoch in range(start // steps_per_epoch, cfg.epochs):
        skip = start - epoch * steps_per_epoch if epoch == start // steps_per_epoch else 0
        it = iter(train_batches(epoch))
        bar = range(skip, steps_per_epoch)
        bar = progress(bar, total=len(bar), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step") if progress else bar
        for _b in range(skip):
            next(it)
        m = None
        for _ in bar:
            batch = _host_batch(next(it), spec.num_classes)
            state, m = step_fn(state, parallel.shard_batch(batch, mesh), k_aug)
            seen += len(batch["label"]) * jax.process_count()
            step += 1
            if scalar and step % 10 == 0:
                scalar("train/loss", float(m["loss"]), step)
                scalar("train/accuracy", float(m["accuracy"]), step)
            if step % cfg.checkpoint_every == 0 and step % steps_per_epoch:
                _save(ckpt_dir, {k: v for k, v in state.items() if k != "rest"})
            if max_steps is not None and step >= max_steps:
                stopped = True
                break
        if stopped:
            _save(ckpt_dir, {k: v for k, v in state.items() if k != "rest"})
            break
        entry = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                 "train_loss": float(m["loss"]) if m is not None else None}
        if val is not None:
            probs = predict((eval_graphdef, state["params"], state["stats"], state["rest"]), val[0],
                            batch_size=cfg.eval_batch_size, mesh=mesh)
            vm = classification_metrics(check_labels(val[1], spec.num_classes, name="val labels"), probs, class_names)
            entry.update(val_accuracy=vm["accuracy"], val_loss=vm["loss"])
            if scalar:
                scalar("val/accuracy", vm["accuracy"], entry["step"])
                scalar("val/loss", vm["loss"], entry["step"])
        score = entry.get("val_accuracy", epoch)  # without validation: the last epoch is "best"
        if score > best["accuracy"]:
            _save(best_dir, {"params": state["params"], "stats": state["stats"]})
            best = {"accuracy": score, "epoch": epoch + 1, "loss": entry.get("val_loss")}
            ibo_io.write_json(workdir / "best.json", best)
        history.append(entry)
        ibo_io.write_json(workdir / "history.json", history)
        _save(ckpt_dir, {k: v for k, v in state.items() if k != "rest"})
    seconds = time.time() - t0
    return {"steps": int(state["step"]), "finished": not stopped, "best": best, "history": history,
            "train_seconds": seconds, "train_images_per_s": seen / seconds if seconds > 0 else None}


__all__ = ["FACTORIES", "VIT", "ModelSpec", "TrainConfig", "initial_model", "model_spec", "vit_spec", "array_batches", "augment_batch", "check_labels",
           "classification_metrics", "eval_step", "load_classifier", "make_optimizer", "predict", "train",
           "train_step"]
