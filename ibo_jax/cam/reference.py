"""Deprecated: moved to `ibo_jax_testing.reference` (test and benchmark code, needs torch).

This name keeps working for now: importing it warns, and its attributes come from the new module
on first use (torch is imported then, never by `import ibo_jax.cam`).
"""

import importlib
import warnings

warnings.warn("ibo_jax.cam.reference moved to ibo_jax_testing.reference (the torch reference for parity "
              "tests and benchmarks); import it from there", DeprecationWarning, stacklevel=2)


def __getattr__(name: str):
    return getattr(importlib.import_module("ibo_jax_testing.reference"), name)
