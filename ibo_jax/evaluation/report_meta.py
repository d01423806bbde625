"""Deprecated: `ibo_jax.evaluation.report_meta` moved to `ibo_jax.reporting.trust`; the old names are forwarded from here."""

import warnings

import ibo_jax.reporting.trust as _new

warnings.warn("ibo_jax.evaluation.report_meta is deprecated: use ibo_jax.reporting.trust", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_new, name)
