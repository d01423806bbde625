"""UNet2DModel throughput: GFLOP per image, images/s, achieved TFLOP/s, training step time.

    python benchmarks/unet_throughput.py --gpu          # 224x224 default arch (128,256,512), batch 1/8/32,
                                                        # bf16 and fp32 (TF32); train step at batch 16
    python benchmarks/unet_throughput.py                # CPU: a small UNet beside diffusers' UNet2DModel
                                                        # of the same size (same weights imported)
    python benchmarks/unet_throughput.py [--gpu] --smoke   # tiny, for CI

Each mode prints one JSON line. FLOPs are XLA's count of the lowered forward (cost analysis, batch
1) with direct upsampling, the architecture's nominal count: 814 GFLOP per 224x224 image for the
default architecture (57.6 M parameters); TFLOP/s is that count times images/s, so it compares
with diffusers. ibo_jax's sub-pixel upsampling executes fewer (`gflop_executed`). The training
step is counted as 3x the forward. `--variant NAME` builds the UNet in another formulation of the
same function (`benchmarks/_variants.py`; default `ibo`, the library's own).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _variants as V  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _flops import hlo_flops, nominal_unet  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
from _variants import VARIANTS, unet2d  # noqa: E402  (the library's builder, in the chosen variant)
from flax import nnx  # noqa: E402


def _time(fn, *args, iters: int, warmup: int = 2) -> float:
    """Median seconds per call of a jitted fn (results blocked on)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def forward_fn(graphdef):
    @jax.jit
    def f(params, x, t):
        return nnx.merge(graphdef, params)(x, t)

    return f


def flops_per_image(model, size: int, nominal: bool = True) -> float:
    """nominal: the architecture's FLOPs (direct upsampling); False: what ibo_jax executes."""
    graphdef, params = nnx.split(nominal_unet(model) if nominal else model)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.int32)
    return hlo_flops(forward_fn(graphdef), params, x, t)


def gpu(smoke: bool) -> dict:
    from ibo_jax.repaint import diffusion
    from ibo_jax.train import ddpm

    size = 16 if smoke else 224
    arch = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, attention_head_dim=8) if smoke else {}
    batches = (2,) if smoke else (1, 8, 32)
    iters = 2 if smoke else 10
    out = {"bench": "unet_throughput", "mode": "gpu", "device": jax.devices()[0].device_kind, "image_size": size,
           "arch": arch or "default (128,256,512) x2, mid attention, 64-ch heads", "forward": []}
    gflop = flops_per_image(unet2d(**arch), size) / 1e9
    out["gflop_per_image"] = round(gflop, 3)
    out["gflop_executed"] = round(flops_per_image(unet2d(**arch), size, nominal=False) / 1e9, 3)
    # bf16 at every batch, TF32 at the largest: GPU time is scarce and each shape compiles anew.
    plan = [("bf16", jnp.bfloat16, "default", b) for b in batches]
    plan.append(("fp32_tf32", None, "tensorfloat32", batches[-1]))
    for dtype_name, dtype, precision, b in plan:
        model = unet2d(**arch, dtype=dtype)
        graphdef, params = nnx.split(model)
        f = forward_fn(graphdef)
        x = jax.random.normal(jax.random.key(0), (b, size, size, 3), jnp.float32)
        t = jnp.full((b,), 500, jnp.int32)
        with jax.default_matmul_precision(precision):
            s = _time(f, params, x, t, iters=iters)
        row = {"dtype": dtype_name, "batch": b, "ms": round(s * 1e3, 3),
               "images_per_s": round(b / s, 2), "tflops": round(gflop * b / s / 1e3, 2)}
        out["forward"].append(row)
        print(json.dumps({"partial": "forward", **row}), flush=True)
    train_b = 2 if smoke else 16
    for dtype_name, dtype, precision in (("bf16", jnp.bfloat16, "default"),):
        model = unet2d(**arch, dtype=dtype)
        tx = ddpm.make_optimizer()
        graphdef, state = ddpm.init_state(model, tx)
        step = ddpm.make_train_step(graphdef, tx, diffusion.make_schedule(diffusion.beta_schedule("linear", 1000)))
        imgs = jax.random.uniform(jax.random.key(1), (train_b, size, size, 3))
        with jax.default_matmul_precision(precision):
            for i in range(2):
                state, m = step(state, imgs, jax.random.key(i))
            jax.block_until_ready(m["loss"])
            t0 = time.perf_counter()
            for i in range(iters):
                state, m = step(state, imgs, jax.random.key(i))
            jax.block_until_ready(m["loss"])
        s = (time.perf_counter() - t0) / iters
        out.setdefault("train_step", []).append({"dtype": dtype_name, "batch": train_b, "ms": round(s * 1e3, 2),
                                                 "tflops": round(3 * gflop * train_b / s / 1e3, 2)})
    return out


def cpu(smoke: bool) -> dict:
    """A small UNet, JAX vs diffusers (torch) with the same weights, same inputs, same process."""
    import torch
    from diffusers import UNet2DModel as TorchUNet

    from ibo_jax.models.unet_convert import from_diffusers_unet

    size, b = (16, 2) if smoke else (64, 8)
    ch = (16, 32) if smoke else (32, 64, 128)
    iters = 2 if smoke else 5
    torch.manual_seed(0)
    ref = TorchUNet(sample_size=size, block_out_channels=ch, layers_per_block=2, norm_num_groups=8,
                    down_block_types=("DownBlock2D",) * (len(ch) - 1) + ("AttnDownBlock2D",),
                    up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (len(ch) - 1),
                    attention_head_dim=8).eval()
    model = V.apply(from_diffusers_unet((ref.config, ref.state_dict())))
    graphdef, params = nnx.split(model)
    f = forward_fn(graphdef)
    x = np.random.default_rng(0).uniform(-1, 1, (b, size, size, 3)).astype(np.float32)
    t = np.full((b,), 500, np.int32)
    jx, jt = jnp.asarray(x), jnp.asarray(t)
    s_jax = _time(f, params, jx, jt, iters=iters)
    tx, tt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(t.astype(np.int64))

    def torch_fwd():
        with torch.no_grad():
            return ref(tx, tt).sample

    for _ in range(2):
        want = torch_fwd()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        torch_fwd()
        ts.append(time.perf_counter() - t0)
    s_torch = float(np.median(ts))
    got = np.asarray(f(params, jx, jt))
    want = want.numpy().transpose(0, 2, 3, 1)
    gflop = flops_per_image(model, size) / 1e9
    return {"bench": "unet_throughput", "mode": "cpu", "image_size": size, "batch": b, "block_out_channels": ch,
            "torch_threads": torch.get_num_threads(), "gflop_per_image": round(gflop, 4),
            "gflop_executed": round(flops_per_image(model, size, nominal=False) / 1e9, 4),
            "jax_ms": round(s_jax * 1e3, 2), "diffusers_ms": round(s_torch * 1e3, 2),
            "jax_images_per_s": round(b / s_jax, 2), "diffusers_images_per_s": round(b / s_torch, 2),
            "rel_err_vs_diffusers": float(np.linalg.norm(got - want) / np.linalg.norm(want))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", action="store_true", help="the 224x224 default-architecture GPU benchmark")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (runs anywhere, seconds)")
    p.add_argument("--variant", default="ibo", choices=list(VARIANTS),
                   help="UNet formulation (benchmarks/_variants.py; gpu_suite.sh passes the fastest)")
    a = p.parse_args(argv)
    V.use(a.variant)
    out = gpu(a.smoke) if a.gpu else cpu(a.smoke)
    out["jax"], out["backend"], out["variant"] = jax.__version__, jax.default_backend(), a.variant
    out["host_cpus"] = os.cpu_count()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
