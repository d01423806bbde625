"""Deprecated: `ibo_jax.evaluation.study` moved to `ibo_jax.evaluation.scores`; the old names are forwarded from here."""

import warnings

import ibo_jax.evaluation.scores as _new

warnings.warn("ibo_jax.evaluation.study is deprecated: use ibo_jax.evaluation.scores", DeprecationWarning, stacklevel=2)

Study = _new.ScoreTable  # the old name of ScoreTable


def __getattr__(name):
    return getattr(_new, name)
