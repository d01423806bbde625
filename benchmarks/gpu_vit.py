"""ViT attribution cost on a GPU: forward, rollout, gradient-weighted rollout, AttnLRP and 50-step
integrated gradients on random full-size ViT-H/14 and ViT-g/14 at 224, bf16 and TF32, with memory.

    python benchmarks/gpu_vit.py                        # GPU: vit_h14 and vit_g14, bf16 and tf32
    python benchmarks/gpu_vit.py --models vit_g14 --modes bf16 --batch 4
    python benchmarks/gpu_vit.py --tiny                 # a toy ViT on the CPU: checks that it runs

Prints one JSON line per (model, mode) as it finishes (so a run cut short keeps what it
measured), then a last line with every row. Each method runs as the registry's jitted program
(what `attribution.make_fn` calls; map output), compiled ahead of time: `first_s` is compile +
first run, `ms` the steady time per batch (the minimum over `--repeats` calls), `ms_per_image` =
ms / batch. Memory per method: `temp_mb`, XLA's temporary buffers of the timed program
(`memory_analysis()` of that compilation; exact, independent of the order), and `peak_mb`, the
device's peak bytes in use so far in the process (`memory_stats()`, monotone: methods run from
the cheapest to the most expensive), where the backend reports them (the CPU does not). On one
GPU a full run compiles 20 large programs: run one model per command (`--models vit_h14`).

Modes: 'bf16' = parameters and activations in bfloat16 (the model's `normalize` returns bf16, so
every matmul runs in bf16; LayerNorm and softmax accumulate in float32 as `vit.Ops` does), the
gradient w.r.t. the float32 image; 'tf32' = float32 parameters with
`jax.default_matmul_precision('tensorfloat32')`. Integrated gradients: Gauss-Legendre, 50 steps,
`internal_batch_size` = batch x `--ig-chunk` steps per pass (default 4: 16 images per pass at the
default batch of 4, about 30 GB of activations for ViT-g/14 in float32). Weights are random (the
cost does not depend on them); the architectures are the pathology presets: ViT-H/14 = Virchow2
(1280 wide, 32 blocks, 16 heads, SwiGLU fc1 6832, 4 registers, 'token_avg'), ViT-g/14 =
H-optimus-0 (1536 wide, 40 blocks, 24 heads, SwiGLU fc1 8192, 4 registers, class token).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from ibo_jax import attribution, models  # noqa: E402
from ibo_jax.attribution import base as attribution_base  # noqa: E402

CONFIGS = {
    "vit_h14": models.vit_preset("virchow2"),  # ViT-H/14: 1280 wide, 32 blocks, SwiGLU, 4 registers
    "vit_g14": models.vit_preset("h_optimus_0"),  # ViT-g/14: 1536 wide, 40 blocks, SwiGLU, 4 regs
    "tiny": models.ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                             mlp_hidden=64, num_classes=2),
}
METHODS = ("forward", "rollout", "attnlrp", "grad_rollout", "integrated_gradients")
MODES = ("bf16", "tf32")


class BF16ViT(models.VisionTransformer):
    """The ViT with its normalized input in bfloat16, so that (with bf16 parameters) the whole
    trunk runs in bf16 through every entry point the registry uses (`__call__`,
    `forward_attention` via the methods' own `normalize` call)."""

    def normalize(self, x):
        return super().normalize(x).astype(jnp.bfloat16)


def build(name: str, mode: str, seed: int = 0):
    """(graphdef, state) of a random ViT in `mode` ('bf16': bf16 parameters and BF16ViT)."""
    config = CONFIGS[name]
    cls = BF16ViT if mode == "bf16" else models.VisionTransformer
    dtype = jnp.bfloat16 if mode == "bf16" else jnp.float32

    def make():
        model = cls(config, rngs=nnx.Rngs(seed))
        model.eval()
        return model

    def init_state():  # one compiled program: no op-by-op initializers on the device
        state = nnx.split(make())[1]
        return jax.tree.map(
            lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, state)

    graphdef = nnx.split(nnx.eval_shape(make))[0]
    return graphdef, jax.jit(init_state)()


def n_params(state) -> int:
    return int(sum(np.prod(v.shape) for v in jax.tree.leaves(state)))


def compile_method(name: str, graphdef, state, images, options: dict):
    """(compiled program, its dynamic arguments): the registry's jitted program for `name`
    (`attribution.make_fn`'s, map output) or the plain forward, compiled ahead of time so that
    its memory analysis comes from the very program that is timed."""
    if name == "forward":
        fwd = jax.jit(lambda st, x: nnx.merge(graphdef, st)(x))
        return fwd.lower(state, images).compile(), (state, images)
    attribution.make_fn(name, graphdef, target_class=1, **options)  # the public checks
    static, arrays = attribution_base._split_options(options)
    lowered = attribution_base._compute_jit.lower(graphdef, state, images, arrays, name=name,
                                                  target_class=1, raw=False, options=static)
    return lowered.compile(), (state, images, arrays)


def temp_mb(compiled) -> float | None:
    try:
        return round(compiled.memory_analysis().temp_size_in_bytes / 2**20, 1)
    except Exception:  # noqa: BLE001 (not every backend / jax version reports it)
        return None


def peak_mb() -> float | None:
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return round(stats["peak_bytes_in_use"] / 2**20, 1)


def time_method(name: str, graphdef, state, images, *, options: dict, repeats: int) -> dict:
    t = time.perf_counter()
    compiled, dyn = compile_method(name, graphdef, state, images, options)
    out = jax.block_until_ready(compiled(*dyn))
    first = time.perf_counter() - t
    steady = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(compiled(*dyn))
        steady.append(time.perf_counter() - t)
    out = out[0] if isinstance(out, tuple) else out
    ms = 1e3 * min(steady)
    return {"method": name, "first_s": round(first, 3), "ms": round(ms, 3),
            "ms_per_image": round(ms / len(images), 3), "temp_mb": temp_mb(compiled),
            "peak_mb": peak_mb(), "finite": bool(np.all(np.isfinite(np.asarray(out, np.float32))))}


def run(name: str, mode: str, args) -> dict:
    precision = "tensorfloat32" if mode == "tf32" else "default"
    size = CONFIGS[name].img_size
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(size=(args.batch, size, size, 3)), jnp.float32)
    ig = {"n_steps": args.ig_steps, "method": "gausslegendre",
          "internal_batch_size": args.batch * args.ig_chunk}
    with jax.default_matmul_precision(precision):
        t = time.perf_counter()
        graphdef, state = build(name, mode)
        jax.block_until_ready(state)
        row = {"model": name, "mode": mode, "batch": args.batch,
               "params_m": round(n_params(state) / 1e6, 1),
               "build_s": round(time.perf_counter() - t, 2), "methods": []}
        for method in args.methods:
            options = ig if method == "integrated_gradients" else {}
            try:
                row["methods"].append(time_method(method, graphdef, state, images, options=options,
                                                  repeats=args.repeats))
            except Exception as e:  # noqa: BLE001 (out of memory on a smaller card: say so, go on)
                err = f"{type(e).__name__}: {str(e)[:300]}"
                row["methods"].append({"method": method, "error": err})
    return row


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", "--smoke", action="store_true",
                   help="a toy ViT on any device (checks that it runs)")
    p.add_argument("--models", nargs="+", default=None, choices=sorted(CONFIGS))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--batch", type=int, default=None, help="images per call (default 4; --tiny 2)")
    p.add_argument("--ig-steps", type=int, default=50)
    p.add_argument("--ig-chunk", type=int, default=4, help="IG steps per forward/backward pass")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    # --tiny / --smoke always runs the toy ViT (gpu_suite.sh's SMOKE mode adds --smoke to a full-size call)
    args.models = ["tiny"] if args.tiny else (args.models or ["vit_h14", "vit_g14"])
    args.batch = args.batch or (2 if args.tiny else 4)
    if args.tiny:
        args.repeats = min(args.repeats, 1)
    rows = []
    for name in args.models:
        for mode in args.modes:
            rows.append(run(name, mode, args))
            print(json.dumps(rows[-1]), flush=True)
    summary = {"benchmark": "gpu_vit", "device": str(jax.devices()[0].device_kind),
               "platform": jax.default_backend(), "host": platform.node(),
               "tiny": bool(args.tiny),
               "ig": {"n_steps": args.ig_steps, "steps_per_pass": args.ig_chunk}, "rows": rows}
    print(json.dumps(summary))
    return rows


if __name__ == "__main__":
    main()
