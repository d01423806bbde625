"""Classifier training on tiny in-memory arrays: steps, augmentation, resume, best model, metrics."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ibo_jax.train import classifier as tc


def _toy(n: int, hw: int = 16, seed: int = 0):
    """Class 1 has a bright square; class 0 is noise."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, hw, hw, 3)) * 120).astype(np.uint8)
    y = (np.arange(n) % 2).astype(np.int32)
    x[y == 1, 4:12, 4:12] = 230
    return x, y


SPEC = tc.ModelSpec("resnet_small", 2, {"widths": (8, 16), "layers": (1, 1), "strides": (1, 2)})
CFG = tc.TrainConfig(epochs=2, batch_size=8, lr=3e-3, warmup_steps=2, checkpoint_every=3, eval_batch_size=16)


def _run(tmp, x, y, **kw):
    return tc.train(SPEC, kw.pop("cfg", CFG), train_batches=lambda e: tc.array_batches(x, y, batch_size=8, seed=0, epoch=e),
                    steps_per_epoch=len(x) // 8, workdir=tmp, key=jax.random.key(0), val=(x, y), **kw)


def test_train_resume_and_load(tmp_path):
    x, y = _toy(32)
    full = _run(tmp_path / "a", x, y)
    assert full["finished"] and full["steps"] == 8 and len(full["history"]) == 2
    part = _run(tmp_path / "b", x, y, max_steps=5)          # "killed" after 5 steps (mid epoch 2)
    assert not part["finished"] and part["steps"] == 5
    resumed = _run(tmp_path / "b", x, y)
    assert resumed["finished"] and resumed["steps"] == 8
    a, b = tc.load_classifier(tmp_path / "a"), tc.load_classifier(tmp_path / "b")
    pa, pb = tc.predict(a, x), tc.predict(b, x)
    assert pa.shape == (32, 2)
    np.testing.assert_allclose(pa, pb, atol=1e-5)            # resume == uninterrupted run
    m = tc.classification_metrics(y, pa, ["normal", "tumor"])
    assert set(m) >= {"accuracy", "per_class", "confusion_matrix", "roc_auc"}
    assert sum(map(sum, m["confusion_matrix"])) == 32 and m["per_class"]["tumor"]["support"] == 16


def test_augmentation_per_example_keys():
    x = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(np.arange(4))
    a = np.asarray(tc.augment_batch(x, keys, jitter=0.05))
    b = np.asarray(tc.augment_batch(x[::-1].copy(), keys[::-1], jitter=0.05))[::-1]  # other order, same ids
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a.min() >= 0 and a.max() <= 1
    no_jit = np.asarray(tc.augment_batch(x, keys, jitter=0.0))
    for i in range(4):  # without jitter, each output is a dihedral transform of its input
        ref = np.sort(x[i].ravel())
        np.testing.assert_allclose(np.sort(no_jit[i].ravel()), ref, atol=1e-6)


def test_bad_inputs(tmp_path):
    x, y = _toy(16)
    with pytest.raises(ValueError, match=r"batch\['label'\]: values must lie in \[0, 2\)"):
        _run(tmp_path / "c", x, y + 1)
    with pytest.raises(ValueError, match="values must lie in \\[0, 1\\]"):
        _run(tmp_path / "d", x.astype(np.float32), y)
    with pytest.raises(ValueError, match="arch: expected one of"):
        tc.ModelSpec("resnet9", 2).build()
    with pytest.raises(FileNotFoundError, match="model_config.json"):
        tc.load_classifier(tmp_path)


def test_fine_tune_from_torchvision_weights(tmp_path):
    """init_weights: the backbone starts from the checkpoint, the head is new (other class count)."""
    from flax import nnx

    from ibo_jax import models
    from ibo_jax.models.convert import to_torchvision_state_dict

    source = models.resnet18(num_classes=10, rngs=nnx.Rngs(7))
    ckpt = to_torchvision_state_dict("resnet18", source)
    np.savez(tmp_path / "r18.npz", **ckpt)
    x, y = _toy(16, hw=32)
    spec = tc.ModelSpec("resnet18", 2)
    frozen = tc.TrainConfig(epochs=1, batch_size=8, lr=0.0, warmup_steps=0, weight_decay=0.0,
                            augment=False, eval_batch_size=16, schedule="constant")
    tc.train(spec, frozen, train_batches=lambda e: tc.array_batches(x, y, batch_size=8, seed=0, epoch=e),
             steps_per_epoch=1, workdir=tmp_path / "w", key=jax.random.key(0), val=(x, y),
             init_weights=str(tmp_path / "r18.npz"))
    tuned = tc.load_classifier(tmp_path / "w")
    np.testing.assert_array_equal(np.asarray(tuned.conv1.kernel[...]), np.asarray(source.conv1.kernel[...]))
    assert tuned.fc.kernel[...].shape[-1] == 2
    with pytest.raises(ValueError, match="init_weights"):
        tc.train(SPEC, CFG, train_batches=lambda e: tc.array_batches(x, y, batch_size=8, seed=0, epoch=e),
                 steps_per_epoch=1, workdir=tmp_path / "v", key=jax.random.key(0), init_weights=ckpt)


def test_own_classifier_used_as_is(tmp_path):
    """epochs = 0 + init_weights: the checkpoint is the classifier (no training), with its own
    input normalization and layout-preserving kwargs; load_classifier gives the same predictions."""
    from flax import nnx

    from ibo_jax import models
    from ibo_jax.models.convert import to_torchvision_state_dict

    norm = {"mean": (0.7, 0.5, 0.7), "std": (0.15, 0.2, 0.1)}  # an H&E-style normalization, not ImageNet's
    mine = models.resnet18(num_classes=2, rngs=nnx.Rngs(3), strides=(1, 2, 2, 1), **norm)
    np.savez(tmp_path / "mine.npz", **to_torchvision_state_dict("resnet18", mine))
    x, y = _toy(16, hw=32)
    spec = tc.ModelSpec("resnet18", 2, {"strides": (1, 2, 2, 1), **norm})
    as_is = tc.TrainConfig(epochs=0, batch_size=8, eval_batch_size=16)
    out = tc.train(spec, as_is, train_batches=lambda e: pytest.fail("nothing may be trained"), steps_per_epoch=0,
                   workdir=tmp_path / "w", key=jax.random.key(0), val=(x, y), init_weights=str(tmp_path / "mine.npz"))
    assert out["steps"] == 0 and out["finished"] and out["best"]["used_as_is"]
    loaded = tc.load_classifier(tmp_path / "w")
    assert loaded.mean == norm["mean"] and loaded.std == norm["std"]
    np.testing.assert_allclose(tc.predict(loaded, x), tc.predict(mine, x), atol=1e-5)
    assert out["best"]["accuracy"] == tc.classification_metrics(y, tc.predict(mine, x))["accuracy"]
    with pytest.raises(ValueError, match="epochs: 0 means"):
        tc.train(spec, as_is, train_batches=None, steps_per_epoch=0, workdir=tmp_path / "x", key=jax.random.key(0))
    with pytest.raises(ValueError, match="init_weights: cannot load"):  # a layout the checkpoint does not have
        tc.train(tc.ModelSpec("resnet34", 2), as_is, train_batches=None, steps_per_epoch=0,
                 workdir=tmp_path / "y", key=jax.random.key(0), init_weights=str(tmp_path / "mine.npz"))
    with pytest.raises(ValueError, match="std: expected 3 per-channel values > 0"):
        models.resnet18(num_classes=2, std=(0.2, 0.0, 0.2))


def test_stage_with_your_own_classifier(tmp_path):
    """The pipeline's train_classifier stage with epochs = 0: your checkpoint, your normalization,
    scored on the val and test splits; nothing trained."""

    from flax import nnx

    from ibo_jax import io as ibo_io
    from ibo_jax import models, pipeline
    from ibo_jax.models.convert import to_torchvision_state_dict
    from ibo_jax_testing import demo_config

    x, y = _toy(24, hw=32)
    ibo_io.write_npz(tmp_path / "patches.npz", {"image": x, "label": y, "tumor_mask": np.zeros((24, 32, 32), bool),
                                                "split": np.array(["train"] * 8 + ["val"] * 8 + ["test"] * 8)})
    mine = models.resnet18(num_classes=2, rngs=nnx.Rngs(5), mean=(0.6, 0.5, 0.6), std=(0.2, 0.2, 0.2))
    np.savez(tmp_path / "mine.npz", **to_torchvision_state_dict("resnet18", mine))
    config = demo_config()
    config.image_size = 32
    config.data.source, config.data.npz_path, config.data.n_examples = "npz", str(tmp_path / "patches.npz"), 0
    tcfg = config.train_classifier
    tcfg.arch, tcfg.model_kwargs, tcfg.epochs = "resnet18", {}, 0
    tcfg.init_weights, tcfg.input_mean, tcfg.input_std = str(tmp_path / "mine.npz"), (0.6, 0.5, 0.6), (0.2, 0.2, 0.2)
    pipeline.run(config, tmp_path / "w", stages=["data", "train_classifier"])
    metrics = ibo_io.read_json(tmp_path / "w" / "train_classifier" / "metrics.json")
    assert metrics["best"]["used_as_is"] and metrics["history"] == [] and metrics["test"]["n"] == 8
    loaded = tc.load_classifier(tmp_path / "w" / "train_classifier")
    np.testing.assert_allclose(tc.predict(loaded, x[16:]), tc.predict(mine, x[16:]), atol=1e-5)
    assert metrics["test"]["accuracy"] == tc.classification_metrics(y[16:], tc.predict(mine, x[16:]))["accuracy"]
    tcfg.input_std = (0.2, 0.2)
    with pytest.raises(ValueError, match=r"train_classifier.input_std: expected 3 values"):
        pipeline.run(config, tmp_path / "w", stages=["train_classifier"])


def test_classifier_seed_is_its_own_and_defaults_to_the_global(tmp_path, stage_context):
    import jax

    from ibo_jax import pipeline, rng
    from ibo_jax.stages import train_classifier

    config = pipeline.default_config(("data", "train_classifier"))
    config.seed = 3
    ctx = stage_context("train_classifier", tmp_path, config=config, seed=3)
    seed, key = train_classifier.training_seed_and_key(ctx)
    assert seed == 3 and (jax.random.key_data(key) == jax.random.key_data(ctx.key)).all()
    config.train_classifier.seed = 7  # the data and the evaluation set keep the global seed 3
    seed, key = train_classifier.training_seed_and_key(ctx)
    want = rng.fold(rng.root_key(7), "train_classifier")
    assert seed == 7 and (jax.random.key_data(key) == jax.random.key_data(want)).all()
