"""FLOP counts that are the same on every backend.

XLA's GPU cost analysis leaves out convolutions that run as cuDNN custom calls (it reported 2.9
GFLOP for a UNet forward of 814 GFLOP on an H200), so every benchmark counts FLOPs on the HLO
lowered for the CPU, whatever device it then times.

UNet rates are quoted against the architecture's nominal FLOPs (`nominal_unet()`: upsampling
computed the direct way, nearest x2 then a 3x3 convolution, as diffusers does), so they compare
with other implementations; ibo_jax's sub-pixel upsampling executes fewer (`gflop_executed`).
"""

from __future__ import annotations

import jax


def hlo_flops(fn, *args) -> float:
    """FLOPs of one call of `fn(*args)` (convolutions, matmuls and elementwise), from XLA's HLO."""
    # a fresh function object: JAX caches traces per function, and `nominal_unet` changes the trace
    lowered = jax.jit(lambda *a: fn(*a)).trace(*args).lower(lowering_platforms=("cpu",))
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def nominal_unet(model):
    """The UNet with direct upsampling: what the architecture's own FLOP count is traced from."""
    from ibo_jax.models.unet import reformulate

    return reformulate(model, upsample="direct")
