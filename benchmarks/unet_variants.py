"""UNet implementation variants, timed side by side in one run: which formulation is fastest here.

    python benchmarks/unet_variants.py --gpu     # default arch, 224x224, bf16, batch 32 (one GPU)
    python benchmarks/unet_variants.py           # CPU: mid-size UNet (32, 64, 128), 64x64, fp32, batch 8
    python benchmarks/unet_variants.py --smoke   # tiny, checks that it runs

Variants (same weights, same inputs; every output is checked against the first):
  ibo        the defaults: sub-pixel upsampling, ibo_jax GroupNorm, backend-chosen attention
  direct_up  upsampling as nearest x2 then a 3x3 convolution (diffusers' way)
  flax_gn    `nnx.GroupNorm` instead of ibo_jax's GroupNorm
  gn_alt     ibo_jax's GroupNorm with the other channels -> groups sum than this backend's default
             (reshape-sum on the CPU, one-hot matmul on accelerators)
  dpa        `jax.nn.dot_product_attention` on every backend (the CPU default is einsum-based)
  previous   direct_up + flax_gn + dpa: the formulation before these changes
Timed forward passes take turns (one of each variant per round), median per variant; compile time
is reported apart. FLOPs are the architecture's nominal count (direct upsampling). One JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _flops import hlo_flops, nominal_unet  # noqa: E402
from _variants import VARIANTS, formulation  # noqa: E402

from ibo_jax.models import unet as U  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    a = p.parse_args(argv)
    if a.smoke:
        arch, size, b, dtype, rounds = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                            attention_head_dim=8), 16, 2, (jnp.bfloat16 if a.gpu else None), 2
    elif a.gpu:
        arch, size, b, dtype, rounds = {}, 224, 32, jnp.bfloat16, 10
    else:
        arch, size, b, dtype, rounds = dict(block_out_channels=(32, 64, 128), norm_num_groups=8,
                                            attention_head_dim=8), 64, 8, None, 5
    b, rounds = a.batch or b, a.rounds or rounds
    base = U.unet2d(**arch, dtype=dtype)
    x = jax.random.normal(jax.random.key(0), (b, size, size, 3), jnp.float32)
    t = jnp.full((b,), 500, jnp.int32)
    fns, compile_s, outs = {}, {}, {}
    for name in a.variants:
        graphdef, params = nnx.split(U.reformulate(base, **formulation(name)))  # same parameters
        fn = jax.jit(lambda p, x, t, g=graphdef: nnx.merge(g, p)(x, t))
        t0 = time.perf_counter()
        outs[name] = np.asarray(jax.block_until_ready(fn(params, x, t)))
        compile_s[name] = time.perf_counter() - t0
        jax.block_until_ready(fn(params, x, t))
        fns[name] = (fn, params)
    graphdef, params = nnx.split(nominal_unet(base))
    gflop = hlo_flops(lambda p, x, t: nnx.merge(graphdef, p)(x, t), params, x[:1], t[:1]) / 1e9
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for name, (fn, params) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(params, x, t))
            times[name].append(time.perf_counter() - t0)
    ref = outs[a.variants[0]]
    scale = float(np.abs(ref).max()) + 1e-6
    rows = []
    for name in fns:
        ms = float(np.median(times[name])) * 1e3
        rows.append({"variant": name, "ms": round(ms, 3), "images_per_s": round(b / ms * 1e3, 2),
                     "tflops": round(gflop * b / ms, 3), "compile_s": round(compile_s[name], 1),
                     "max_rel_diff": float(np.abs(outs[name] - ref).max() / scale)})
    print(json.dumps({"bench": "unet_variants", "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
                      "size": size, "batch": b, "dtype": "bf16" if dtype is not None else "fp32",
                      "arch": arch or "default", "gflop_per_image": round(gflop, 3), "rounds": rounds,
                      "rows": rows, "load_avg": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
