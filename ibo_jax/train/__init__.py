"""Training loops: classifier (here) and DDPM (`ibo_jax.train.ddpm`, imported on use)."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"classifier", "ddpm"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'ibo_jax.train' has no attribute {name!r}")
