"""Integrated gradients (50 steps) and SmoothGrad on the CPU: ibo_jax against captum 0.9.0 on the
same weights, side by side in one run.

    python benchmarks/attribution_throughput.py            # demo sizes (ResNet, tiny ViT) + ViT-S/16 at 224
    python benchmarks/attribution_throughput.py --configs demo --repeats 3
    python benchmarks/attribution_throughput.py --smoke    # tiny, seconds, checks that it runs

Configs: 'demo' = `models.resnet_small` (the demo's classifier: widths 16/32/64, 64x64 patches),
and 'vit_tiny' = the `tiny` ViT preset (`configs/vit_demo.py`'s classifier: 64 px, 8 px patches,
width 64, depth 4), batch --batch-demo (goal: ibo_jax >= 3x captum); 'vit_s16' = ViT-S/16 (384 wide, 12 blocks, 6
heads) at 224, batch --batch-vit (ratio reported, no goal). The torch twins
(`ibo_jax_testing.attribution_reference`) carry the NNX model's weights and normalize inside, so
both sides attribute w.r.t. the [0, 1] image; `max_abs_diff` checks IG agrees (float32).
captum runs IG with every step in one batch (internal_batch_size=None) and NoiseTunnel(Saliency)
with all samples in one batch, as ibo_jax vmaps them. Steady time = the minimum over --repeats
calls, alternating ibo_jax and captum, after a first call of each (ibo_jax's includes compilation:
`compile_s`). torch uses
all cores (torch.set_num_threads(os.cpu_count())), as XLA does. Prints one JSON line last.
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

from ibo_jax import attribution, models  # noqa: E402


def build(config: str, smoke: bool):
    """(ibo_jax model, torch twin float32, image size)."""
    from ibo_jax_testing import attribution_reference as ref

    if config == "demo":
        widths = (4, 8, 8) if smoke else (16, 32, 64)
        m = ref.randomize_batchnorm(models.resnet_small(2, widths=widths, rngs=nnx.Rngs(0)))
        m.eval()
        import torch

        return m, ref.twin(m, widths=widths, dtype=torch.float32), 16 if smoke else 64
    if config == "vit_tiny":  # configs/vit_demo.py's classifier: models.vit_preset('tiny'), 64 px
        c = models.vit_preset("tiny")
        if smoke:
            c = models.ViTConfig(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=2)
        m = models.vit(c, rngs=nnx.Rngs(0), num_classes=2)
        return m, ref.vit_twin(m), c.img_size
    if config == "vit_s16":
        c = (models.ViTConfig(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=2)
             if smoke else models.ViTConfig(img_size=224, patch_size=16, embed_dim=384, depth=12,
                                            num_heads=6, num_classes=2))
        m = models.vit(c, rngs=nnx.Rngs(0))
        return m, ref.vit_twin(m), c.img_size
    raise SystemExit(f"--configs: expected 'demo', 'vit_tiny' or 'vit_s16', got {config!r}")


def side_by_side(ours, theirs, repeats: int) -> tuple[float, float, float, tuple]:
    """(ours first call, ours steady, theirs steady, (ours' output, theirs')): one warm-up call
    each, then `repeats` rounds that alternate the two (a busy machine slows both alike); steady =
    the minimum."""
    t = time.perf_counter()
    out_ours = ours()
    first = time.perf_counter() - t
    out_theirs = theirs()
    a, b = [], []
    for _ in range(max(1, repeats)):
        for fn, out in ((ours, a), (theirs, b)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return first, min(a), min(b), (out_ours, out_theirs)


def bench(config: str, batch: int, repeats: int, args) -> list[dict]:
    import torch
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    from ibo_jax_testing import attribution_reference as ref

    model, tmodel, size = build(config, args.smoke)
    x = np.random.default_rng(0).uniform(size=(batch, size, size, 3)).astype(np.float32)
    xt = ref.to_nchw(x, torch.float32)
    graphdef, state = nnx.split(model)
    xj = jnp.asarray(x)
    cases = {
        "integrated_gradients": (
            dict(n_steps=args.n_steps, method="gausslegendre"),
            lambda: IntegratedGradients(tmodel).attribute(xt, target=1, n_steps=args.n_steps,
                                                          method="gausslegendre")),
        "smoothgrad": (
            dict(nt_samples=args.nt_samples, stdevs=0.15),
            lambda: NoiseTunnel(Saliency(tmodel)).attribute(xt, nt_type="smoothgrad", nt_samples=args.nt_samples,
                                                            stdevs=0.15, target=1)),
    }
    rows = []
    for method, (opts, theirs) in cases.items():
        fn = attribution.make_fn(method, graphdef, target_class=1, raw=True, **opts)
        out = {}
        first, ours, ref_s, (got, want) = side_by_side(lambda fn=fn: jax.block_until_ready(fn(state, xj)),
                                                       theirs, repeats)
        if method == "integrated_gradients":
            got = np.asarray(got[0])
            out["max_abs_diff"] = float(np.abs(got - ref.to_nhwc(want)).max())
            out["max_abs"] = float(np.abs(got).max())
        rows.append({"config": config, "method": method, "batch": batch, "size": size, "options": opts,
                     "ibo_jax_s": round(ours, 4), "compile_s": round(first - ours, 3),
                     "captum_s": round(ref_s, 4), "speedup": round(ref_s / ours, 2), **out})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="demo,vit_tiny,vit_s16")
    p.add_argument("--batch-demo", type=int, default=16)
    p.add_argument("--batch-vit", type=int, default=1)
    p.add_argument("--n-steps", type=int, default=50)
    p.add_argument("--nt-samples", type=int, default=25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-vit", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="tiny models and sizes, seconds")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.smoke:
        args.n_steps, args.nt_samples, args.repeats, args.batch_demo = 4, 2, 1, 2
    out = {"benchmark": "attribution_throughput", "backend": jax.default_backend(), "host": platform.node(),
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "smoke": args.smoke, "rows": []}
    for config in [c for c in args.configs.split(",") if c]:
        vit = config == "vit_s16"  # vit_tiny runs at the demo's batch
        out["rows"] += bench(config, args.batch_vit if vit else args.batch_demo,
                             args.repeats_vit if vit else args.repeats, args)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
