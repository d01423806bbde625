"""Test set-up: JAX on the CPU with the persistent compilation cache on, tiny shapes.

Fixtures (helpers themselves live in `ibo_jax_testing`, importable by benchmarks and workers too):
  demo_config          a fresh configs/demo.py ConfigDict (change it freely)
  stage_context        factory: stage_context("occlude", tmp_path, cfg, config, inputs=("explain",))
                       -> pipeline.StageContext in tmp_path/occlude (see ibo_jax_testing.stage_context)
  colour_classifier    the 3-colour linear classifier (red square = tumor), an NNX module
  toy_eps_model        factory: toy_eps_model(image_size=16, T=1000) -> EpsModel with eps = 0.5 x
Slow tests (`@pytest.mark.slow`, > ~30 s on 2 CPU cores) are skipped unless `--runslow` or
IBO_JAX_SLOW=1 (scripts/test.sh passes --runslow: CI runs them all).
"""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

_CACHE = Path(os.environ.get("IBO_JAX_TEST_CACHE", Path(__file__).resolve().parent.parent / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow (> ~30 s on 2 CPU cores); or IBO_JAX_SLOW=1")


def run_slow(config) -> bool:
    return bool(config.getoption("--runslow")) or os.environ.get("IBO_JAX_SLOW") == "1"


def pytest_collection_modifyitems(config, items):
    """Slow tests run with --runslow or IBO_JAX_SLOW=1. Interop tests run when the interop extra
    is installed (CI installs it) and skip otherwise."""
    if not run_slow(config):
        skip_slow = pytest.mark.skip(reason="slow: run with --runslow or IBO_JAX_SLOW=1")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip_slow)
    missing = [m for m in ("torch",) if not _have(m)]
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"interop extra not installed (missing: {', '.join(missing)})")
    for item in items:
        if "interop" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_leaked_torchvision_stand_in():
    """Some interop tests register a minimal `torchvision` stand-in (the real one cannot be
    installed beside the CPU torch); it must not leak into later tests (diffusers probes it)."""
    import sys

    def names():
        return {k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")}

    before = names()
    yield
    for name in names() - before:
        del sys.modules[name]


@pytest.fixture
def demo_config():
    """configs/demo.py's config, fresh for each test."""
    from ibo_jax_testing import demo_config

    return demo_config()


@pytest.fixture
def stage_context():
    """Factory for a pipeline.StageContext (ibo_jax_testing.stage_context); closes its writers."""
    from ibo_jax_testing import stage_context as make

    made = []

    def factory(*args, **kwargs):
        made.append(make(*args, **kwargs))
        return made[-1]

    yield factory
    for ctx in made:
        ctx.close()


@pytest.fixture
def write_explained():
    """Factory: write_explained(explain_dir, image=, tumor_mask=, heat=, methods=, controls=(), k=5)
    writes an explain stage's outputs through ibo_jax.artifacts (ibo_jax_testing.write_explained)."""
    from ibo_jax_testing import write_explained

    return write_explained


@pytest.fixture
def colour_classifier():
    from ibo_jax_testing.models import colour_classifier

    return colour_classifier()


@pytest.fixture
def toy_eps_model():
    """Factory: toy_eps_model(image_size=16, T=1000, a=0.5) -> EpsModel with eps = a * x_t."""
    from ibo_jax_testing.models import toy_eps_model

    return toy_eps_model
