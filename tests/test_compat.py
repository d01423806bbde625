"""Names that code outside the repository calls keep working: the public API of docs/design.md,
and every module that moved in 0.2 still imports from its old path (with a DeprecationWarning),
giving the same objects. Renamed config fields, stages and work directories get one line naming
the new name."""

import importlib
import sys
import warnings

import ml_collections
import pytest

from ibo_jax import pipeline

# old module path -> (new module path, names to compare)
MOVED = {
    "ibo_jax.evaluation.meta": ("ibo_jax.trust.checks", ("counterfactual_agreement", "residual_evidence",
                                                          "graded_controls", "srg", "power", "REFERENCE")),
    "ibo_jax.evaluation.randomization": ("ibo_jax.trust.randomization", ("cascade",)),
    "ibo_jax.evaluation.report": ("ibo_jax.reporting.report", ("write_report", "render_markdown",
                                                               "ground_truth_kind", "UPSTREAM_FIGURES")),
    "ibo_jax.evaluation.report_meta": ("ibo_jax.reporting.trust", ("trust_section",)),
    "ibo_jax.evaluation.figures": ("ibo_jax.reporting.figures", ("figure_deletion_curves", "figure_levels")),
    "ibo_jax.evaluation.lpips": ("ibo_jax.models.lpips", ("load_lpips", "make_lpips_fn")),
    "ibo_jax.evaluation.controls": ("ibo_jax.cam.controls", ("make", "expand", "graded_level")),
    "ibo_jax.evaluation.ddpm_check": ("ibo_jax.generator.ddpm_check", ("sample_quality",)),
    "ibo_jax.evaluation.study": ("ibo_jax.evaluation.scores", ("nanmean",)),
    "ibo_jax.evaluation.sweep": ("ibo_jax.generator.sweep", ("fill_quality", "noninferior", "pareto_front",
                                                             "parse_grid", "NONINFERIORITY")),
    "ibo_jax.evaluation.explained": ("ibo_jax.artifacts", ()),
    "ibo_jax.cam.reference": ("ibo_jax_testing.reference", ()),
}


def _fresh_import(name):
    for mod in [m for m in sys.modules if m == name]:
        del sys.modules[mod]
    return importlib.import_module(name)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_paths_warn_and_forward(old):
    new, names = MOVED[old]
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = _fresh_import(old)
    target = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(target, name), f"{old}.{name}"


def test_renamed_names_are_the_same_objects():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ibo_jax.evaluation.explained import read, twins
        from ibo_jax.evaluation.study import Study
        from ibo_jax.evaluation.sweep import Setting as SweepSetting
    from ibo_jax import artifacts, repaint
    from ibo_jax.evaluation.scores import ScoreTable

    assert Study is ScoreTable and SweepSetting is repaint.Setting
    assert read is artifacts.read_explained and twins is artifacts.twins


def test_public_api_of_the_design_document():
    from ibo_jax import cam, data, evaluation, models, occlusion, repaint

    for obj, names in (
        (models, ("resnet50", "vgg16", "inception_v3", "from_torchvision", "unet2d", "from_diffusers_unet")),
        (cam, ("METHODS", "compute")),
        (repaint, ("jump_schedule", "inpaint", "Setting")),
        (occlusion, ("STRATEGIES", "apply")),
        (evaluation, ("importance_levels", "progressive_masks", "deletion_auc", "rank", "mard",
                      "bootstrap_mean_ci", "paired_mard_test")),
        (data.synthetic, ("generate",)),
    ):
        missing = [n for n in names if not hasattr(obj, n)]
        assert not missing, (obj.__name__, missing)
    assert {"gradcam", "gradcam++", "xgradcam", "ablationcam", "fullgrad", "scorecam", "eigencam"} <= set(cam.METHODS)
    assert {"blackening", "blurring", "mean", "histogram", "nli", "ibo", "counterfactual"} <= set(occlusion.STRATEGIES)


def test_config_section_meta_names_trust(tmp_path):
    c = pipeline.default_config(("data",))
    c.meta = ml_collections.ConfigDict({"n_boot": 10})
    with pytest.raises(pipeline.PipelineError, match="section 'meta': the stage is now called 'trust'") as e:
        pipeline.run(c, tmp_path / "w")
    assert "\n" not in str(e.value)


def test_old_meta_work_directory_names_trust(tmp_path):
    w = tmp_path / "w"
    (w / "meta").mkdir(parents=True)
    (w / "meta" / pipeline.MANIFEST_FILE).write_text("{}")
    with pytest.raises(pipeline.PipelineError, match=r"'meta/' is an older ibo_jax's stage folder; the stage is now "
                                                     r"'trust'") as e:
        pipeline.run(pipeline.default_config(("data",)), w)
    assert "\n" not in str(e.value) and str(w / "meta") in str(e.value)


def test_launcher_names_trust_for_a_meta_override():
    from ibo_jax.launch import describe_flag_error

    line = describe_flag_error(KeyError("meta"), ["x", "--config", "configs/demo.py", "--config.meta.n_boot=10"])
    assert "the stage is now called 'trust'" in line
