"""One tumor class for the whole run: `config.tumor_class` is the index of the tumor logit, read by
every stage; the old per-stage fields are errors naming it."""

import csv

import ml_collections
import numpy as np
import pytest

from ibo_jax import pipeline

S = 32


def _config(tmp_path, weights, tumor_class):
    c = pipeline.default_config(("data", "train_classifier", "explain", "occlude", "score"))
    c.image_size, c.tumor_class = S, tumor_class
    c.data.source, c.data.npz_path, c.data.n_examples = "npz", str(tmp_path / "patches.npz"), 0
    t = c.train_classifier
    t.arch, t.model_kwargs, t.epochs, t.init_weights = "resnet18", {"strides": (1, 1, 1, 1)}, 0, str(weights)
    c.explain.n_images, c.explain.methods, c.explain.controls = 3, ("gradcam", "eigencam"), ("random",)
    c.occlude.curves, c.occlude.strategies = ("morf",), ("blackening", "mean")
    c.score.n_boot = 20
    return c


def test_swapped_head_with_tumor_class_0_scores_like_the_original(tmp_path):
    from flax import nnx

    from ibo_jax import models
    from ibo_jax.models.convert import to_torchvision_state_dict
    from ibo_jax_testing import write_patches_npz

    write_patches_npz(tmp_path / "patches.npz", n=12, size=S, splits={"val": 4, "test": 8})
    model = models.resnet18(num_classes=2, rngs=nnx.Rngs(1), strides=(1, 1, 1, 1))
    sd = to_torchvision_state_dict("resnet18", model)
    np.savez(tmp_path / "original.npz", **sd)
    swapped = dict(sd, **{"fc.weight": sd["fc.weight"][::-1].copy(), "fc.bias": sd["fc.bias"][::-1].copy()})
    np.savez(tmp_path / "swapped.npz", **swapped)
    # occlude's only declared input besides explain is the DDPM, needed for 'ibo' alone: left out here
    registry = {n: pipeline.STAGES[n] for n in ("data", "train_classifier", "explain", "score")}
    registry["occlude"] = pipeline.Stage("occlude", "ibo_jax.stages.occlude", deps=("explain",))
    registry = {n: registry[n] for n in ("data", "train_classifier", "explain", "occlude", "score")}

    tables = {}
    for name, weights, t in (("a", "original.npz", 1), ("b", "swapped.npz", 0)):
        pipeline.run(_config(tmp_path, tmp_path / weights, t), tmp_path / name, registry=registry)
        with open(tmp_path / name / "score" / "scores.csv") as f:
            tables[name] = list(csv.DictReader(f))
    a, b = tables["a"], tables["b"]
    assert len(a) == len(b) > 0
    for col in ("image_id", "method", "strategy", "curve", "mask", "draw", "label"):
        assert [r[col] for r in a] == [r[col] for r in b], col
    for col in ("p_tumor", "logit", "fraction"):
        np.testing.assert_allclose([float(r[col]) for r in a], [float(r[col]) for r in b], rtol=1e-5, atol=1e-6)
    # and the tumor logit really moved: the swapped head read at index 1 would give 1 - p
    p = np.array([float(r["p_tumor"]) for r in a])
    assert np.ptp(p) > 1e-3


@pytest.mark.parametrize("section,field", [("explain", "target_class"), ("score", "tumor_class"),
                                           ("ddpm_check", "tumor_class")])
def test_old_per_stage_fields_are_errors_naming_the_global(tmp_path, section, field):
    c = pipeline.default_config(("data",))
    c[section] = ml_collections.ConfigDict({field: 1})
    with pytest.raises(pipeline.PipelineError, match=rf"{section}\.{field}.*'tumor_class'"):
        pipeline.run(c, tmp_path / "w")


@pytest.mark.parametrize("value", [2, -1])
def test_tumor_class_outside_the_classes_is_refused(tmp_path, value):
    c = pipeline.default_config(("data",))
    c.tumor_class = value
    with pytest.raises(pipeline.PipelineError, match="tumor_class"):
        pipeline.run(c, tmp_path / "w")


def test_override_of_an_old_field_names_the_new_one():
    from ibo_jax.launch import describe_flag_error

    line = describe_flag_error(KeyError("target_class"), ["x", "--config", "configs/demo.py",
                                                          "--config.explain.target_class=0"])
    assert "'explain.target_class' was replaced by the global 'tumor_class'" in line
