"""CAM throughput: ms/image per method and batch size (compile time apart), against pytorch-grad-cam.

    python benchmarks/cam_throughput.py                 # CPU: ResNet50 at 64x64, batches 1/16/64
    python benchmarks/cam_throughput.py --reference     # + pytorch-grad-cam, same weights, batch 1
    python benchmarks/cam_throughput.py --gpu           # all seven, 100 patches at 224, bf16/TF32
    python benchmarks/cam_throughput.py --smoke [--gpu] # tiny, seconds, checks that it runs

Prints one JSON line (the last line of stdout). Steady-state time is the minimum over `--repeats`
calls after a first call that includes compilation (`compile_s` = first call - steady). The
weights are a random torchvision-layout ResNet50 with randomized BatchNorm statistics (imported
with `models.from_torchvision` when torch is installed, so the reference sees the same weights).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from ibo_jax import cam, models  # noqa: E402

EXPENSIVE = ("ablationcam", "scorecam")


def build_model(arch: str, seed: int = 0):
    """(jax model, torch model or None) with the same random weights."""
    if arch == "resnet_small":
        return models.resnet_small(num_classes=2, rngs=nnx.Rngs(seed)), None
    try:
        from ibo_jax_testing import reference
    except ImportError:
        model = getattr(models, arch)(num_classes=2, rngs=nnx.Rngs(seed))
        model.eval()
        return model, None
    tmodel = reference.randomized_resnet50(2, seed=seed)
    return models.from_torchvision(arch, reference.state_dict_numpy(tmodel), num_classes=2), tmodel


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n, size, size, 3)).astype(np.float32)


def time_fn(fn, *args, repeats: int) -> tuple[float, float]:
    """(first-call seconds, steady seconds = min over repeats)."""
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    steady = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        steady.append(time.perf_counter() - t)
    best = min(steady) if steady else first
    return first, best


def method_options(method: str, args, *, bf16: bool = False) -> dict:
    if method == "scorecam":
        return {"batch_size": args.score_chunk, **({"dtype": jnp.bfloat16} if bf16 else {})}
    if method == "ablationcam":
        return {"batch_size": args.ablation_chunk}
    return {}


def bench_jax(model, methods, batches, size, args, *, bf16=False) -> list[dict]:
    graphdef, state = nnx.split(model)
    rows = []
    for method in methods:
        fn = cam.make_cam_fn(method, graphdef, target_class=1, **method_options(method, args, bf16=bf16))
        for b in batches:
            if method in EXPENSIVE and b > args.expensive_max_batch:
                continue
            x = jnp.asarray(images(b, size))
            first, steady = time_fn(fn, state, x, repeats=args.repeats)
            rows.append({"method": method, "batch": b, "size": size, "compile_s": round(first - steady, 3),
                         "ms_per_image": round(1000 * steady / b, 3)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def bench_reference(tmodel, jmodel, methods, args) -> list[dict]:
    import torch

    from ibo_jax_testing import reference

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    graphdef, state = nnx.split(jmodel)
    rows = []
    for method in methods:
        if args.smoke and method in EXPENSIVE:
            continue  # 2,048 reference forwards: not a smoke test
        size = args.ref_small if method in EXPENSIVE else args.size
        x = images(1, size, seed=1)
        ref_s = float("inf")
        for _ in range(1 if method in EXPENSIVE else 1 + args.repeats):  # warm torch up, keep the best
            t = time.perf_counter()
            ref = reference.reference_cam(method, tmodel, x, 1, batch_size=args.ref_chunk)
            ref_s = min(ref_s, time.perf_counter() - t)
        fn = cam.make_cam_fn(method, graphdef, target_class=1, **method_options(method, args))
        _, ours_s = time_fn(fn, state, jnp.asarray(x), repeats=args.repeats)
        heat = np.asarray(fn(state, jnp.asarray(x))[0])
        rows.append({"method": method, "size": size, "batch": 1, "reference_ms": round(1000 * ref_s, 2),
                     "ibo_jax_ms": round(1000 * ours_s, 2), "speedup": round(ref_s / ours_s, 2),
                     "max_abs_diff": float(np.abs(heat - ref).max())})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def bench_gpu(model, methods, n, size, args) -> dict:
    """All methods on n patches at `size`: TF32 for fp32 matmuls/convs, Score-CAM forwards in bf16."""
    graphdef, state = nnx.split(model)
    x = jnp.asarray(images(n, size))
    per, compile_s = {}, {}
    with jax.default_matmul_precision("tensorfloat32"):
        for method in methods:
            fn = cam.make_cam_fn(method, graphdef, target_class=1,
                                 **method_options(method, args, bf16=not args.fp32))
            first, steady = time_fn(fn, state, x, repeats=1)
            per[method], compile_s[method] = round(steady, 3), round(first - steady, 3)
            print(json.dumps({"method": method, "seconds": per[method], "compile_s": compile_s[method]}),
                  file=sys.stderr, flush=True)
    return {"n_images": n, "size": size, "seconds": per, "compile_s": compile_s,
            "total_s": round(sum(per.values()), 3), "target_total_s": 10.0,
            "mode": "fp32" if args.fp32 else "tf32+bf16-scorecam"}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", action="store_true", help="all seven methods, 100 patches at 224, bf16/TF32")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    p.add_argument("--reference", action="store_true", help="also pytorch-grad-cam at batch 1")
    p.add_argument("--methods", default=",".join(cam.METHODS))
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=int, default=None, help="input size (default 224 --gpu, 64 CPU)")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--n-images", type=int, default=100, help="--gpu: patches")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--expensive-max-batch", type=int, default=None,
                   help="largest batch for Ablation-/Score-CAM (default: all on GPU, 1 on CPU)")
    p.add_argument("--score-chunk", type=int, default=None, help="Score-CAM masked forwards per chunk")
    p.add_argument("--ablation-chunk", type=int, default=2048)
    p.add_argument("--ref-small", type=int, default=64, help="reference input size for Ablation/Score-CAM")
    p.add_argument("--ref-chunk", type=int, default=64, help="pytorch-grad-cam batch_size")
    p.add_argument("--ref-skip", default="", help="methods to leave out of --reference (comma list)")
    p.add_argument("--fp32", action="store_true", help="--gpu without TF32/bf16")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    batches = [int(b) for b in args.batches.split(",") if b]
    on_gpu = args.gpu and not args.smoke
    args.size = args.size or (224 if on_gpu else 64)
    args.score_chunk = args.score_chunk or (512 if on_gpu else 128)
    if args.expensive_max_batch is None:
        args.expensive_max_batch = 1 << 30 if on_gpu else 1
    if args.smoke:
        args.arch, args.size, args.repeats = ("resnet_small", 32, 1) if not args.reference else (args.arch, 64, 1)
        batches, args.n_images, args.ref_small = [1, 2], 2, 64
    model, tmodel = build_model(args.arch)
    out = {"benchmark": "cam_throughput", "backend": jax.default_backend(),
           "device": str(jax.devices()[0]), "host": platform.node(), "arch": args.arch,
           "smoke": args.smoke}
    if args.gpu:
        out["gpu"] = bench_gpu(model, methods, args.n_images, args.size, args)
    else:
        out["rows"] = bench_jax(model, methods, batches, args.size, args)
    if args.reference:
        if tmodel is None:
            raise SystemExit("--reference needs torch, pytorch-grad-cam and a resnet50 (--arch resnet50)")
        skip = set(args.ref_skip.split(","))
        out["reference"] = bench_reference(tmodel, model, [m for m in methods if m not in skip], args)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
