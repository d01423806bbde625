"""Stage `train_classifier`: train the tumor/normal classifier on the `data` stage's patches.

Outputs (train_classifier/):
  model_config.json   arch, num_classes, constructor kwargs (what `load_classifier` rebuilds)
  model/              orbax: best-on-validation params + BatchNorm statistics
  checkpoint/         orbax: the latest training state (resume after a kill)
  history.json, best.json
  metrics.json        val and test: accuracy, loss, per-class precision/recall/F1, confusion
                      matrix, ROC AUC; plus the training history
Read the model back with `ibo_jax.models.loaders.load_classifier(stage_dir)`.

ViTs: `arch` is a ViT preset name (`models.vit_preset`: uni, virchow2, ..., tiny; `model_kwargs`
then override its ViTConfig fields), or 'vit' with `model_kwargs` the ViTConfig fields (an optional
'preset' among them: the others override it), or (library use) a mapping of ViTConfig fields; `input_mean`/`input_std` set its input normalization. `init_weights` is then a
timm checkpoint (.bin/.pth/.safetensors, `models.from_timm`) or a Hugging Face ViTModel /
Dinov2Model checkpoint or folder (`models.from_hf_vit`; the checkpoint's own config is used).
`freeze_backbone = True` trains a linear probe (`ibo_jax.train.probe`): the backbone's pooled
features `model.embed(x)` are computed once (without augmentation) and cached in
probe_features.npz, and only the head `model.fc` is trained; False fine-tunes every weight.

Your own trained classifier instead of training one: `init_weights` = its torchvision-layout
checkpoint, `epochs = 0`, and `input_mean`/`input_std` if it was trained with another input
normalization than ImageNet's. It is then scored on the val and test splits like a trained one.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import ml_collections
import numpy as np

from ibo_jax import artifacts
from ibo_jax import io as ibo_io
from ibo_jax.train import classifier as tc


def default_config() -> ml_collections.ConfigDict:
    """Demo-sized: a stride-8 ResNet (64x64 patches -> 8x8 CAM maps)."""
    c = ml_collections.ConfigDict()
    c.arch = "resnet_small"   # or resnet18/34/50/101, vgg16, inception_v3, or cnn_small (plain CNN,
    #                           no skips; model_kwargs widths/convs/strides instead of layers)
    c.model_kwargs = ml_collections.ConfigDict({"widths": (16, 32, 64), "layers": (1, 1, 1),
                                                "strides": (2, 2, 2)})
    c.update(dataclasses.asdict(tc.TrainConfig()))  # one set of training defaults: TrainConfig's
    c.limit_train = 0         # 0 = all training patches
    c.init_weights = ""       # torchvision/timm checkpoint (.pth/.safetensors/.npz) to fine-tune from;
    #                           with epochs = 0 it is the classifier, used as is (bring your own model);
    #                           a ViT: a timm or Hugging Face checkpoint (a foundation model)
    c.freeze_backbone = False  # True: a linear probe (cached model.embed features, only model.fc trained)
    c.input_mean = ()         # the input normalization the weights expect, RGB for images in [0, 1];
    c.input_std = ()          # () = the architecture's default (ImageNet's mean/std)
    # the classifier's own seed (initialization, batch order, augmentation); -1 = the global seed.
    # The data, the evaluation set and the DDPM keep the global seed, so classifier seeds can be
    # compared on the same patches.
    c.seed = -1
    return c


def training_seed_and_key(ctx) -> tuple[int, object]:
    """(seed of the batch order, key of the initialization and augmentation) of this classifier:
    the global seed and the stage's key, or those of `train_classifier.seed` when it is >= 0."""
    from ibo_jax import rng

    own = int(ctx.cfg.get("seed", -1))
    if own < 0:
        return int(ctx.config.seed), ctx.key
    return own, rng.fold(rng.root_key(own), ctx.name)


def loaders_spec(stage_dir):
    """The spec the stage wrote (a ViT read from a Hugging Face checkpoint has that one's config)."""
    from ibo_jax.models.loaders import classifier_spec

    return classifier_spec(stage_dir)


def _train_config(cfg: ml_collections.ConfigDict) -> tc.TrainConfig:
    fields = {f.name for f in tc.TrainConfig.__dataclass_fields__.values()}
    return tc.TrainConfig(**{k: cfg[k] for k in fields if k in cfg})


def run(ctx) -> dict:
    from ibo_jax.data.patches import make_loader, read_split

    t0 = time.time()
    cfg, config = ctx.cfg, ctx.config
    data_dir = ctx.input_dir("data")
    num_classes = int(config.num_classes)
    class_names = list(config.get("class_names", [str(i) for i in range(num_classes)]))
    kwargs = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in cfg.model_kwargs.items()}
    arch = ibo_io.plain(cfg.arch) if isinstance(cfg.arch, ml_collections.ConfigDict) else cfg.arch
    vit = not isinstance(arch, str) or arch == tc.VIT or arch not in tc.FACTORIES
    for field, name in (("input_mean", "mean"), ("input_std", "std")):
        value = tuple(float(v) for v in cfg.get(field, ()))
        if value and len(value) != 3:
            raise ValueError(f"train_classifier.{field}: expected 3 values (R, G, B) or (), got {value}")
        if value:
            kwargs[field if vit else name] = value
    try:
        spec = tc.model_spec(arch, num_classes, kwargs)
    except ValueError as e:
        raise ValueError(f"train_classifier.{e}") from e
    tcfg = _train_config(cfg)
    limit = int(cfg.limit_train) or None
    probe = bool(cfg.get("freeze_backbone", False))
    if probe and tcfg.epochs == 0:
        raise ValueError("train_classifier.freeze_backbone: True trains the head (a linear probe); with epochs = 0 "
                         "nothing is trained: set epochs >= 1 or freeze_backbone = False")
    train_split = read_split(data_dir, "train", limit=limit)
    n_train = len(train_split["label"])
    global_bs = tcfg.batch_size
    if global_bs % ctx.process_count:
        raise ValueError(f"train_classifier.batch_size: {global_bs} must be a multiple of {ctx.process_count} processes")
    local_bs = global_bs // ctx.process_count
    steps_per_epoch = n_train // global_bs

    seed, key = training_seed_and_key(ctx)

    def train_batches(epoch: int):
        loader = make_loader(data_dir, "train", batch_size=local_bs, shuffle=True,
                             seed=seed * 1009 + epoch, num_epochs=1,
                             shard_index=ctx.process_index, shard_count=ctx.process_count,
                             drop_remainder=True)
        return loader

    val = read_split(data_dir, "val")
    if probe:
        from ibo_jax.train.probe import train_linear_probe

        summary = train_linear_probe(spec, tcfg, train=(train_split["image"], train_split["label"]),
                                     val=(val["image"], val["label"]), workdir=ctx.dir, key=key,
                                     init_weights=str(cfg.init_weights) or None, class_names=class_names, seed=seed)
    else:
        del train_split
        summary = tc.train(spec, tcfg, train_batches=train_batches, steps_per_epoch=steps_per_epoch,
                           workdir=ctx.dir, key=key, val=(val["image"], val["label"]), mesh=ctx.mesh,
                           progress=ctx.progress, scalar=ctx.scalar, class_names=class_names,
                           init_weights=str(cfg.init_weights) or None)
    spec = loaders_spec(ctx.dir)
    model = tc.load_classifier(ctx.dir)
    metrics = {"class_names": class_names, "best": summary["best"], "history": summary["history"],
               "arch": spec.to_json()}
    t_eval = time.time()
    for split, arrays in (("val", val), ("test", read_split(data_dir, "test"))):
        probs = tc.predict(model, arrays["image"], batch_size=tcfg.eval_batch_size, mesh=ctx.mesh)
        metrics[split] = tc.classification_metrics(arrays["label"], probs, class_names)
        ctx.scalar(f"{split}/final_accuracy", metrics[split]["accuracy"], summary["steps"])
    n_eval = len(val["label"]) + metrics["test"]["n"]
    metrics["eval_images_per_s"] = n_eval / max(time.time() - t_eval, 1e-9)
    metrics["train_images_per_s"] = summary["train_images_per_s"]
    if ctx.process_index == 0:
        artifacts.write_json(artifacts.CLASSIFIER_METRICS, ctx.dir, metrics)
    return {
        "arch": spec.arch if spec.arch != tc.VIT else {"vit": dict(spec.kwargs)},
        "freeze_backbone": probe, "n_train": n_train, "steps": summary["steps"],
        "val_accuracy": metrics["val"]["accuracy"], "test_accuracy": metrics["test"]["accuracy"],
        "test_roc_auc": metrics["test"]["roc_auc"], "best_epoch": summary["best"].get("epoch"),
        "train_images_per_s": summary["train_images_per_s"], "seconds": time.time() - t0,
        "devices": int(np.prod(ctx.mesh.devices.shape)), "jax_backend": jax.default_backend(),
    }
