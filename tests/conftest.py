"""Test set-up: JAX on the CPU with the persistent compilation cache on, tiny shapes."""

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


def pytest_collection_modifyitems(config, items):
    """Interop tests run when the interop extra is installed (CI installs it) and skip otherwise."""
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
