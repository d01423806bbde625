"""Where a UNet forward spends its time: a profiler trace, summed per kernel and per kind.

    python benchmarks/gpu_profile.py --gpu      # default UNet, 224x224, bf16, batch 32, on one GPU
    python benchmarks/gpu_profile.py --smoke    # tiny UNet on the CPU (XLA thunks instead of kernels)

Traces `--iters` steady-state forward passes with `jax.profiler` (Perfetto JSON), sums the
duration of every device event by name and by kind (convolution, matmul, attention, fused
elementwise/reduction, copies), and prints one JSON line: the share of each kind and the top
kernels, per forward pass. The question it answers for issues "DDPM" and "RePaint": how much of
the gap between the achieved rate and the convolutions' own rate is memory-bound glue (GroupNorm,
SiLU, residual adds, concatenations) rather than the convolutions. Host-side events (Python,
dispatch) are left out; on the CPU the events are XLA's thunks.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ibo_jax.models.unet import unet2d  # noqa: E402

# kind of a device event, from its name (cuDNN/cuBLAS/XLA kernel names on GPUs, thunk names on CPUs)
KINDS = (
    ("ynnpack_conv_or_dot", re.compile(r"^[xy]nn_fusion")),  # XLA:CPU's library calls (convs, matmuls)
    ("attention", re.compile(r"fmha|flash|attn|attention|sdpa", re.I)),
    ("convolution", re.compile(r"conv(?!ert)|cudnn|implicit_gemm|xmma_fprop|fprop|dgrad|wgrad|winograd", re.I)),
    ("matmul", re.compile(r"gemm|cublas|cutlass|nvjet|dot|matmul", re.I)),
    ("copy", re.compile(r"memcpy|memset|copy|transpose", re.I)),
    ("fusion", re.compile(r"fusion|loop_|input_|reduce|triton|elementwise|kernel", re.I)),
)
_HOST = re.compile(r"^\$|Thunk|Pjit|PjRt|ParseArguments|Execute|Await|DevicePut|^end: |python|TraceMe", re.I)


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if pattern.search(name):
            return kind
    return "other"


def _device_events(trace: dict) -> list[dict]:
    """Complete events on device streams (GPU) or, where there are none, XLA's CPU thunks."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            names[e["pid"]] = str(e.get("args", {}).get("name", ""))
    gpu_pids = {pid for pid, n in names.items() if re.search(r"/device:(GPU|TPU)|gpu|stream", n, re.I)}
    complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
    if gpu_pids:
        return [e for e in complete if e["pid"] in gpu_pids]
    return [e for e in complete if not _HOST.search(e.get("name", ""))]


def summarize(trace: dict, iters: int, top: int = 30) -> dict:
    per_name = collections.Counter()
    calls = collections.Counter()
    for e in _device_events(trace):
        per_name[e["name"]] += e["dur"]
        calls[e["name"]] += 1
    per_kind = collections.Counter()
    for name, us in per_name.items():
        per_kind[kind_of(name)] += us
    total = sum(per_kind.values()) or 1.0
    return {
        "device_ms_per_forward": round(total / iters / 1e3, 3),
        "kinds": {k: {"ms": round(v / iters / 1e3, 3), "share": round(v / total, 4)} for k, v in per_kind.most_common()},
        "top": [{"name": n[:160], "kind": kind_of(n), "ms": round(us / iters / 1e3, 4), "calls": calls[n] // iters}
                for n, us in per_name.most_common(top)],
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--fp32", action="store_true", help="fp32 (TF32 on GPUs) instead of bf16")
    a = p.parse_args(argv)
    if a.smoke:
        arch, size, b = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, attention_head_dim=8), 16, 2
    elif a.gpu:
        arch, size, b = {}, 224, 32
    else:
        arch, size, b = dict(block_out_channels=(32, 64, 128), norm_num_groups=8, attention_head_dim=8), 64, 8
    b = a.batch or b
    dtype = None if (a.fp32 or not (a.gpu or a.smoke)) else jnp.bfloat16
    graphdef, params = nnx.split(unet2d(**arch, dtype=dtype))
    fwd = jax.jit(lambda p, x, t: nnx.merge(graphdef, p)(x, t))
    x = jax.random.normal(jax.random.key(0), (b, size, size, 3), jnp.float32)
    t = jnp.full((b,), 500, jnp.int32)
    t0 = time.perf_counter()
    jax.block_until_ready(fwd(params, x, t))
    compile_s = time.perf_counter() - t0
    for _ in range(2):
        jax.block_until_ready(fwd(params, x, t))
    t0 = time.perf_counter()
    for _ in range(a.iters):
        jax.block_until_ready(fwd(params, x, t))
    wall_ms = (time.perf_counter() - t0) / a.iters * 1e3
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(a.iters):
                jax.block_until_ready(fwd(params, x, t))
        files = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
        if not files:
            raise SystemExit(f"gpu_profile: the profiler wrote no Perfetto trace under {d}")
        with gzip.open(files[0]) as f:
            summary = summarize(json.load(f), a.iters)
    print(json.dumps({"bench": "gpu_profile", "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
                      "size": size, "batch": b, "dtype": "bf16" if dtype is not None else "fp32",
                      "arch": arch or "default", "compile_s": round(compile_s, 1), "wall_ms_per_forward": round(wall_ms, 3),
                      **summary}), flush=True)


if __name__ == "__main__":
    main()
