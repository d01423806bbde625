"""Deprecated: `ibo_jax.evaluation.report` moved to `ibo_jax.reporting.report`; the old names are forwarded from here."""

import warnings

import ibo_jax.reporting.report as _new

warnings.warn("ibo_jax.evaluation.report is deprecated: use ibo_jax.reporting.report", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_new, name)
