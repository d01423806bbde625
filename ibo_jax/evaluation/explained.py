"""Deprecated: the explain stage's files are read through `ibo_jax.artifacts`
(`artifacts.read_explained`, `artifacts.twins`); these names remain for old callers."""

from __future__ import annotations

import warnings

from ibo_jax.artifacts import read_explained as read
from ibo_jax.artifacts import twins

warnings.warn("ibo_jax.evaluation.explained is deprecated: use ibo_jax.artifacts.read_explained / twins",
              DeprecationWarning, stacklevel=2)

__all__ = ["read", "twins"]
