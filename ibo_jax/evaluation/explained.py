"""Reading the explain stage's outputs (the evaluation set and its heatmaps) with checks that name
the file and the array.

    ev, hm = explained.read(workdir / "explain", need=("levels",))
    ev: index int64 [N], image uint8 [N, H, W, 3], label int32 [N], tumor_mask bool [N, H, W],
        twin uint8 [N, H, W, 3] or twin_unavailable str (synthetic data: see data.patches)
    hm: methods [M] (CAM methods, then controls), controls [C], heatmaps float16 [N, M, H, W],
        levels int8 [N, M, H, W], n_levels [N, M], valid bool [N, M]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ibo_jax import io as ibo_io
from ibo_jax.evaluation.ranking import CONTROLS


def read(explain_dir: str | Path, *, need: Sequence[str] = ("heatmaps", "levels")) -> tuple[dict, dict]:
    explain_dir = Path(explain_dir)
    ev = ibo_io.read_npz(explain_dir / "eval_set.npz")
    hm = ibo_io.read_npz(explain_dir / "heatmaps.npz")
    for key in ("image", "label", "tumor_mask", "index"):
        if key not in ev:
            raise ValueError(f"{explain_dir}/eval_set.npz: missing array {key!r}")
    for key in ("methods", *need):
        if key not in hm:
            raise ValueError(f"{explain_dir}/heatmaps.npz: missing array {key!r}")
    n, h, w, _ = ev["image"].shape
    m = len(hm["methods"])
    for key in ("heatmaps", "levels"):
        if key in hm and hm[key].shape != (n, m, h, w):
            raise ValueError(f"{explain_dir}/heatmaps.npz: {key} has shape {hm[key].shape}, expected "
                             f"[N={n}, M={m}, H={h}, W={w}] to match eval_set.npz and the methods list")
    hm["methods"] = [str(x) for x in hm["methods"]]
    hm["controls"] = [str(x) for x in hm.get("controls", [])] or [x for x in hm["methods"] if x in CONTROLS]
    return ev, hm


def twins(ev: dict) -> tuple[object, str]:
    """(twin uint8 [N, H, W, 3] or None, why not) of a read evaluation set."""
    if "twin" in ev:
        return ev["twin"], ""
    return None, str(ev.get("twin_unavailable", "the evaluation set has no counterfactual twins"))
