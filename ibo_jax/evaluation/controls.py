"""Deprecated: `ibo_jax.evaluation.controls` moved to `ibo_jax.cam.controls`; the old names are forwarded from here."""

import warnings

import ibo_jax.cam.controls as _new

warnings.warn("ibo_jax.evaluation.controls is deprecated: use ibo_jax.cam.controls", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_new, name)
