"""The main user's flow end to end: their own patches (evaluation only, no train split), their own
trained classifier (torchvision layout, their input normalization) and their own DDPM (diffusers),
all used as is: nothing is trained, every later stage runs, and the report is written."""

import numpy as np
import pytest

from ibo_jax import io as ibo_io
from ibo_jax import pipeline

S = 32


@pytest.mark.slow
def test_own_classifier_ddpm_and_patches_end_to_end(tmp_path, demo_config):
    from flax import nnx

    from ibo_jax import models
    from ibo_jax.models.convert import to_torchvision_state_dict

    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from ibo_jax_testing import write_patches_npz
    from ibo_jax_testing.models import diffusers_pipeline_dir

    diffusers_pipeline_dir(tmp_path / "ddpm", size=16)  # a random diffusers DDPM at 16 px
    write_patches_npz(tmp_path / "patches.npz", n=24, size=S, splits={"val": 8, "test": 16})
    norm = {"mean": (0.6, 0.4, 0.6), "std": (0.2, 0.2, 0.2)}
    mine = models.resnet18(num_classes=2, rngs=nnx.Rngs(1), strides=(1, 1, 1, 1), **norm)  # 8x8 CAM maps at 32 px
    np.savez(tmp_path / "classifier.npz", **to_torchvision_state_dict("resnet18", mine))

    c = demo_config
    c.image_size = S
    c.data.source, c.data.npz_path, c.data.n_examples = "npz", str(tmp_path / "patches.npz"), 0
    t = c.train_classifier
    t.arch, t.model_kwargs, t.epochs = "resnet18", {"strides": (1, 1, 1, 1)}, 0
    t.init_weights, t.input_mean, t.input_std = str(tmp_path / "classifier.npz"), norm["mean"], norm["std"]
    d = c.train_ddpm
    d.init_weights, d.num_steps, d.image_size, d.n_samples, d.sample_steps = str(tmp_path / "ddpm"), 0, 0, 4, 5
    c.explain.n_images = 4
    c.explain.methods = ("gradcam", "xgradcam", "eigencam")  # the fast ones: this tests the flow
    c.explain.controls = ("random", "oracle")
    c.trust.randomization_images, c.trust.n_boot = 2, 100
    c.occlude.curves = ("morf",)
    c.occlude.strategies = ("blackening", "blurring", "ibo")
    del c["finetune_ffidelity"]  # no training patches to fine-tune on; F-Fidelity is not run
    c.explain.derived_controls = ()  # they need the fixed-fraction curve
    c.occlude.ibo.t_T, c.occlude.ibo.jump_length, c.occlude.ibo.jump_n_sample = 5, 1, 1
    c.ddpm_check.n_samples = 8
    c.repaint_sweep.grid = ((5, 1, 1),)
    c.repaint_sweep.rank_images = 2
    summary = pipeline.run(c, tmp_path / "w")

    w = tmp_path / "w"
    assert ibo_io.read_json(w / "train_classifier" / "metrics.json")["best"]["used_as_is"]
    assert ibo_io.read_json(w / "train_ddpm" / "model.json")["schedule"]["T"] == 50  # the diffusers scheduler's
    scores = (w / "score" / "scores.csv").read_text().splitlines()
    assert scores[0].startswith("image_id") and len(scores) > 1
    s = ibo_io.read_json(w / "score" / "summary.json")
    q = ibo_io.read_json(w / "ddpm_check" / "summary.json")
    assert s["n_images"] == 4 and "train_normal" not in q["kid"]  # no training patches
    assert len(s["gt"]["ranking"]) == 3 and set(s["strategies"]) == {"blackening", "blurring", "ibo"}
    report = (w / "report" / "report.md").read_text()
    assert "Plausibility verdict (IoU with the annotation" in report and "Can this verdict be trusted?" in report
    assert "Faithfulness verdict" not in report and "no known answer" in report  # own patches: no twins
    m = ibo_io.read_json(w / "trust" / "summary.json")  # not synthetic: no twins, said so
    assert "only synthetic patches" in m["counterfactual"]["unavailable"] and m["randomization"]["steps"]
    assert (w / "report" / "report.md").is_file() and (w / "repaint_sweep" / "sweep.csv").is_file()
    ran = {r["stage"]: r["status"] for r in summary["stages"]}
    assert set(ran.values()) == {"ran"} and {"train_classifier", "train_ddpm", "score", "report"} <= set(ran)
