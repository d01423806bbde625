"""Deprecated: `ibo_jax.evaluation.meta` moved to `ibo_jax.trust.checks`; the old names are forwarded from here."""

import warnings

import ibo_jax.trust.checks as _new

warnings.warn("ibo_jax.evaluation.meta is deprecated: use ibo_jax.trust.checks", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_new, name)
