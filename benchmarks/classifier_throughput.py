"""Classifier training and evaluation throughput (images/s), batches already on the device.

    python benchmarks/classifier_throughput.py            # CPU: demo ResNet at 64x64
    python benchmarks/classifier_throughput.py --gpu      # ResNet50 224x224 bf16 training (target >= 2,000/s)
    python benchmarks/classifier_throughput.py --smoke    # tiny CPU run of the --gpu code path

Prints one JSON line. Decoding and host->device transfer are excluded: one batch is placed on
the device(s) once and the jitted train step is timed over `--steps` steps after warm-up.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ibo_jax import parallel
from ibo_jax.train import classifier as tc


def bench(spec: tc.ModelSpec, cfg: tc.TrainConfig, hw: int, steps: int, warmup: int = 2) -> dict:
    mesh = parallel.make_mesh()
    bs = cfg.batch_size
    model = spec.build(rngs=nnx.Rngs(0), dtype="bfloat16" if cfg.bf16 else None)
    model.train()
    graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    tx = tc.make_optimizer(cfg, 1000)
    state = parallel.replicate({"params": params, "stats": stats, "rest": rest, "opt": tx.init(params),
                                "step": jnp.int32(0)}, mesh)
    rng = np.random.default_rng(0)
    batch = parallel.shard_batch({"image": rng.integers(0, 256, (bs, hw, hw, 3), dtype=np.uint8),
                                  "label": (np.arange(bs) % spec.num_classes).astype(np.int32),
                                  "index": np.arange(bs, dtype=np.int32)}, mesh)
    step = jax.jit(lambda s, b, k: tc.train_step(graphdef, tx, cfg, spec.num_classes, s, b, k), donate_argnums=0)
    key = jax.random.key(0)
    t = time.perf_counter()
    for _ in range(warmup):
        state, m = step(state, batch, key)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, batch, key)
    jax.block_until_ready(m)
    train_s = time.perf_counter() - t
    model.eval()
    eg = nnx.split(model, nnx.Param, nnx.BatchStat, ...)[0]
    ev = jax.jit(lambda p, s, r, x: tc.eval_step(eg, p, s, r, x))
    out = ev(state["params"], state["stats"], state["rest"], batch["image"])
    jax.block_until_ready(out)
    t = time.perf_counter()
    for _ in range(steps):
        out = ev(state["params"], state["stats"], state["rest"], batch["image"])
    jax.block_until_ready(out)
    eval_s = time.perf_counter() - t
    return {"arch": spec.arch, "image_size": hw, "batch_size": bs, "bf16": cfg.bf16, "steps": steps,
            "train_images_per_s": bs * steps / train_s, "eval_images_per_s": bs * steps / eval_s,
            "warmup_s": compile_s, "loss": float(m["loss"]), "devices": len(jax.devices()),
            "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="ResNet50 224x224 bf16 training")
    ap.add_argument("--smoke", action="store_true", help="a tiny CPU run of the --gpu code path")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    args = ap.parse_args()
    if args.gpu or args.smoke:
        spec = tc.ModelSpec("resnet50", 2)
        hw = 32 if args.smoke else 224
        bs = args.batch_size or (4 if args.smoke else 256)
        steps = args.steps or (2 if args.smoke else 30)
        cfg = tc.TrainConfig(batch_size=bs, bf16=True, augment=True)
    else:
        spec = tc.ModelSpec("resnet_small", 2, {"widths": (16, 32, 64), "layers": (1, 1, 1), "strides": (2, 2, 2)})
        hw, bs, steps = 64, args.batch_size or 32, args.steps or 10
        cfg = tc.TrainConfig(batch_size=bs)
    result = bench(spec, cfg, hw, steps)
    result["mode"] = "gpu" if args.gpu else ("smoke" if args.smoke else "cpu")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
