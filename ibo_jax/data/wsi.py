"""Whole-slide images (openslide) -> labelled patches with tumor masks, and a dataset source.

Per slide: a tissue mask from a low-resolution level (saturation threshold), a grid of
`patch_size` windows at `level` whose tissue share is >= min_tissue, the annotation rasterized
per window (annotations.py). A window is tumor when its tumor share is >= tumor_threshold, normal
when it has no tumor pixel, skipped in between. Patches are resized to `image_size` with
antialiasing (Pillow box/Lanczos), masks by area average then threshold 0.5 (METHOD.md).
`WsiSource` feeds the patch dataset builder, split 70/15/15 by slide.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ibo_jax.data import annotations as ann_lib


def open_slide(path: str | os.PathLike):
    import openslide

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: slide file not found")
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideError as e:
        raise ValueError(f"{path}: openslide cannot read it ({e}); pyramidal TIFFs need tiled "
                         "levels as main IFDs, JPEG tiles need imagecodecs to write") from e


def tissue_mask(slide, downsample: float = 32.0, min_saturation: float = 0.07) -> tuple[np.ndarray, float]:
    """(tissue bool [h, w] at a low-resolution level, its level-0 downsample)."""
    level = slide.get_best_level_for_downsample(downsample)
    w, h = slide.level_dimensions[level]
    rgb = np.asarray(slide.read_region((0, 0), level, (w, h)).convert("RGB"), np.float32)
    mx, mn = rgb.max(-1), rgb.min(-1)
    sat = (mx - mn) / np.maximum(mx, 1.0)
    return (sat > min_saturation) & (mx > 20), float(slide.level_downsamples[level])


def extract(slide_path: str | os.PathLike, annotation_path: str | os.PathLike | None = None, *,
            patch_size: int = 512, level: int = 0, image_size: int | None = None,
            min_tissue: float = 0.5, tumor_threshold: float = 0.5,
            max_per_class: int | None = None, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Yields patches of one slide: image uint8 [S, S, 3], tumor_mask bool [S, S], label,
    slide (file stem), coords (row, col) level 0, local (grid number within the slide)."""
    slide = open_slide(slide_path)
    name = Path(slide_path).stem
    polys = ann_lib.read_asap(annotation_path) if annotation_path else []
    if level >= slide.level_count:
        raise ValueError(f"{slide_path}: level {level} requested, slide has {slide.level_count}")
    ds_level = float(slide.level_downsamples[level])
    tissue, ds_t = tissue_mask(slide)
    step0 = patch_size * ds_level  # window size in level-0 pixels
    w0, h0 = slide.level_dimensions[0]
    ys, xs = np.meshgrid(np.arange(0, h0 - step0 + 1, step0), np.arange(0, w0 - step0 + 1, step0),
                         indexing="ij")
    cand = []
    for y, x in zip(ys.ravel(), xs.ravel(), strict=True):
        t = tissue[int(y / ds_t):int(np.ceil((y + step0) / ds_t)), int(x / ds_t):int(np.ceil((x + step0) / ds_t))]
        if t.size and t.mean() >= min_tissue:
            cand.append((int(y), int(x)))
    order = np.random.default_rng([seed, len(cand)]).permutation(len(cand))
    counts = {0: 0, 1: 0}
    out_size = int(image_size or patch_size)
    for j in order:
        y, x = cand[j]
        mask = ann_lib.rasterize(polys, (x, y), (patch_size, patch_size), downsample=ds_level)
        share = mask.mean()
        label = 1 if share >= tumor_threshold else 0 if share == 0 else None
        if label is None or (max_per_class is not None and counts[label] >= max_per_class):
            continue
        counts[label] += 1
        img = slide.read_region((x, y), level, (patch_size, patch_size)).convert("RGB")
        if out_size != patch_size:
            img = img.resize((out_size, out_size), Image.Resampling.LANCZOS)
            m = Image.fromarray(mask.astype(np.float32)).resize((out_size, out_size), Image.Resampling.BOX)
            mask = np.asarray(m) >= 0.5
        yield {"image": np.asarray(img, np.uint8), "tumor_mask": mask, "label": label, "slide": name,
               "coords": (y, x), "local": int(j)}


@dataclasses.dataclass(frozen=True)
class WsiSource:
    """Slides (with optional ASAP annotations) as a patch-dataset source, split by slide.
    The stable index of a patch is slide_number * 2**20 + its grid number in the slide."""

    slides: Sequence[tuple[str, str | None]]
    patch_size: int = 512
    level: int = 0
    image_size: int = 224
    min_tissue: float = 0.5
    tumor_threshold: float = 0.5
    max_per_class: int | None = None
    seed: int = 0
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    name: str = "wsi"
    description: str = "patches cut from whole-slide images (openslide) with ASAP annotations"
    splits: tuple[str, ...] = ("train", "val", "test")

    def config(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("description")
        d["slides"] = [[str(s), None if a is None else str(a)] for s, a in self.slides]
        return d

    def split_of_slides(self) -> np.ndarray:
        n = len(self.slides)
        if n < 3:
            raise ValueError(f"WsiSource needs >= 3 slides to split 70/15/15 by slide, got {n}")
        bounds = np.clip(np.round(np.cumsum(self.fractions)[:2] * n).astype(int), [1, 2], [n - 2, n - 1])
        split = np.empty(n, np.int32)
        split[np.random.default_rng([self.seed, 70]).permutation(n)] = np.searchsorted(
            bounds, np.arange(n), side="right")
        return split

    def examples(self, split: str) -> Iterator[dict[str, Any]]:
        which = self.split_of_slides()
        for i, (slide, ann) in enumerate(self.slides):
            if self.splits[which[i]] != split:
                continue
            for ex in extract(slide, ann, patch_size=self.patch_size, level=self.level,
                              image_size=self.image_size, min_tissue=self.min_tissue,
                              tumor_threshold=self.tumor_threshold,
                              max_per_class=self.max_per_class, seed=self.seed):
                ex["index"] = i * 2**20 + ex.pop("local")
                yield ex
