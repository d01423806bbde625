"""Whole-slide images (openslide) -> labelled patches with tumor masks, at CAMELYON16 scale.

Per slide, in two passes (`WsiSource` runs them over a `spawn` process pool, one slide per task):
1. **candidates**: the tissue mask (Otsu on saturation at a low-resolution level, small objects
   removed, holes filled; or a fixed threshold), the grid of `patch_size` windows at `level` with
   tissue share >= min_tissue, and each window's label from the annotation (`raster`: a
   low-resolution screen, full-resolution rasterization of clipped polygons only where the screen
   cannot decide). No pixel of level 0 is read. A window is tumor when its tumor share is >=
   tumor_threshold, normal when it has no tumor pixel, skipped in between.
2. **patches**: after a deterministic allocation of the class quotas over slides (per-slide caps,
   then totals per class), only the chosen windows are read, resized to `image_size`
   (antialiased; masks by area average then threshold 0.5) and written, one file per slide.
Each pass writes one file per slide into the cache folder (temporary name, then rename), so a
killed extraction continues where it stopped, finished slides are never redone, and the bytes do
not depend on the number of workers or on where a run resumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ibo_jax import io as ibo_io
from ibo_jax.data import annotations as ann_lib
from ibo_jax.data.raster import SlideAnnotations

#: what openslide reads (the default `data.slides_glob`)
SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".bif")
TISSUE_DOWNSAMPLE = 32.0
SINGLE_LEVEL_MAX = 10_000
INDEX_LIMIT = 2**31  # patch indices go through fold_in as 31-bit ints


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


def check_pyramid(slide, path) -> None:
    """A slide openslide would read wrongly or painfully: one huge level (no pyramid)."""
    w, h = slide.level_dimensions[0]
    if slide.level_count == 1 and max(w, h) > SINGLE_LEVEL_MAX:
        raise ValueError(f"{path}: {w} x {h} px with a single level; a slide this large needs a pyramid "
                         "(lower-resolution levels as main IFDs, e.g. `vips tiffsave --pyramid --tile`); "
                         "SubIFD-only pyramids read as one level here")


def _blank(rgba: np.ndarray) -> bool:
    return bool(rgba[..., 3].max() == 0 or rgba[..., :3].max() == 0)


def tissue_mask(slide, path="slide", *, method: str = "otsu", min_saturation: float = 0.07,
                min_object_px: int = 16) -> tuple[np.ndarray, float]:
    """(tissue bool [h, w] at a low-resolution level, its level-0 downsample).

    method 'otsu': Otsu's threshold on saturation, kept within [min_saturation / 2, 2 min_saturation]
    (a slide that is all tissue has no background for Otsu to split off), objects smaller than
    min_object_px removed, holes filled; 'fixed': saturation > min_saturation."""
    from scipy import ndimage

    level = slide.get_best_level_for_downsample(TISSUE_DOWNSAMPLE)
    w, h = slide.level_dimensions[level]
    rgba = np.asarray(slide.read_region((0, 0), level, (w, h)))
    if _blank(rgba):
        raise ValueError(f"{path}: level {level} reads back all zero or transparent (a SubIFD pyramid, whose "
                         "upper levels openslide returns as zeros? write the levels as main IFDs)")
    rgb = rgba[..., :3].astype(np.float32)
    mx, mn = rgb.max(-1), rgb.min(-1)
    sat = (mx - mn) / np.maximum(mx, 1.0)
    if method == "fixed":
        return (sat > min_saturation) & (mx > 20), float(slide.level_downsamples[level])
    if method != "otsu":
        raise ValueError(f"data.tissue_method: {method!r}; expected 'otsu' or 'fixed'")
    t = float(np.clip(otsu(sat[mx > 20]), min_saturation / 2, 2 * min_saturation))
    m = (sat > t) & (mx > 20)
    lab, n = ndimage.label(m)
    if n:
        sizes = np.bincount(lab.ravel())
        m = (sizes >= min_object_px)[lab] & m
    return ndimage.binary_fill_holes(m), float(slide.level_downsamples[level])


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (0.0 when there are none)."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return 0.0
    hist, edges = np.histogram(v, bins=bins, range=(0.0, 1.0))
    p = hist / hist.sum()
    w0 = np.cumsum(p)
    mu = np.cumsum(p * (edges[:-1] + edges[1:]) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        between = (mu[-1] * w0 - mu) ** 2 / (w0 * (1 - w0))
    return float(edges[1:][int(np.nanargmax(between))])


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    patch_size: int = 512
    level: int = 0
    image_size: int = 224
    min_tissue: float = 0.5
    tumor_threshold: float = 0.5
    tissue_method: str = "otsu"
    stain_normalization: str = ""  # 'macenko': in the workers, patch by patch (as data.StainNormalized)


def slide_candidates(slide_path: str, ann_path: str | None, cfg: ExtractConfig) -> dict[str, Any]:
    """Pass 1 of one slide: every tissue window's level-0 coords, grid number, tissue share and
    tumor share (-1 = skipped label), with counts and timings. Reads no level-0 pixel."""
    t0 = time.perf_counter()
    slide = open_slide(slide_path)
    check_pyramid(slide, slide_path)
    if cfg.level >= slide.level_count:
        raise ValueError(f"{slide_path}: level {cfg.level} requested, the slide has {slide.level_count}")
    skipped: dict[str, int] = {}
    polys = ann_lib.read_asap(ann_path, skipped=skipped) if ann_path else []
    ds_level = float(slide.level_downsamples[cfg.level])
    tissue, ds_t = tissue_mask(slide, slide_path, method=cfg.tissue_method)
    step0 = cfg.patch_size * ds_level
    w0, h0 = slide.level_dimensions[0]
    ny, nx = int((h0 - step0) // step0) + 1 if h0 >= step0 else 0, int((w0 - step0) // step0) + 1 if w0 >= step0 else 0
    ys, xs = np.meshgrid(np.arange(ny) * step0, np.arange(nx) * step0, indexing="ij")
    grid = np.arange(ny * nx).reshape(ny, nx) if ny * nx else np.zeros((0, 0), np.int64)
    t_tissue = time.perf_counter()
    coords, windows, tshare = [], [], []
    for y, x, g in zip(ys.ravel(), xs.ravel(), grid.ravel(), strict=True):
        t = tissue[int(y / ds_t):int(np.ceil((y + step0) / ds_t)), int(x / ds_t):int(np.ceil((x + step0) / ds_t))]
        if t.size and t.mean() >= cfg.min_tissue:
            coords.append((int(y), int(x)))
            windows.append(int(g))
            tshare.append(float(t.mean()))
    ann = SlideAnnotations(polys, downsample=ds_t, shape=tissue.shape)
    shares, full = np.zeros(len(coords)), 0
    for i, (y, x) in enumerate(coords):
        shares[i], used = ann.label_window(x, y, cfg.patch_size, ds_level, cfg.tumor_threshold)
        full += used
    label = np.where(shares >= cfg.tumor_threshold, 1, np.where(shares == 0, 0, -1)).astype(np.int8)
    end = time.perf_counter()
    return {"coords": np.asarray(coords, np.int64).reshape(-1, 2), "window": np.asarray(windows, np.int64),
            "tissue_share": np.asarray(tshare, np.float32), "tumor_share": shares.astype(np.float32), "label": label,
            "n_windows": np.int64(ny * nx), "tissue_fraction": np.float64(tissue.mean()),
            "full_res_windows": np.int64(full), "n_vertices": np.int64(ann.n_vertices),
            "skipped_annotations": np.asarray(sorted(f"{k}:{v}" for k, v in skipped.items()), dtype=str),
            "seconds_tissue": np.float64(t_tissue - t0), "seconds_labels": np.float64(end - t_tissue)}


def slide_patches(slide_path: str, ann_path: str | None, cfg: ExtractConfig, chosen: np.ndarray,
                  coords: np.ndarray) -> dict[str, np.ndarray]:
    """Pass 2 of one slide: read the chosen windows (rows of `coords`) -> images uint8 [K, S, S, 3],
    tumor masks bool [K, S, S], with mask and read times apart."""
    slide = open_slide(slide_path)
    polys = ann_lib.read_asap(ann_path) if ann_path else []
    ds_level = float(slide.level_downsamples[cfg.level])
    _, ds_t = (None, float(slide.level_downsamples[slide.get_best_level_for_downsample(TISSUE_DOWNSAMPLE)]))
    lo = slide.level_dimensions[slide.get_best_level_for_downsample(TISSUE_DOWNSAMPLE)]
    ann = SlideAnnotations(polys, downsample=ds_t, shape=(lo[1], lo[0]))
    s, ps = int(cfg.image_size or cfg.patch_size), cfg.patch_size
    images = np.zeros((len(chosen), s, s, 3), np.uint8)
    masks = np.zeros((len(chosen), s, s), bool)
    t_mask = t_read = 0.0
    for k, i in enumerate(chosen):
        y, x = (int(v) for v in coords[i])
        t = time.perf_counter()
        share = ann.screen(x, y, ps * ds_level)
        mask = (np.full((ps, ps), bool(share)) if share is not None
                else ann.mask((x, y), (ps, ps), downsample=ds_level))
        t_mask += time.perf_counter() - t
        t = time.perf_counter()
        rgba = np.asarray(slide.read_region((x, y), cfg.level, (ps, ps)))
        if k == 0 and _blank(rgba):
            raise ValueError(f"{slide_path}: level {cfg.level} reads back all zero or transparent at a tissue "
                             f"window ({x}, {y}); a SubIFD-only pyramid? write the levels as main IFDs")
        rgb = rgba[..., :3]
        if cfg.stain_normalization == "macenko":
            from ibo_jax.data import stain

            try:  # a patch with too little tissue to estimate a stain passes through unchanged
                rgb = stain.macenko_normalize(np.ascontiguousarray(rgb))
            except ValueError:
                pass
        img = Image.fromarray(rgb)
        if s != ps:
            img = img.resize((s, s), Image.Resampling.LANCZOS)
            mask = np.asarray(Image.fromarray(mask.astype(np.float32)).resize((s, s), Image.Resampling.BOX)) >= 0.5
        images[k], masks[k] = np.asarray(img, np.uint8), mask
        t_read += time.perf_counter() - t
    return {"image": images, "tumor_mask": masks, "seconds_masks": np.float64(t_mask),
            "seconds_reads": np.float64(t_read)}


def allocate(available: np.ndarray, *, per_slide: int | None, total: int | None) -> np.ndarray:
    """Deterministic class quotas over slides: available [n_slides] -> taken [n_slides]: at most
    `per_slide` each, then, if more than `total`, the largest equal cap that fits (water-filling)
    with the remainder given in slide order."""
    a = np.asarray(available, np.int64)
    take = np.minimum(a, per_slide) if per_slide else a.copy()
    if not total or take.sum() <= total:
        return take
    lo, hi = 0, int(take.max())
    while lo < hi:  # the largest cap c with sum(min(take, c)) <= total
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(take, mid).sum() <= total else (lo, mid - 1)
    out = np.minimum(take, lo)
    rest = total - int(out.sum())
    for i in np.flatnonzero(take > lo)[:rest]:
        out[i] += 1
    return out


def match_annotations(slides: Sequence[Path], annotations_dir: Path | None) -> dict[Path, Path | None]:
    """slide -> its ASAP XML (same stem, case-insensitive), or None."""
    if annotations_dir is None:
        return {s: None for s in slides}
    xmls = {}
    for p in sorted(annotations_dir.iterdir()):
        if p.suffix.lower() == ".xml":
            xmls.setdefault(p.stem.lower(), p)
    return {s: xmls.get(s.stem.lower()) for s in slides}


# BLAS/OpenMP pools only: XLA_FLAGS is left alone (an unknown XLA flag aborts the child's backend).
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@contextlib.contextmanager
def _child_env(env: dict[str, str]):
    """os.environ as the spawned workers should start with it: a spawned child re-imports the
    parent's main module (numpy, often JAX) before any initializer runs, so thread counts must
    already be in the environment it inherits. Restored afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _pass1(args) -> tuple[str, float]:
    slide, ann, cfg, out = args
    t = time.perf_counter()
    arrays = slide_candidates(slide, ann, cfg)
    ibo_io.write_npz(out, arrays)
    return slide, time.perf_counter() - t


def _pass2(args) -> tuple[str, int, float]:
    slide, ann, cfg, out, chosen_file = args
    t = time.perf_counter()
    sel = ibo_io.read_npz(chosen_file)
    arrays = slide_patches(slide, ann, cfg, sel["chosen"], sel["coords"])
    ibo_io.write_npz(out, {**arrays, **{k: sel[k] for k in ("chosen", "coords", "label", "index", "window")}})
    return slide, len(sel["chosen"]), time.perf_counter() - t


class SlidePool:
    """A `spawn` process pool over slides, started on first use and kept for every pass of an
    extraction (a spawned worker re-imports the parent's modules, JAX included: seconds per start).

        with SlidePool(workers) as pool:
            pool.map(_pass1, tasks, progress)
            pool.map(_pass2, other_tasks, progress)

    `workers` <= 1, or a single task, runs in this process."""

    def __init__(self, workers: int):
        self.workers = int(workers)
        self._ex = None

    def __enter__(self) -> SlidePool:
        return self

    def __exit__(self, *exc) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=exc[0] is not None)
            self._ex = None

    def map(self, fn: Callable, tasks: list, progress: Callable | None = None) -> list:
        """fn over tasks, results in task order; progress(result) as each one arrives."""
        if self.workers <= 1 or (len(tasks) <= 1 and self._ex is None):
            results = (fn(t) for t in tasks)
        else:
            if self._ex is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                with _child_env(_ONE_THREAD):  # the workers start with it (spawned at submit time)
                    self._ex = ProcessPoolExecutor(max_workers=self.workers,
                                                   mp_context=multiprocessing.get_context("spawn"))
                    for _ in self._ex.map(int, range(self.workers)):  # start them inside the env
                        pass
            results = self._ex.map(fn, tasks)
        out = []
        for r in results:
            out.append(r)
            if progress:
                progress(r)
        return out


def iter_slide_patches(path: Path) -> Iterator[dict[str, Any]]:
    z = ibo_io.read_npz(path)
    for k in range(len(z["chosen"])):
        yield {"image": z["image"][k], "tumor_mask": z["tumor_mask"][k], "label": int(z["label"][k]),
               "coords": tuple(int(v) for v in z["coords"][z["chosen"][k]]), "index": int(z["index"][k])}
