"""Deprecated: `ibo_jax.evaluation.lpips` moved to `ibo_jax.models.lpips`; the old names are forwarded from here."""

import warnings

import ibo_jax.models.lpips as _new

warnings.warn("ibo_jax.evaluation.lpips is deprecated: use ibo_jax.models.lpips", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_new, name)
