"""Deprecated: `ibo_jax.evaluation.figures` moved to `ibo_jax.reporting.figures`; the old names are forwarded from here."""

import warnings

import ibo_jax.reporting.figures as _new

warnings.warn("ibo_jax.evaluation.figures is deprecated: use ibo_jax.reporting.figures", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_new, name)
