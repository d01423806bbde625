"""The occlude stage's on-disk format, read by the score stage and by anyone re-scoring a run.
The names, readers and checks live in `ibo_jax.artifacts` (the files between stages); these are
the occlusion package's names for them.

    occlude/layout.json   strategies, curves, n_masks, fractions {curve: [q]}, draws {strategy: D},
                          methods, image_size, blocks [{strategy, curve, name, file}],
                          predicted_by {strategy: 'classifier' | 'stored' | model name}
    occlude/chunks/<strategy>__<curve>__<name>.npz
                          image uint8 [R, H, W, 3] (the exact bytes that are re-predicted; or p,
                          logit [R] for a strategy predicted_by 'stored'), pos int32 [R] (eval-set
                          position), method int16 [R] (index into methods), mask int16 [R] (1..n),
                          draw int16 [R]

    layout = store.occluded_layout(workdir / "occlude")
    for block in store.load_occluded(workdir / "occlude", curve=PRIMARY): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ibo_jax import artifacts

RESIDUAL = artifacts.RESIDUAL  # blocks with the whole annotated region removed (method -1), listed apart


def chunk_name(strategy: str, curve: str, name: str) -> str:
    """File name (inside the stage's chunks/ folder) of one block of occluded images."""
    return Path(artifacts.block_file(strategy, curve, name)).name


def occluded_layout(stage_dir: str | Path) -> dict:
    """The occlude stage's layout.json (strategies, curves, n_masks, fractions, draws, blocks)."""
    return artifacts.read_layout(stage_dir)


def load_occluded(stage_dir: str | Path, *, strategy: str | None = None,
                  curve: str | None = None, name: str | None = None) -> Iterator[dict]:
    """Yields the occluded blocks, one per chunk file, in layout order (`artifacts.occluded_blocks`).

    Each block: strategy, curve, name (unique within a strategy and curve), predicted_by, image
    uint8 [R, H, W, 3], pos int32 [R] (eval-set position), method int16 [R] (index into the
    layout's `methods`), mask int16 [R] (1..n), draw int16 [R]. Filters: strategy, curve, block
    name; curve='residual' gives the blocks with the whole annotated region removed (method -1).
    """
    return artifacts.occluded_blocks(stage_dir, strategy=strategy, curve=curve, name=name)
