"""Data: synthetic histology, the patch dataset format (TFDS array_record + grain), readers.

`synthetic` is imported eagerly (JAX only); the dataset modules, which import
tensorflow-datasets and grain, load on first use (`ibo_jax.data.read_split`, ...).
"""


import importlib  # no `from __future__ import annotations` here: it would shadow the submodule
from typing import Any

from ibo_jax.data.synthetic import generate, plan

_LAZY = {
    "read_split": "ibo_jax.data.patches",
    "make_loader": "ibo_jax.data.patches",
    "write_dataset": "ibo_jax.data.patches",
    "dataset_info": "ibo_jax.data.patches",
    "SyntheticSource": "ibo_jax.data.patches",
    "ArraySource": "ibo_jax.data.patches",
    "StainNormalized": "ibo_jax.data.patches",
    "PatchDataset": "ibo_jax.data.tfds_builder",
}

__all__ = ["generate", "plan", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ibo_jax.data' has no attribute {name!r}")
