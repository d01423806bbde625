"""The patch dataset format: one TFDS builder for every source (synthetic, slides, PCam).

Records are written with `file_format='array_record'`, so neither writing nor reading needs
TensorFlow (reading goes through `tfds.data_source` + grain). Features:

    image        PNG, uint8 [H, W, 3]
    tumor_mask   PNG, uint8 [H, W, 1] (0 / 255; all zero for normal patches)
    label        ClassLabel: 0 normal, 1 tumor
    slide        text: source slide (or pseudo-slide) id
    coords       int32 [2]: (row, col) of the patch's top-left corner in its slide, level 0
    index        int64: a stable integer id, unique over all splits

TFDS's Image feature encodes numpy through TensorFlow, so the builder is fed PNG bytes
(encoded here with Pillow). A source is any object with `name`, `image_size`, `description`,
`splits` (names) and `examples(split)` yielding dicts of numpy per the table above (image uint8
[H, W, 3], tumor_mask bool [H, W], label, slide str, coords, index).
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

VERSION = "1.0.0"


class PatchSource(Protocol):
    name: str
    image_size: int
    description: str
    splits: tuple[str, ...]

    def examples(self, split: str) -> Iterator[dict[str, Any]]: ...


def encode_png(array: np.ndarray) -> bytes:
    """uint8 [H, W] or [H, W, 3] -> PNG bytes (fast compression: the data stage is time-bound)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def features(image_size: int) -> tfds.features.FeaturesDict:
    s = int(image_size)
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(s, s, 3), encoding_format="png"),
        "tumor_mask": tfds.features.Image(shape=(s, s, 1), encoding_format="png"),
        "label": tfds.features.ClassLabel(names=["normal", "tumor"]),
        "slide": tfds.features.Text(),
        "coords": tfds.features.Tensor(shape=(2,), dtype=np.int32),
        "index": np.int64,
    })


class PatchDataset(tfds.core.GeneratorBasedBuilder):
    """Builds the patch dataset of one `PatchSource` into `data_dir/patch_dataset/1.0.0/`."""

    VERSION = tfds.core.Version(VERSION)

    def __init__(self, *, source: PatchSource, **kwargs):
        self._source = source
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    # TFDS prints "Downloading and preparing dataset Unknown size ..." and "... downloaded and
    # prepared" for every build; nothing is downloaded here, so those go to the INFO log.
    def _log_download_bytes(self) -> None:
        logging.info("building %s into %s", self.name, self.data_dir)

    def _log_download_done(self) -> None:
        logging.info("built %s in %s", self.name, self.data_dir)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"ibo_jax patches from {self._source.name}: {self._source.description}",
            features=features(self._source.image_size),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        """One generator per split that has examples: TFDS refuses an empty split, so one is left
        out here and the dataset's readers see it as empty (an evaluation-only dataset, say)."""
        del dl_manager  # everything is generated or read locally
        gens = {}
        for split in self._source.splits:
            examples = iter(self._source.examples(split))
            first = next(examples, None)
            if first is not None:
                gens[split] = self._generate_examples(split, itertools.chain([first], examples))
        if not gens:
            raise ValueError(f"{self._source.name}: every split ({', '.join(self._source.splits)}) is empty")
        return gens

    def _generate_examples(self, split: str, examples):
        from tqdm.auto import tqdm

        s = self._source.image_size
        bar = tqdm(examples, desc=f"data {split}", unit="patch", mininterval=1.0, dynamic_ncols=True,
                   disable=os.environ.get("IBO_JAX_NO_PROGRESS") == "1")
        for ex in bar:
            image, mask = np.asarray(ex["image"], np.uint8), np.asarray(ex["tumor_mask"], bool)
            if image.shape != (s, s, 3) or mask.shape != (s, s):
                raise ValueError(f"{self._source.name}/{split} patch {ex['index']}: image "
                                 f"{image.shape} / mask {mask.shape}, expected ({s}, {s}, 3) / ({s}, {s})")
            if int(ex["label"]) not in (0, 1):
                raise ValueError(f"{self._source.name}/{split} patch {ex['index']}: label {ex['label']!r}, "
                                 "expected 0 (normal) or 1 (tumor)")
            yield int(ex["index"]), {
                "image": encode_png(image),
                "tumor_mask": encode_png(mask.astype(np.uint8) * 255),
                "label": int(ex["label"]),
                "slide": str(ex["slide"]),
                "coords": np.asarray(ex["coords"], np.int32),
                "index": int(ex["index"]),
            }
