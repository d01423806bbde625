"""Every experiment file in configs/ loads and sets only fields the stages define (a typo in a
config file would otherwise add a field nobody reads)."""

import importlib.util
from pathlib import Path

import pytest

from ibo_jax import pipeline

# free-form sections: a model's constructor keywords, a strategy's keyword arguments
FREE = ("train_classifier.model_kwargs.", "occlude.strategy_options.", "occlude.curve_images.",
        "occlude.control_images.")  # open mappings (strategy -> options or patch counts)
CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.py"))
VARIANTS = ([(p, None) for p in CONFIGS] + [(p, "full") for p in CONFIGS if p.stem == "repaint_sweep"]
            + [(p, "cpu") for p in CONFIGS if p.stem == "own_models"]
            + [(p, a) for p in CONFIGS if p.stem == "benchmark" for a in ("gpu", "tiny", "roar")])


def _load(path, arg=None):
    spec = importlib.util.spec_from_file_location(f"cfg_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _leaves(c, prefix=""):
    out = {}
    for k, v in c.items():
        if hasattr(v, "items") and not isinstance(v, dict):  # a ConfigDict section
            out.update(_leaves(v, f"{prefix}{k}."))
        else:  # a value, or a free-form dict (model_kwargs)
            out[prefix + k] = v
    return out


@pytest.mark.parametrize("path, arg", VARIANTS, ids=[f"{p.stem}:{a}" if a else p.stem for p, a in VARIANTS])
def test_config_sets_only_known_fields(path, arg):
    config = _load(path, arg)
    stages = tuple(s for s in pipeline.STAGES if s in config)
    assert stages, f"{path.name}: no stage section"
    listed = [s for s in str(config.get("stages", "")).split(",") if s]
    for name in listed:  # a fresh work directory runs them all: every input must be listed too
        assert name in config, f"{path.name}: stages lists {name!r}, which has no section"
        missing = [d for d in pipeline.STAGES[name].deps if d not in listed]
        assert not missing, f"{path.name}: stages lists {name!r} but not its inputs {missing}"
    known = set(_leaves(pipeline.default_config(stages)))
    if "grid" in config:  # a benchmark grid: its own section, and every cell a valid study config
        from ibo_jax import grid

        known |= {f"grid.{k}" for k in _leaves(grid.default_config())}
        for cell in grid.cells(config):
            extra = set(_leaves(cell.config)) - known
            assert not {k for k in extra if not k.startswith(FREE)}, (cell.name, extra)
    free = FREE + ("grid.variants.", "grid.arch_kwargs.")
    unknown = {k for k in set(_leaves(config)) - known if not k.startswith(free)}
    assert not unknown, f"{path.name}: fields no stage defines: {sorted(unknown)}"





def test_pcam_config_classifier_gives_6x6_maps():
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ibo_jax.train.classifier import ModelSpec

    config = _load(next(p for p in CONFIGS if p.stem == "pcam"))
    assert config.data.source == "pcam" and config.image_size == 96
    kwargs = {k: tuple(v) if isinstance(v, (list, tuple)) else v
              for k, v in config.train_classifier.model_kwargs.items()}
    spec = ModelSpec(config.train_classifier.arch, 2, kwargs)
    model = nnx.eval_shape(lambda: spec.build(rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((1, 96, 96, 3), jnp.float32)
    graphdef, state = nnx.split(model)
    feats = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).features(x), state, x)
    assert feats.shape[1:3] == (6, 6)
