"""FLOP counts that are the same on every backend.

XLA's GPU cost analysis leaves out convolutions that run as cuDNN custom calls (it reported 2.9
GFLOP for a UNet forward of 814 GFLOP on an H200), so every benchmark counts FLOPs on the HLO
lowered for the CPU, whatever device it then times.
"""

from __future__ import annotations

import jax


def hlo_flops(fn, *args) -> float:
    """FLOPs of one call of `fn(*args)` (convolutions, matmuls and elementwise), from XLA's HLO."""
    lowered = jax.jit(fn).trace(*args).lower(lowering_platforms=("cpu",))
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])
