"""Deprecated: `ibo_jax.evaluation.randomization` moved to `ibo_jax.trust.randomization`; the old names are forwarded from here."""

import warnings

import ibo_jax.trust.randomization as _new

warnings.warn("ibo_jax.evaluation.randomization is deprecated: use ibo_jax.trust.randomization", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_new, name)
