"""What a stage sees (`StageContext`) and the pipeline's error (`PipelineError`); the pipeline
(`ibo_jax.pipeline`) builds one context per stage it runs."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from ibo_jax import io as ibo_io


class PipelineError(RuntimeError):
    """A problem with the work directory, the stage selection or a stage's inputs."""


@dataclasses.dataclass
class StageContext:
    """What a stage sees: its folder, its config section, keys, upstream folders, helpers."""

    name: str
    dir: Path
    workdir: Path
    cfg: ml_collections.ConfigDict
    config: ml_collections.ConfigDict
    key: jax.Array
    mesh: Any
    inputs: Mapping[str, Path]
    _writer: Any = None

    @property
    def process_index(self) -> int:
        return jax.process_index()

    @property
    def tumor_class(self) -> int:
        """The index of the tumor logit (global `config.tumor_class`; data labels stay 1 = tumor)."""
        return int(self.config.get("tumor_class", 1))

    @property
    def process_count(self) -> int:
        return jax.process_count()

    def input_dir(self, stage: str) -> Path:
        if stage not in self.inputs:
            raise PipelineError(
                f"stage {self.name!r} asked for stage {stage!r}, which is not one of its declared "
                f"inputs {sorted(self.inputs)}"
            )
        return self.inputs[stage]

    @property
    def chunks(self) -> ibo_io.ChunkDir:
        """The stage's `chunks/` folder: finished pieces (done / save / load / wait) for resume."""
        return ibo_io.ChunkDir(self.dir / "chunks")

    def chunk_path(self, name: str) -> Path:
        return self.chunks.file(name)

    def chunk_done(self, name: str) -> bool:
        return self.chunks.done(name)

    def wait_for_chunk(self, name: str, timeout_s: float = 3600.0) -> None:
        """Blocks until another process has written chunk `name` (multi-host stages)."""
        self.chunks.wait(name, timeout_s)

    def progress(self, iterable: Iterable | None = None, total: int | None = None,
                 desc: str | None = None, unit: str = "it"):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc or self.name, unit=unit,
                    disable=self.process_index != 0 or os.environ.get("IBO_JAX_NO_PROGRESS") == "1",
                    mininterval=1.0, dynamic_ncols=True)

    def _tensorboard(self):
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(self.workdir / "tensorboard" / self.name))
        return self._writer

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.process_index == 0:
            self._tensorboard().add_scalar(tag, float(value), int(step))

    def image(self, tag: str, image, step: int) -> None:
        """A uint8 [H, W, 3] image (e.g. a sample grid) in TensorBoard at `step`."""
        if self.process_index == 0:
            self._tensorboard().add_image(tag, np.asarray(image, np.uint8), int(step), dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
