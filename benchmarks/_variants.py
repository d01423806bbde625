"""UNet formulations the GPU benchmarks can run under, and the choice of the fastest one.

The variants switch how ibo_jax's UNet computes the same function (same parameters, same output
up to rounding); `unet_variants.py` times them side by side, and `gpu_suite.sh` hands the fastest
to the UNet and RePaint benchmarks of the same run (`--variant`), so one lent GPU session measures
the targets with the formulation that wins there.

    python benchmarks/_variants.py --best OUT/variants.log   # prints the name to use ('ibo' if unsure)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ibo_jax.models import unet as U  # noqa: E402

# name -> UNetConfig formulation fields (same parameters, same function up to rounding)
VARIANTS = {
    "ibo": {},
    "direct_up": {"upsample": "direct"},
    "flax_gn": {"group_norm": "flax"},
    "gn_alt": {"group_norm": "reshape" if jax.default_backend() == "cpu" else "matmul"},  # the other backend's way
    "dpa": {"attention_impl": "dot_product"},
    "previous": {"upsample": "direct", "group_norm": "flax", "attention_impl": "dot_product"},
}
CURRENT: dict = {}  # the formulation `use(name)` chose for the benchmark that runs


def formulation(name: str) -> dict:
    """The UNetConfig fields of a variant by name (ValueError naming the known ones)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown UNet variant {name!r}; known: {', '.join(VARIANTS)}")
    return dict(VARIANTS[name])


def use(name: str) -> None:
    """Benchmarks build their UNets in this variant from now on (`unet2d`, `apply`)."""
    CURRENT.clear()
    CURRENT.update(formulation(name))


def unet2d(*args, **kwargs):
    """`ibo_jax.models.unet.unet2d` in the current variant."""
    return U.unet2d(*args, **{**CURRENT, **kwargs})


def apply(model):
    """An already built UNet (e.g. imported from diffusers) in the current variant."""
    return U.reformulate(model, **CURRENT) if CURRENT else model


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
