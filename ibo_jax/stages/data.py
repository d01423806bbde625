"""Stage `data`: builds the patch dataset (TFDS array_record) that every later stage reads.

Outputs in the stage directory: `dataset.json` (completeness marker: split counts, file sizes),
`meta_<split>.npz`, `tfds/patch_dataset/1.0.0/*` and `examples.png` (a grid of training
patches, tumor-mask outlines in green). A split that comes out empty is logged as a warning with
its reason and listed in the stage's summary (`empty_splits`: split -> reason, in manifest.json). Read them with `ibo_jax.data.patches.read_split` /
`make_loader` on `ctx.input_dir("data")`.

The global `seed` and `image_size` drive the generator. Resume: TFDS writes into an
`incomplete.*` folder renamed on success and the marker is written last, so a killed run
leaves no dataset that looks complete; a rerun deletes the leftovers and rebuilds.
"""

from __future__ import annotations

import time

import ml_collections
import numpy as np
from absl import logging

from ibo_jax import artifacts
from ibo_jax import io as ibo_io


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.source = "synthetic"  # "synthetic", "wsi" (slides + ASAP XML), "npz" (your patch arrays), "pcam"
    c.n_patches = 3000  # about half tumor (tumor_fraction)
    c.n_slides = 20  # pseudo-slides: patches of a slide share a stain; splits are by slide
    c.tumor_fraction = 0.5
    c.tumor_area = (0.1, 0.8)  # range of the tumor-region share of a tumor patch
    c.split_by = "slide"  # or "patch" (the study's random patch-level split)
    # synthetic: 'local' (tumor evidence only in and near the annotated region; counterfactual
    # twins differ only there) or 'global' (tumor patches also lose lymphocytes everywhere, a cue
    # outside the annotation: faithfulness and plausibility part ways)
    c.cue = "local"
    c.fractions = (0.7, 0.15, 0.15)  # train / val / test
    c.stain_normalization = ""  # "" (none) or "macenko" (to the reference H&E stain)
    c.n_examples = 32  # patches in examples.png
    # source = "wsi": slides in slides_dir (slides_glob; "" = every format openslide reads: .tif,
    # .tiff, .svs, .ndpi, .mrxs, .scn, .vms, .bif), ASAP XML with the same stem (case-insensitive)
    # in annotations_dir (a slide without one is all normal; a tumor_* slide without one is an
    # error), patches cut at `level`. split_by: 'slide', 'patch' (the study's; slides leak across
    # splits) or 'camelyon16' (test_* slides = test split, labels from reference.csv in
    # annotations_dir or slides_dir, or reference_csv; the rest split by slide, stratified by class).
    c.slides_dir = ""
    c.slides_glob = ""
    c.annotations_dir = ""
    c.reference_csv = ""
    c.patch_size = 512
    c.level = 0
    c.min_tissue = 0.5
    c.tumor_threshold = 0.5
    c.tissue_method = "otsu"  # Otsu on saturation at a low-resolution level; 'fixed': saturation > 0.07
    c.max_per_class = 0  # per slide and class (0 = no cap)
    c.total_per_class = 0  # over all slides, after the per-slide caps (0 = no cap; the study: 15,214)
    c.workers = 1  # slides extracted in parallel ('spawn' processes, one thread each; 1.69x with 2 on 2 cores: benchmarks/wsi_throughput.py)
    # source = "npz": one .npz with image uint8 [N,H,W,3], label int [N], tumor_mask bool [N,H,W],
    # split str [N] (train/val/test), optional slide str [N] and coords int [N,2].
    c.npz_path = ""
    # source = "pcam": PatchCamelyon's HDF5 files (.h5 or .h5.gz) in pcam_dir; PCam's own splits.
    # pcam_mask: "center" (the 32x32 label region of a tumor patch as its mask) or "none".
    c.pcam_dir = ""
    c.pcam_mask = "center"
    c.max_per_split = 0  # pcam: a seeded random subset of each split (0 = all)
    return c


def _npz_source(c, image_size: int):
    from ibo_jax.data.patches import ArraySource

    arrays = ibo_io.read_npz(c.npz_path) if c.npz_path else None
    if arrays is None:
        raise ValueError("data.npz_path: required when data.source = 'npz'")
    need = {"image": 4, "label": 1, "tumor_mask": 3, "split": 1}
    for key, ndim in need.items():
        if key not in arrays:
            raise ValueError(f"{c.npz_path}: missing array {key!r} (needs {sorted(need)})")
        if arrays[key].ndim != ndim:
            raise ValueError(f"{c.npz_path}: {key!r} has shape {arrays[key].shape}, expected {ndim} dims")
    img = arrays["image"]
    if img.dtype != np.uint8 or img.shape[-1] != 3:
        raise ValueError(f"{c.npz_path}: 'image' must be uint8 [N, H, W, 3], got {img.dtype} {img.shape}")
    if img.shape[1] != image_size or img.shape[2] != image_size:
        raise ValueError(f"{c.npz_path}: patches are {img.shape[1]}x{img.shape[2]}, but image_size = "
                         f"{image_size} (set --config.image_size={img.shape[1]})")
    n = len(img)
    lengths = {k: len(v) for k, v in arrays.items() if k in ("image", "label", "tumor_mask", "split", "slide",
                                                            "coords", "index")}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{c.npz_path}: arrays of different lengths ({', '.join(f'{k} {v}' for k, v in lengths.items())}); "
                         "every array needs one entry per patch")
    if arrays["tumor_mask"].shape != img.shape[:3]:
        raise ValueError(f"{c.npz_path}: 'tumor_mask' has shape {arrays['tumor_mask'].shape}, expected [N, H, W] = "
                         f"{img.shape[:3]} (one mask per image)")
    label = arrays["label"]
    if label.dtype.kind not in "iub" and not (label.dtype.kind == "f" and np.all(np.isfinite(label) & (label == np.round(label)))):
        raise ValueError(f"{c.npz_path}: 'label' must hold integers 0 (normal) or 1 (tumor), got dtype {label.dtype}")
    wrong = np.flatnonzero((label != 0) & (label != 1))
    if wrong.size:
        raise ValueError(f"{c.npz_path}: 'label' must be 0 (normal) or 1 (tumor); {wrong.size} patch(es) have "
                         f"{sorted(set(np.unique(label[wrong]).tolist()))} (first at position {int(wrong[0])})")
    arrays["label"] = label.astype(np.int32)
    if "coords" in arrays and arrays["coords"].shape != (n, 2):
        raise ValueError(f"{c.npz_path}: 'coords' has shape {arrays['coords'].shape}, expected [N, 2] = ({n}, 2)")
    if "index" in arrays and len(np.unique(arrays["index"])) != n:
        raise ValueError(f"{c.npz_path}: 'index' values must be unique (one stable id per patch)")
    bad = sorted(set(np.unique(arrays["split"]).astype(str)) - {"train", "val", "test"})
    if bad:
        raise ValueError(f"{c.npz_path}: 'split' values must be train/val/test, found {bad}")
    n = len(arrays["label"])
    arrays.setdefault("index", np.arange(n, dtype=np.int64))
    arrays.setdefault("slide", np.array([f"patch{i}" for i in range(n)]))
    arrays["tumor_mask"] = arrays["tumor_mask"].astype(bool)
    return ArraySource(arrays=arrays)


def _wsi_source(c, image_size: int, seed: int, cache_dir):
    from ibo_jax.data.wsi import ExtractConfig
    from ibo_jax.data.wsi_source import WsiSource, find_slides

    pairs, reference = find_slides(c.slides_dir, slides_glob=c.slides_glob, annotations_dir=c.annotations_dir,
                                   reference_csv=c.reference_csv)
    extract = ExtractConfig(patch_size=int(c.patch_size), level=int(c.level), image_size=image_size,
                            min_tissue=float(c.min_tissue), tumor_threshold=float(c.tumor_threshold),
                            tissue_method=str(c.tissue_method), stain_normalization=str(c.stain_normalization))
    return WsiSource(slides=pairs, extract_config=extract,
                     max_per_slide=int(c.max_per_class) or None, total_per_class=int(c.total_per_class) or None,
                     seed=seed, fractions=tuple(float(v) for v in c.fractions), split_by=str(c.split_by),
                     reference=reference, cache_dir=str(cache_dir), workers=int(c.workers))


def _source(ctx):
    from ibo_jax.data.patches import SyntheticSource

    c = ctx.cfg
    if c.stain_normalization not in ("", "macenko"):
        raise ValueError(f"data.stain_normalization: {c.stain_normalization!r}, expected '' or 'macenko'")
    if c.source == "wsi":
        source = _wsi_source(c, int(ctx.config.image_size), int(ctx.config.seed), ctx.dir / "slides")
    elif c.source == "npz":
        source = _npz_source(c, int(ctx.config.image_size))
    elif c.source == "pcam":
        from ibo_jax.data.pcam import PcamSource

        if not c.pcam_dir:
            raise ValueError("data.pcam_dir: required when data.source = 'pcam'")
        source = PcamSource(root=str(c.pcam_dir), image_size=int(ctx.config.image_size),
                            max_per_split=int(c.max_per_split), mask=str(c.pcam_mask),
                            seed=int(ctx.config.seed))
    elif c.source != "synthetic":
        raise ValueError(f"data.source: unknown source {c.source!r} (available: 'synthetic', 'wsi', "
                         "'npz', 'pcam')")
    else:
        source = SyntheticSource(
            n_patches=int(c.n_patches), image_size=int(ctx.config.image_size), seed=int(ctx.config.seed),
            n_slides=int(c.n_slides), tumor_fraction=float(c.tumor_fraction),
            tumor_area=tuple(float(v) for v in c.tumor_area), split_by=str(c.split_by),
            fractions=tuple(float(v) for v in c.fractions), cue=str(c.cue))
    if c.stain_normalization and c.source != "wsi":  # slides: normalized in the extraction workers
        from ibo_jax.data.patches import StainNormalized

        source = StainNormalized(source, str(c.stain_normalization))
    return source


def empty_split_reason(source, c, split: str) -> str:
    """Why `split` holds no patch, in words a user can act on (every source)."""
    if hasattr(source, "empty_split_reason"):  # slides: which slides it got, and why none gave patches
        return source.empty_split_reason(split)
    if c.source == "npz":
        return f"no entry of 'split' in {c.npz_path} is {split!r}"
    if c.source == "pcam":
        return f"its PCam file ({split}) holds no patch"
    by = f"{int(c.n_slides)} pseudo-slides" if c.split_by == "slide" else "patch"
    return (f"{int(c.n_patches)} patches split by {by} (fractions {tuple(c.fractions)}) leave none for it; "
            "raise data.n_patches")


def write_examples_png(path, images: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                       cols: int = 8) -> None:
    """A grid of patches (uint8 [N, H, W, 3]) with tumor-mask outlines, written atomically."""
    plt = ibo_io.pyplot()
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, m, y in zip(axes.flat, images, masks, labels, strict=False):
        ax.imshow(img, interpolation="nearest")
        if m.any():
            ax.contour(m.astype(np.float32), levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_title(f"tumor {m.mean():.0%}" if y == 1 else "normal", fontsize=7)
    fig.tight_layout()
    ibo_io.save_figure(fig, path)


def run(ctx) -> dict:
    from ibo_jax.data.patches import read_split, write_dataset

    t0 = time.time()
    source = _source(ctx)
    info = None
    if ctx.process_index == 0:
        info = write_dataset(source, ctx.dir)
    if ctx.process_count > 1:  # the others wait for process 0's dataset
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("data_written")
    if info is None:
        from ibo_jax.data.patches import dataset_info

        info = dataset_info(ctx.dir)
    t_write = time.time() - t0
    if ctx.process_index == 0 and int(ctx.cfg.n_examples) > 0:
        k = int(ctx.cfg.n_examples)
        ex = {lab: read_split(ctx.dir, "train", label=lab, limit=k - k // 2 if lab == 0 else k // 2)
              for lab in (0, 1)}
        imgs = np.concatenate([ex[1]["image"], ex[0]["image"]])
        masks = np.concatenate([ex[1]["tumor_mask"], ex[0]["tumor_mask"]])
        labels = np.concatenate([ex[1]["label"], ex[0]["label"]])
        write_examples_png(artifacts.figure_path("data", ctx.dir), imgs, masks, labels)
    empty = {split: empty_split_reason(source, ctx.cfg, split)
             for split, v in info["splits"].items() if v["n"] == 0}
    for split, why in empty.items():
        logging.warning("data: the %s split is empty: %s", split, why)
    seconds = time.time() - t0
    n = sum(s["n"] for s in info["splits"].values())
    ctx.scalar("data/patches_per_s", n / max(t_write, 1e-9), 0)
    extra = {}
    if getattr(source, "name", "") == "wsi":
        extra = {"slides": len(source.slides), "slides_with_annotation": sum(a is not None for _, a in source.slides),
                 "slide_summary": str(artifacts.SLIDES.path(ctx.dir))}
    return {**extra, "source": ctx.cfg.source, "image_size": info["image_size"], "splits": info["splits"],
            "n_patches": n, "empty_splits": empty, "bytes": info["bytes"], "seconds": seconds,
            "write_seconds": t_write, "patches_per_s": n / max(t_write, 1e-9)}
