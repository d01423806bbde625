"""The occlude stage's on-disk format, read by the score stage and by anyone re-scoring a run.

    occlude/layout.json   strategies, curves, n_masks, fractions {curve: [q]}, draws {strategy: D},
                          methods, image_size, blocks [{strategy, curve, name, file}]
    occlude/chunks/<strategy>__<curve>__<name>.npz
                          image uint8 [R, H, W, 3] (the exact bytes that are re-predicted),
                          pos int32 [R] (eval-set position), method int16 [R] (index into methods),
                          mask int16 [R] (1..n), draw int16 [R]

    layout = store.occluded_layout(workdir / "occlude")
    for block in store.load_occluded(workdir / "occlude", curve="morf"): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ibo_jax import io as ibo_io

RESIDUAL = "residual"  # blocks with the whole annotated region removed (method -1), listed apart


def chunk_name(strategy: str, curve: str, name: str) -> str:
    """File name of one block of occluded images."""
    return f"{strategy}__{curve}__{name}.npz"


def occluded_layout(stage_dir: str | Path) -> dict:
    """The occlude stage's layout.json (strategies, curves, n_masks, fractions, draws, blocks)."""
    path = Path(stage_dir) / "layout.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: has the occlude stage finished?")
    return ibo_io.read_json(path)


def load_occluded(stage_dir: str | Path, *, strategy: str | None = None,
                  curve: str | None = None, name: str | None = None) -> Iterator[dict]:
    """Yields the occluded blocks, one per chunk file, in layout order.

    Each block: strategy, curve, name (unique within a strategy and curve), image uint8
    [R, H, W, 3], pos int32 [R] (eval-set position), method int16 [R] (index into the layout's
    `methods`), mask int16 [R] (1..n), draw int16 [R]. Filters: strategy, curve, block name;
    curve='residual' gives the blocks with the whole annotated region removed (method -1).
    """
    stage_dir = Path(stage_dir)
    layout = occluded_layout(stage_dir)
    listed = layout.get("residual_blocks", []) if curve == RESIDUAL else layout["blocks"]
    for b in listed:
        if any(want is not None and b[field] != want
               for field, want in (("strategy", strategy), ("curve", curve), ("name", name))):
            continue
        path = stage_dir / b["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: occluded block listed in layout.json is missing")
        arrays = ibo_io.read_npz(path)
        yield {"strategy": b["strategy"], "curve": b["curve"], "name": b["name"], **arrays}
