"""Writing and reading the patch dataset (TFDS array_record files + grain).

    data_dir/
      dataset.json                 completeness marker, written last: source config, split
                                   counts, every file's size (a truncated file is caught by name)
      meta_<split>.npz             per record position: index, label, slide (no image decoding)
      tfds/patch_dataset/1.0.0/    the TFDS dataset (TFDS writes it in `incomplete.*`, renames)

`read_split` returns whole splits as numpy (sorted by the stable index); `make_loader` streams
batches through grain with shuffling, epochs and per-process sharding. Both follow the contracts
in docs/design.md: image uint8 (read_split) or float32 in [0, 1] (loader), label int32 (1 = tumor),
tumor_mask bool, index int64.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ibo_jax import artifacts
from ibo_jax import io as ibo_io
from ibo_jax.data import synthetic

FORMAT = "ibo_jax.patches/1"
MARKER = artifacts.DATASET.file  # "dataset.json"
SPLITS = ("train", "val", "test")
TFDS_SUBDIR = "tfds"


# ----------------------------------------------------------------------------- sources
@dataclasses.dataclass(frozen=True)
class SyntheticSource:
    """Synthetic histology, grouped into pseudo-slides (a slide shares a stain); the splits are
    70/15/15 by slide (`split_by='slide'`) or by patch (`'patch'`, the study's protocol)."""

    n_patches: int = 3000
    image_size: int = 64
    seed: int = 0
    n_slides: int = 20
    tumor_fraction: float = 0.5
    tumor_area: tuple[float, float] = (0.1, 0.8)
    split_by: str = "slide"
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    cue: str = "local"  # 'local' (label terms within r of the region) or 'global' (synthetic.generate)
    name: str = "synthetic"
    description: str = "synthetic H&E-like patches with exact tumor masks (ibo_jax.data.synthetic)"
    splits: tuple[str, ...] = SPLITS

    def __post_init__(self):
        if self.n_patches < 3:
            raise ValueError(f"n_patches must be >= 3, got {self.n_patches}")
        if self.split_by not in ("slide", "patch"):
            raise ValueError(f"split_by must be 'slide' or 'patch', got {self.split_by!r}")
        if self.split_by == "slide" and self.n_slides < 3:
            raise ValueError(f"n_slides must be >= 3 to split by slide, got {self.n_slides}")
        if abs(sum(self.fractions) - 1.0) > 1e-6 or min(self.fractions) <= 0:
            raise ValueError(f"fractions must be 3 positive numbers summing to 1, got {self.fractions}")
        if self.cue not in synthetic.CUES:
            raise ValueError(f"cue must be one of {synthetic.CUES}, got {self.cue!r}")

    def config(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("description")
        d.pop("splits")
        return d

    def assignment(self) -> dict[str, np.ndarray]:
        """label, slide, split (0 train, 1 val, 2 test) of every index 0..n_patches-1."""
        return _assignment(self)

    def _compute_assignment(self) -> dict[str, np.ndarray]:
        index = np.arange(self.n_patches, dtype=np.int64)
        label, slide = synthetic.plan(index, seed=self.seed, n_slides=self.n_slides,
                                      tumor_fraction=self.tumor_fraction)
        cum = np.cumsum(self.fractions)[:2]
        if self.split_by == "slide":
            order = np.random.default_rng([self.seed, 70]).permutation(self.n_slides)
            bounds = np.maximum(np.round(cum * self.n_slides).astype(int), [1, 2])
            bounds = np.minimum(bounds, [self.n_slides - 2, self.n_slides - 1])
            split_of_slide = np.empty(self.n_slides, np.int32)
            split_of_slide[order] = np.searchsorted(bounds, np.arange(self.n_slides), side="right")
            split = split_of_slide[slide]
        else:
            u = np.array([np.random.default_rng([self.seed, 71, i]).random() for i in index])
            split = np.searchsorted(cum, u, side="right").astype(np.int32)
        return {"index": index, "label": label, "slide": slide, "split": split}

    def render_args(self) -> dict[str, Any]:
        """The keyword arguments of `synthetic.generate` that reproduce these patches' bytes."""
        return {"seed": self.seed, "image_size": self.image_size, "n_slides": self.n_slides,
                "tumor_fraction": self.tumor_fraction, "tumor_area": tuple(self.tumor_area), "cue": self.cue}

    def examples(self, split: str, batch_size: int = 256) -> Iterator[dict[str, Any]]:
        a = self.assignment()
        idx = a["index"][a["split"] == SPLITS.index(split)]
        per_row = 32  # pseudo-coordinates: a slide's patches on a 32-wide grid
        for start in range(0, len(idx), batch_size):
            out = synthetic.generate(idx[start:start + batch_size], **self.render_args())
            for j, i in enumerate(out["index"]):
                rank = int(i) // self.n_slides
                yield {"image": out["image"][j], "tumor_mask": out["tumor_mask"][j],
                       "label": int(out["label"][j]), "slide": f"synthetic-{int(out['slide'][j]):03d}",
                       "coords": ((rank // per_row) * self.image_size, (rank % per_row) * self.image_size),
                       "index": int(i)}


@functools.lru_cache(maxsize=8)
def _assignment(source: SyntheticSource) -> dict[str, np.ndarray]:
    return source._compute_assignment()


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """Patches already in memory (your own data): arrays keyed like read_split's output plus
    `split` (str [N], one of train/val/test); `coords` optional."""

    arrays: dict[str, np.ndarray]
    name: str = "arrays"
    description: str = "patches from arrays"
    splits: tuple[str, ...] = SPLITS

    @property
    def image_size(self) -> int:
        return int(self.arrays["image"].shape[1])

    def config(self) -> dict[str, Any]:
        """Name, size and a digest of the arrays' bytes (a rebuild follows any change)."""
        h = hashlib.blake2b(digest_size=16)
        for k in sorted(self.arrays):
            a = np.ascontiguousarray(np.asarray(self.arrays[k]))
            h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        return {"name": self.name, "n": int(len(self.arrays["label"])), "digest": h.hexdigest()}

    def examples(self, split: str) -> Iterator[dict[str, Any]]:
        a = self.arrays
        for j in np.flatnonzero(np.asarray(a["split"]) == split):
            yield {"image": a["image"][j], "tumor_mask": a["tumor_mask"][j], "label": int(a["label"][j]),
                   "slide": str(a["slide"][j]), "index": int(a["index"][j]),
                   "coords": a["coords"][j] if "coords" in a else (0, 0)}


@dataclasses.dataclass(frozen=True)
class StainNormalized:
    """Any source with its images Macenko-normalized to the reference H&E stain (a patch with
    too little tissue to estimate a stain passes through unchanged)."""

    source: Any
    method: str = "macenko"

    def __post_init__(self):
        if self.method != "macenko":
            raise ValueError(f"stain normalization method must be 'macenko', got {self.method!r}")

    def __getattr__(self, name):  # name, image_size, description, splits of the wrapped source
        if name == "source" or name.startswith("__"):  # no recursion while (un)pickling
            raise AttributeError(name)
        return getattr(self.source, name)

    def config(self) -> dict[str, Any]:
        return {**self.source.config(), "stain_normalization": self.method}

    def examples(self, split: str) -> Iterator[dict[str, Any]]:
        from ibo_jax.data import stain

        for ex in self.source.examples(split):
            try:
                ex = {**ex, "image": stain.macenko_normalize(ex["image"])}
            except ValueError:
                pass
            yield ex


def counterfactual_twins(data_dir: str | os.PathLike, index: np.ndarray,
                         images: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Twins (uint8 [N, S, S, 3], the patches without their tumor) of stored patches, by re-rendering
    them from the dataset's own source config: (twins, "") or (None, why they are unavailable).

    Only synthetic data has twins, and only if the re-render reproduces every stored patch byte
    for byte (stain normalization, for one, is fitted per patch and changes the bytes)."""
    info = dataset_info(data_dir)
    cfg = dict(info["source"])
    if cfg.get("name") != "synthetic":
        return None, (f"the data are {cfg.get('name', 'not synthetic')!r} patches: only synthetic patches "
                      "have counterfactual twins")
    if cfg.get("stain_normalization"):
        return None, (f"the patches are stain-normalized ({cfg['stain_normalization']}), so a re-render does "
                      "not reproduce their bytes")
    known = {f.name for f in dataclasses.fields(SyntheticSource)}
    source = SyntheticSource(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in known})
    out = synthetic.generate(np.asarray(index, np.int64), counterfactual=True, **source.render_args())
    same = np.all(out["image"] == np.asarray(images), axis=(1, 2, 3))
    if not same.all():
        return None, (f"re-rendering {int((~same).sum())} of {len(same)} patches by index did not reproduce "
                      "their stored bytes (another generator version or a transformed dataset)")
    return out["twin"], ""


def hematoxylin_share(data_dir: str | os.PathLike, index: np.ndarray, images: np.ndarray,
                      masks: np.ndarray) -> np.ndarray | None:
    """Share of hematoxylin-dominant pixels inside each mask (`synthetic.hematoxylin_share`, the
    patches' true stains), or None for data whose stains are not known (not synthetic)."""
    cfg = dict(dataset_info(data_dir)["source"])
    if cfg.get("name") != "synthetic" or cfg.get("stain_normalization"):
        return None
    _, slides = synthetic.plan(np.asarray(index, np.int64), seed=int(cfg["seed"]), n_slides=int(cfg["n_slides"]),
                               tumor_fraction=float(cfg["tumor_fraction"]))
    return synthetic.hematoxylin_share(images, masks, slides, seed=int(cfg["seed"]))


# ----------------------------------------------------------------------------- writing
def _files(root: Path) -> dict[str, int]:
    tfds_root = root / TFDS_SUBDIR
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(tfds_root.rglob("*"))
            if p.is_file() and "incomplete" not in str(p.relative_to(tfds_root))}


def write_dataset(source, data_dir: str | os.PathLike) -> dict[str, Any]:
    """Builds `source` into data_dir (see the module docstring). Reuses a complete dataset of
    the same source config; anything else left there (a killed build) is deleted first."""
    import tensorflow_datasets as tfds

    from ibo_jax.data.tfds_builder import PatchDataset

    root = Path(data_dir)
    cfg = source.config()
    marker = root / MARKER
    if marker.is_file():
        try:
            info = dataset_info(root)
            if info["source"] == ibo_io.read_json(marker)["source"] == ibo_io.plain(cfg, lists=True):
                return info
        except ValueError:
            pass
    for stale in [marker, *root.glob("meta_*.npz"), root / TFDS_SUBDIR]:
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    builder = PatchDataset(source=source, data_dir=str(root / TFDS_SUBDIR))
    tfds.display_progress_bar(False)  # its per-split shuffling bars print temporary paths
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    builder_dir = Path(builder.data_dir).relative_to(root)
    skip = {"image": tfds.decode.SkipDecoding(), "tumor_mask": tfds.decode.SkipDecoding()}
    splits = {}
    for split in source.splits:
        written = split in builder.info.splits  # an empty split is not written (tfds_builder)
        ds = builder.as_data_source(split, decoders=skip) if written else []
        recs = [ds[i] for i in range(len(ds))]
        meta = {"index": np.array([r["index"] for r in recs], np.int64),
                "label": np.array([r["label"] for r in recs], np.int32),
                "slide": np.array([_text(r["slide"]) for r in recs], dtype=str)}
        ibo_io.write_npz(root / f"meta_{split}.npz", meta)
        splits[split] = {"n": len(recs), "normal": int((meta["label"] == 0).sum()),
                         "tumor": int((meta["label"] == 1).sum()),
                         "slides": int(len(np.unique(meta["slide"])))}
    info = {"format": FORMAT, "builder_dir": str(builder_dir), "image_size": int(source.image_size),
            "source": ibo_io.plain(cfg, lists=True), "splits": splits, "files": _files(root)}
    info["bytes"] = int(sum(info["files"].values()))
    ibo_io.write_json(marker, info)  # last: the dataset is complete
    return info


def _text(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


# ----------------------------------------------------------------------------- reading
def dataset_info(data_dir: str | os.PathLike) -> dict[str, Any]:
    """The marker of a complete dataset; checks that every file is there with its size."""
    root = Path(data_dir)
    marker = root / MARKER
    if not marker.is_file():
        raise ValueError(f"{root}: not a complete patch dataset ({MARKER} missing; build it with "
                         "stage `data` or ibo_jax.data.patches.write_dataset)")
    info = ibo_io.read_json(marker)
    if info.get("format") != FORMAT:
        raise ValueError(f"{marker}: format {info.get('format')!r}, expected {FORMAT!r}")
    for rel, size in info["files"].items():
        path = root / rel
        if not path.is_file():
            raise ValueError(f"{path}: dataset file missing (listed in {marker})")
        actual = path.stat().st_size
        if actual != size:
            raise ValueError(f"{path}: dataset file is {actual} bytes, expected {size} "
                             "(truncated or modified); rebuild the dataset")
    return info


class _Split:
    """One split: record positions ordered by index, and a decoding random-access source."""

    def __init__(self, data_dir, split: str, label: int | None):
        import tensorflow_datasets as tfds

        self.root = Path(data_dir)
        self.info = dataset_info(self.root)
        if split not in self.info["splits"]:
            raise ValueError(f"{self.root}: no split {split!r} (have {sorted(self.info['splits'])})")
        meta = ibo_io.read_npz(self.root / f"meta_{split}.npz")
        order = np.argsort(meta["index"], kind="stable")
        if label is not None:
            if int(label) not in (0, 1):
                raise ValueError(f"label must be 0 (normal), 1 (tumor) or None, got {label}")
            order = order[meta["label"][order] == int(label)]
        self.positions = order
        self.split = split
        builder_dir = self.root / self.info["builder_dir"]
        empty = self.info["splits"][split]["n"] == 0  # not written: TFDS has no empty splits
        self.source = [] if empty else tfds.builder_from_directory(str(builder_dir)).as_data_source(split)

    def read(self, positions) -> list[dict[str, Any]]:
        try:
            return [self.source[int(p)] for p in positions]
        except Exception as e:
            files = ", ".join(sorted(f for f in self.info["files"] if f"-{self.split}." in f))
            raise ValueError(f"{self.root}: cannot read split {self.split!r} ({files}): "
                             f"{type(e).__name__}: {e}") from e


def _example(rec: dict[str, Any]) -> dict[str, Any]:
    return {"image": rec["image"], "label": np.int32(rec["label"]),
            "tumor_mask": rec["tumor_mask"][..., 0] > 127, "index": np.int64(rec["index"]),
            "slide": _text(rec["slide"]), "coords": np.asarray(rec["coords"], np.int32)}


def read_split(data_dir: str | os.PathLike, split: str, *, label: int | None = None,
               limit: int | None = None) -> dict[str, np.ndarray]:
    """A whole split (optionally one label, the first `limit` by index) as numpy: image uint8
    [N, H, W, 3], label int32 [N], tumor_mask bool [N, H, W], index int64 [N], slide str [N],
    coords int32 [N, 2]; sorted by index."""
    sp = _Split(data_dir, split, label)
    positions = sp.positions if limit is None else sp.positions[: int(limit)]
    recs = [_example(r) for r in sp.read(positions)]
    s = int(sp.info["image_size"])
    if not recs:
        return {"image": np.zeros((0, s, s, 3), np.uint8), "label": np.zeros((0,), np.int32),
                "tumor_mask": np.zeros((0, s, s), bool), "index": np.zeros((0,), np.int64),
                "slide": np.zeros((0,), str), "coords": np.zeros((0, 2), np.int32)}
    return {k: np.stack([r[k] for r in recs]) for k in recs[0]}


class _LoaderSource:
    """grain random-access source over one shard of a split; float32 images in [0, 1]."""

    def __init__(self, sp: _Split, positions: np.ndarray):
        self.sp, self.positions = sp, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = _example(self.sp.read([self.positions[i]])[0])
        ex["image"] = ex["image"].astype(np.float32) / 255.0
        return ex


def make_loader(data_dir: str | os.PathLike, split: str, *, batch_size: int, shuffle: bool = True,
                seed: int = 0, num_epochs: int | None = 1, label: int | None = None,
                shard_index: int = 0, shard_count: int = 1, drop_remainder: bool = True):
    """A grain dataset of batches: image float32 [B, H, W, 3] in [0, 1], label int32 [B],
    tumor_mask bool [B, H, W], index int64 [B], slide str [B], coords int32 [B, 2].

    Process `shard_index` of `shard_count` reads every shard_count-th example (by index); with
    shuffle, each epoch has its own order from `seed`. num_epochs=None repeats forever."""
    import grain

    if not (0 <= shard_index < shard_count):
        raise ValueError(f"shard_index must be in [0, {shard_count}), got {shard_index}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sp = _Split(data_dir, split, label)
    positions = sp.positions[shard_index::shard_count]
    if drop_remainder and len(positions) < batch_size:
        raise ValueError(f"{data_dir}: split {split!r} shard {shard_index}/{shard_count} has "
                         f"{len(positions)} examples, fewer than batch_size={batch_size}")
    ds = grain.MapDataset.source(_LoaderSource(sp, positions))
    if shuffle:
        ds = ds.shuffle(seed=int(seed) & 0x7FFFFFFF)
    ds = ds.repeat(num_epochs)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
