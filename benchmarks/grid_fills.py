"""Fills per second of every occlusion strategy at the benchmark grid's shapes, side by side.

    python benchmarks/grid_fills.py [--ddpm runs/benchmark/cells/local-resnet_small-s0/train_ddpm]
    python benchmarks/grid_fills.py --smoke          # tiny sizes, checks that it runs

64x64 synthetic patches, masks removing 10-60% of the pixels, batches of `--batch` fills. IBO with
the grid's sampler setting (DDNM, 5 network calls) on the grid's DDPM (`--ddpm`, a train_ddpm
folder; without it a random UNet of the demo's architecture, which costs the same) in the forms
that could make it faster: batch 32 (the grid's), batch 64, and bfloat16 compute (on CPUs with
bf16/AMX units; XLA emulates it elsewhere). Each variant is compiled and warmed up first; timed
rounds alternate between the variants so that all see the same machine load; best round each.
Prints one JSON line: fills per second per strategy / variant, and the per-cell fill counts of the
demo's settings and the grid's (from the configs), i.e. what "doing less" saves.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _eps_model(ddpm_dir: str | None, size: int, smoke: bool):
    from flax import nnx

    from ibo_jax.models import loaders
    from ibo_jax.models.unet import unet2d
    from ibo_jax.repaint import diffusion
    from ibo_jax.train import ddpm

    if ddpm_dir:
        return loaders.load_eps_model(ddpm_dir), f"trained ({ddpm_dir})"
    chans = (8, 16) if smoke else (16, 32, 64)
    model = unet2d(chans, 1, attention_levels=(False,) * len(chans), mid_attention=False, norm_num_groups=8,
                   sample_size=size, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    betas = np.asarray(diffusion.beta_schedule("linear", 1000, 1e-4, 0.02))
    apply = ddpm.make_apply(graphdef, "v_prediction", betas)
    return loaders.EpsModel(apply=apply, params=params, betas=betas.astype(np.float32), image_size=size), \
        f"random UNet {chans}"


def fills_per_cell(config) -> dict:
    """Fills the occlude stage computes per evaluation patch under `config` (upper bound: rows
    with the same removed pixels are computed once), per strategy."""
    from ibo_jax.cam import controls as control_maps

    e, o = config.explain, config.occlude
    maps = len(e.methods) + sum(len(control_maps.GRADED_LEVELS) if c == "graded" else 1 for c in e.controls)
    curves = tuple(o.curves)
    out = {}
    for s in o.strategies:
        n = 0.0
        for c in curves:
            if c == "morf":
                n += maps * int(o.n_masks)
            else:
                if len(o.fixed_strategies) and s not in o.fixed_strategies:
                    continue
                share = 1.0
                limit = int(dict(o.curve_images).get(s, 0) or 0)
                if limit:
                    share = min(1.0, limit / int(e.n_images))
                n += share * maps * len(o.fractions)
        if o.residual:
            n += 1
        out[s] = round(n * int(o.n_draws), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ddpm", default="")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    from ibo_jax import occlusion, pipeline
    from ibo_jax.data import synthetic

    size = 64
    n = 8 if a.smoke else a.batch
    pats = synthetic.generate(np.arange(n), n_slides=4, image_size=size, seed=0)
    images = jnp.asarray(pats["image"], jnp.float32) / 255.0
    rng = np.random.default_rng(0)
    frac = rng.uniform(0.1, 0.6, size=(n, 1, 1))
    remove = jnp.asarray(rng.uniform(size=(n, size, size)) < frac)
    key = jax.random.key(0)
    eps, which = _eps_model(a.ddpm or None, size, a.smoke)
    setting = ("ddnm", 5, 1, 1)
    variants = {s: dict(name=s) for s in ("blackening", "blurring", "mean", "histogram", "nli")}
    variants["nli"]["options"] = {"noise": 0.01, "solver": "scipy"}
    variants["blurring"]["options"] = {"sigma_at_224": 10.0}
    for label, opts in (("ibo_b32", {"batch_size": 32}), ("ibo_b64", {"batch_size": 64}),
                        ("ibo_b32_bf16", {"batch_size": 32, "compute_dtype": jnp.bfloat16})):
        variants[label] = dict(name="ibo", options={"eps_model": eps, "setting": setting, "progress": False, **opts},
                               batch=(2 * n if "b64" in label else n))
    data = {}
    for label, v in variants.items():  # inputs per variant (the b64 variant fills twice as many)
        b = v.get("batch", n)
        reps = -(-b // n)
        data[label] = (jnp.concatenate([images] * reps)[:b], jnp.concatenate([remove] * reps)[:b])

    def once(label):
        v = variants[label]
        x, m = data[label]
        t = time.perf_counter()
        out = occlusion.apply(v["name"], x, m, key=jax.random.split(key, x.shape[0]), **v.get("options", {}))
        jax.block_until_ready(out)
        return x.shape[0] / (time.perf_counter() - t)

    for label in variants:  # compile + warm up
        once(label)
    best = {k: 0.0 for k in variants}
    for _ in range(1 if a.smoke else a.repeats):
        for label in variants:
            best[label] = max(best[label], once(label))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    demo = pipeline.config_from_file(os.path.join(root, "configs", "demo.py"))
    bench = pipeline.config_from_file(os.path.join(root, "configs", "benchmark.py"))
    per_cell = {"demo": fills_per_cell(demo), "benchmark": fills_per_cell(bench)}
    print(json.dumps({"device": jax.devices()[0].device_kind, "cpu": _cpu(), "eps_model": which,
                      "setting": "ddnm (5, 1, 1)", "image_size": size, "batch": n,
                      "fills_per_s": {k: round(v, 2) for k, v in best.items()},
                      "fills_per_patch": per_cell}))


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
