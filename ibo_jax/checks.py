"""The library's one rule for bad numbers in inputs: non-finite *input* to a public function is a
ValueError naming the argument and the count; non-finite *computed* values (a degenerate CAM map,
a NaN probability) stay flagged and counted by the code that computes them."""

from __future__ import annotations

import jax
import numpy as np


def check_finite(x, name: str) -> None:
    """Raises ValueError if the concrete array `x` holds NaN or inf (traced values pass)."""
    if isinstance(x, jax.core.Tracer):
        return
    arr = np.asarray(x)
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name}: {bad} non-finite value(s) (NaN or inf) among {arr.size}; fix or drop "
                         "those inputs")
