"""PatchCamelyon (PCam) as a patch-dataset source: the original HDF5 files, read with h5py.

PCam (Veeling et al. 2018) cuts 327,680 patches of 96x96 px from CAMELYON16 slides at level 2
(about 10x). Its files, as published on Zenodo (record 2546921), in one directory:

    camelyonpatch_level_2_split_{train,valid,test}_x.h5      dataset 'x': uint8 [N, 96, 96, 3]
    camelyonpatch_level_2_split_{train,valid,test}_y.h5      dataset 'y': uint8 [N, 1, 1, 1]
    camelyonpatch_level_2_split_{train,valid,test}_meta.csv  optional: coord_y, coord_x, ..., wsi

They are published gzipped; a `.h5.gz` without its `.h5` is decompressed once beside it (to a
temporary name, then renamed: h5py needs random access). PCam's own splits are
kept (valid -> val); the meta files, when present, give each patch its slide (`wsi`) and
coordinates. Rows are written in file order; `max_per_split` keeps a seeded random subset of each
split (sorted, so reading stays sequential). The stable index of row r of split s is
s * 2**20 + r.

PCam has **no pixel annotations**: a patch is tumor when its centre 32x32 px region holds at least
one tumor pixel. The tumor mask written for a tumor patch is therefore that centre region
(`mask='center'`, a proxy for the annotation that the ground-truth IoU of the evaluation uses; the
report says so), or nothing (`mask='none'`: all-zero masks, for training only; the evaluation's
ground truth then has no meaning). Patches are resized to `image_size` (Pillow bicubic) when it is
not 96, masks by nearest neighbour.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

PCAM_SIZE = 96
CENTER = 32  # side of the centre region that defines a PCam label
FILE_SPLITS = {"train": "train", "val": "valid", "test": "test"}  # ours -> PCam's file names
MASKS = ("center", "none")


def file_path(root: str | os.PathLike, split: str, part: str) -> Path:
    """The PCam file of one of our splits ('train', 'val', 'test'); part 'x', 'y' or 'meta'."""
    ext = "csv" if part == "meta" else "h5"
    return Path(root) / f"camelyonpatch_level_2_split_{FILE_SPLITS[split]}_{part}.{ext}"


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - the `pcam` extra installs it
        raise ImportError("reading PatchCamelyon needs h5py: pip install 'ibo_jax[pcam]'") from e
    return h5py


def gunzip_once(gz: Path, path: Path) -> None:
    """Decompresses gz onto path through a temporary file (nothing half-written is left)."""
    import gzip
    import shutil

    from ibo_jax.io import atomic_path

    logging.info("PCam: decompressing %s (once)", gz)
    try:
        with atomic_path(path) as tmp, gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, length=16 << 20)
    except (OSError, EOFError) as e:
        raise ValueError(f"{gz}: cannot decompress it to {path.name} ({e}); gunzip it yourself") from e


def _open(path: Path, key: str, expect_tail: tuple[int, ...]):
    """(h5py File, dataset) after checking the file, the key, dtype and trailing shape."""
    if not path.is_file():
        gz = path.with_name(path.name + ".gz")
        if not gz.is_file():
            raise ValueError(f"{path}: PCam file not found")
        gunzip_once(gz, path)
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from e
    if key not in f:
        f.close()
        raise ValueError(f"{path}: no dataset {key!r} (has {sorted(f.keys()) if f else []})")
    ds = f[key]
    if ds.dtype != np.uint8 or tuple(ds.shape[1:]) != expect_tail:
        shape, dtype = ds.shape, ds.dtype
        f.close()
        raise ValueError(f"{path}: dataset {key!r} is {dtype} {shape}, expected uint8 [N, "
                         f"{', '.join(map(str, expect_tail))}]")
    return f, ds


def read_meta(path: Path, n: int) -> dict[str, np.ndarray] | None:
    """slide (str [n]) and coords (int [n, 2], row/col) from a PCam meta CSV, or None if absent."""
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = ("coord_y", "coord_x", "wsi")
    if rows and any(k not in rows[0] for k in need):
        raise ValueError(f"{path}: columns {sorted(rows[0])}, expected at least {list(need)}")
    if len(rows) != n:
        raise ValueError(f"{path}: {len(rows)} rows, but the split has {n} patches")
    try:
        coords = np.array([[int(float(r["coord_y"])), int(float(r["coord_x"]))] for r in rows], np.int64)
    except ValueError as e:
        raise ValueError(f"{path}: coord_y / coord_x must be numbers ({e})") from e
    return {"slide": np.array([r["wsi"] for r in rows], dtype=str), "coords": coords.reshape(n, 2)}


def center_mask(size: int = PCAM_SIZE, center: int = CENTER) -> np.ndarray:
    m = np.zeros((size, size), bool)
    lo = (size - center) // 2
    m[lo:lo + center, lo:lo + center] = True
    return m


@dataclasses.dataclass(frozen=True)
class PcamSource:
    """PatchCamelyon's HDF5 files (see the module docstring) as a patch-dataset source."""

    root: str
    image_size: int = PCAM_SIZE
    max_per_split: int = 0  # 0 = every patch
    mask: str = "center"
    seed: int = 0
    batch_size: int = 512
    name: str = "pcam"
    description: str = ("PatchCamelyon 96x96 patches (CAMELYON16, level 2); the tumor mask is PCam's "
                        "centre 32x32 label region, not a pixel annotation")
    splits: tuple[str, ...] = ("train", "val", "test")

    def __post_init__(self):
        if self.mask not in MASKS:
            raise ValueError(f"data.pcam_mask: {self.mask!r}, expected one of {MASKS}")
        if self.max_per_split < 0:
            raise ValueError(f"data.max_per_split: must be >= 0, got {self.max_per_split}")
        if not Path(self.root).is_dir():
            raise ValueError(f"data.pcam_dir: {self.root!r} is not a directory of PCam files")
        for split in self.splits:  # fail before anything is written
            self.rows(split)

    def config(self) -> dict[str, Any]:
        """What decides the dataset's content, with the files' sizes and times (a changed file
        rebuilds)."""
        d = dataclasses.asdict(self)
        for k in ("description", "splits", "batch_size"):
            d.pop(k)
        files = {}
        for split in self.splits:
            for part in ("x", "y", "meta"):
                p = file_path(self.root, split, part)
                if p.is_file():
                    st = p.stat()
                    files[p.name] = [int(st.st_size), int(st.st_mtime)]
        d["files"] = files
        return d

    def rows(self, split: str) -> np.ndarray:
        """The rows of `split` that go into the dataset (sorted)."""
        fx, x = _open(file_path(self.root, split, "x"), "x", (PCAM_SIZE, PCAM_SIZE, 3))
        fy, y = _open(file_path(self.root, split, "y"), "y", (1, 1, 1))
        n, ny = len(x), len(y)
        fx.close()
        fy.close()
        if n != ny:
            raise ValueError(f"{file_path(self.root, split, 'y')}: {ny} labels for {n} images in "
                             f"{file_path(self.root, split, 'x').name}")
        if self.max_per_split and self.max_per_split < n:
            rng = np.random.default_rng([self.seed, 96, self.splits.index(split)])
            return np.sort(rng.choice(n, self.max_per_split, replace=False))
        return np.arange(n)

    def examples(self, split: str) -> Iterator[dict[str, Any]]:
        from PIL import Image

        rows = self.rows(split)
        fx, x = _open(file_path(self.root, split, "x"), "x", (PCAM_SIZE, PCAM_SIZE, 3))
        fy, y = _open(file_path(self.root, split, "y"), "y", (1, 1, 1))
        try:
            meta = read_meta(file_path(self.root, split, "meta"), len(x))
            base = self.splits.index(split) << 20
            s = int(self.image_size)
            centre = center_mask()
            if s != PCAM_SIZE:
                centre = np.asarray(Image.fromarray(centre).resize((s, s), Image.Resampling.NEAREST))
            empty = np.zeros((s, s), bool)
            for start in range(0, len(rows), self.batch_size):
                part = rows[start:start + self.batch_size]
                images = x[part]  # h5py reads a sorted index list in one pass
                labels = y[part].reshape(-1)
                bad = labels > 1
                if bad.any():
                    raise ValueError(f"{file_path(self.root, split, 'y')}: label {int(labels[bad][0])} at "
                                     f"row {int(part[bad][0])}, expected 0 or 1")
                for j, r in enumerate(part):
                    img = images[j]
                    if s != PCAM_SIZE:
                        img = np.asarray(Image.fromarray(img).resize((s, s), Image.Resampling.BICUBIC))
                    label = int(labels[j])
                    yield {"image": img,
                           "tumor_mask": centre if label == 1 and self.mask == "center" else empty,
                           "label": label,
                           "slide": str(meta["slide"][r]) if meta is not None else f"pcam-{split}",
                           "coords": tuple(meta["coords"][r]) if meta is not None else (0, 0),
                           "index": base + int(r)}
        finally:
            fx.close()
            fy.close()
