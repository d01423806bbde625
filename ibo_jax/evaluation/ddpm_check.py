"""Deprecated: `ibo_jax.evaluation.ddpm_check` moved to `ibo_jax.generator.ddpm_check`; the old names are forwarded from here."""

import warnings

import ibo_jax.generator.ddpm_check as _new

warnings.warn("ibo_jax.evaluation.ddpm_check is deprecated: use ibo_jax.generator.ddpm_check", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_new, name)
