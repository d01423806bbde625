"""UNet formulations the GPU benchmarks can run under, and the choice of the fastest one.

The variants switch how ibo_jax's UNet computes the same function (same parameters, same output
up to rounding); `unet_variants.py` times them side by side, and `gpu_suite.sh` hands the fastest
to the UNet and RePaint benchmarks of the same run (`--variant`), so one lent GPU session measures
the targets with the formulation that wins there.

    python benchmarks/_variants.py --best OUT/variants.log   # prints the name to use ('ibo' if unsure)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

import jax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ibo_jax.models import unet as U  # noqa: E402

VARIANTS = {
    "ibo": {},
    "direct_up": {"subpixel": False},
    "flax_gn": {"flax_gn": True},
    "gn_alt": {"gn_alt": True},
    "dpa": {"dpa": True},
    "previous": {"subpixel": False, "flax_gn": True, "dpa": True},
}


@contextlib.contextmanager
def variant(subpixel: bool = True, flax_gn: bool = False, dpa: bool = False, gn_alt: bool = False):
    """Models built and traced inside use this formulation (class attributes, restored on exit)."""
    old = (U.Upsample2D.subpixel, U._Layers.norm, U.attention, U.GroupNorm.group_matmul)
    U.Upsample2D.subpixel = subpixel
    if gn_alt:
        U.GroupNorm.group_matmul = jax.default_backend() != "cpu"
    if flax_gn:
        U._Layers.norm = lambda self, c, groups, eps: nnx.GroupNorm(
            c, num_groups=groups, epsilon=eps, dtype=self.dtype, param_dtype=self.param_dtype, rngs=self.rngs)
    if dpa:
        U.attention = jax.nn.dot_product_attention
    try:
        yield
    finally:
        U.Upsample2D.subpixel, U._Layers.norm, U.attention, U.GroupNorm.group_matmul = old


def named(name: str):
    """The context manager of a variant by name (ValueError naming the known ones)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown UNet variant {name!r}; known: {', '.join(VARIANTS)}")
    return variant(**VARIANTS[name])


def best(rows: list[dict], margin: float = 0.02) -> str:
    """The fastest variant of a `unet_variants` result, if it beats 'ibo' (the defaults) by more
    than `margin` (relative) and computed the same function (max_rel_diff < 0.05); else 'ibo'."""
    by = {r["variant"]: r for r in rows if r.get("max_rel_diff", 1.0) < 0.05 and r.get("ms", 0) > 0}
    if "ibo" not in by:
        return "ibo"
    fastest = min(by.values(), key=lambda r: r["ms"])
    return fastest["variant"] if fastest["ms"] < (1.0 - margin) * by["ibo"]["ms"] else "ibo"


def best_from_log(path: str, margin: float = 0.02) -> str:
    """`best` of the last JSON line of a unet_variants log; 'ibo' when the log has none or the
    run did not finish (a `<name>.rc` beside the log that is not 0, e.g. 124 for a time-out)."""
    rc_file = os.path.splitext(path)[0] + ".rc"
    if os.path.exists(rc_file) and open(rc_file).read().strip() != "0":
        return "ibo"
    try:
        with open(path) as f:
            lines = [ln for ln in f.read().splitlines() if ln.startswith("{")]
        result = json.loads(lines[-1]) if lines else {}
    except (OSError, json.JSONDecodeError):
        return "ibo"
    return best(result.get("rows", []), margin) if result.get("bench") == "unet_variants" else "ibo"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--best", metavar="LOG", required=True, help="a unet_variants.py log (its last JSON line)")
    p.add_argument("--margin", type=float, default=0.02)
    a = p.parse_args()
    print(best_from_log(a.best, a.margin))
