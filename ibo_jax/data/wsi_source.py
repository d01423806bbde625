"""Slides as a patch-dataset source: extraction over a process pool, class quotas, the splits.

    source = WsiSource(slides=[(slide, xml_or_None), ...], extract_config=wsi.ExtractConfig(image_size=224),
                       cache_dir=workdir / "data" / "slides", workers=2, max_per_slide=500,
                       total_per_class=15_214, split_by="camelyon16")
    source.examples("train")   # runs (or resumes) the extraction once, then reads per-slide files

Splits (`split_by`): 'slide' (70/15/15 by slide), 'camelyon16' (the official `test_*` slides are
the test split; the others are split by slide into train/val, stratified by slide class), 'patch'
(the study's random patch-level split: patches of one slide land in several splits, a leak).
Patch indices: the slide's offset (slides in name order, each taking its grid's window count) +
the window's grid number: unique by construction, stable for a fixed set of slides, < 2**31.
"""

from __future__ import annotations

import csv
import dataclasses
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ibo_jax import io as ibo_io
from ibo_jax.data import wsi
from ibo_jax.rng import stable_int

SPLITS = ("train", "val", "test")


def slide_class(name: str) -> str:
    """CAMELYON16 name prefix: 'normal', 'tumor', 'test' (or 'other')."""
    low = name.lower()
    for prefix in ("normal", "tumor", "test"):
        if low.startswith(prefix + "_"):
            return prefix
    return "other"


def read_reference_csv(path: str | Path) -> dict[str, str]:
    """CAMELYON16's reference.csv (test_001,Tumor,...) -> {stem (lower case): 'tumor' | 'normal'}."""
    out = {}
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or not row[0].strip():
                continue
            if len(row) < 2 or row[1].strip().lower() not in ("tumor", "normal"):
                raise ValueError(f"{path}: line {i + 1}: expected '<slide>,Tumor|Normal,...', got {row}")
            out[Path(row[0].strip()).stem.lower()] = row[1].strip().lower()
    return out


def find_slides(slides_dir: str | Path, *, slides_glob: str = "", annotations_dir: str | Path = "",
                reference_csv: str | Path = "") -> tuple[list[tuple[str, str | None]], dict | None]:
    """(slide, its ASAP XML or None) pairs of a folder, and CAMELYON16's test labels when found.

    Slides: `slides_glob`, or every format openslide reads; annotations: the same stem, matched
    case-insensitively. Errors name the folder or file: no slide, no slide matched by any
    annotation, a tumor slide (tumor_*, or a test_* slide reference.csv calls Tumor) without one."""
    slides_dir = Path(slides_dir).expanduser()
    if not str(slides_dir) or not slides_dir.is_dir():
        raise ValueError(f"data.slides_dir: {str(slides_dir)!r} is not a directory of slides")
    if slides_glob:
        slides = sorted(p for p in slides_dir.glob(slides_glob) if p.is_file())
    else:
        slides = sorted(p for p in slides_dir.iterdir() if p.suffix.lower() in wsi.SLIDE_SUFFIXES)
    if not slides:
        raise ValueError(f"data.slides_dir: no slide ({slides_glob or ', '.join(wsi.SLIDE_SUFFIXES)}) in {slides_dir}")
    ann_dir = Path(annotations_dir).expanduser() if annotations_dir else None
    if ann_dir is not None and not ann_dir.is_dir():
        raise ValueError(f"data.annotations_dir: {str(annotations_dir)!r} is not a directory")
    matched = wsi.match_annotations(slides, ann_dir)
    if ann_dir is not None and not any(matched.values()):
        raise ValueError(f"data.annotations_dir: none of the {len(slides)} slides has an ASAP XML of the same stem "
                         f"(case-insensitive) in {ann_dir}")
    ref_file = Path(reference_csv).expanduser() if reference_csv else next(
        (d / "reference.csv" for d in (ann_dir, slides_dir) if d is not None and (d / "reference.csv").is_file()), None)
    reference = read_reference_csv(ref_file) if ref_file is not None else None
    for slide, ann in matched.items():
        cls = slide_class(slide.stem)
        tumor_test = cls == "test" and reference is not None and reference.get(slide.stem.lower()) == "tumor"
        if ann is None and (cls == "tumor" or tumor_test):
            raise ValueError(f"{slide}: a tumor slide without an ASAP XML annotation in "
                             f"{ann_dir or 'data.annotations_dir (not set)'} (expected {slide.stem}.xml)")
    return [(str(s), None if a is None else str(a)) for s, a in matched.items()], reference


@dataclasses.dataclass(frozen=True)
class WsiSource:
    slides: Sequence[tuple[str, str | None]]
    extract_config: wsi.ExtractConfig = wsi.ExtractConfig()  # windows, labels, output size, stain
    max_per_slide: int | None = None  # per class
    total_per_class: int | None = None
    seed: int = 0
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_by: str = "slide"
    reference: dict | None = None  # camelyon16 test slide classes (reference.csv)
    cache_dir: str = ""
    workers: int = 1
    progress: bool = True
    name: str = "wsi"
    description: str = "patches cut from whole-slide images (openslide) with ASAP annotations"
    splits: tuple[str, ...] = SPLITS

    def __post_init__(self):
        if self.split_by not in ("slide", "patch", "camelyon16"):
            raise ValueError(f"data.split_by: {self.split_by!r}; expected 'slide', 'patch' or 'camelyon16'")
        if not self.cache_dir:
            raise ValueError("WsiSource: cache_dir is required (per-slide files for resume)")
        if self.split_by == "camelyon16" and not any(slide_class(Path(x).stem) == "test" for x, _ in self.slides):
            folders = sorted({str(Path(x).parent) for x, _ in self.slides})
            raise ValueError(f"data.split_by='camelyon16' takes the test split from slides named test_*, but none of "
                             f"the {len(self.slides)} slide(s) in {', '.join(folders)} is: the test split would be "
                             "empty. For your own slides use --config.data.split_by=slide")

    def config(self) -> dict[str, Any]:
        """What the dataset's bytes depend on (workers, progress and the cache folder do not)."""
        d = dataclasses.asdict(self)
        for k in ("description", "cache_dir", "workers", "progress", "splits"):
            d.pop(k)
        d["slides"] = [[str(s), None if a is None else str(a)] for s, a in self.slides]
        return d

    @property
    def image_size(self) -> int:
        return int(self.extract_config.image_size or self.extract_config.patch_size)

    # ---------------------------------------------------------------- splits
    def split_of_slides(self) -> np.ndarray:
        n = len(self.slides)
        names = [Path(s).stem for s, _ in self.slides]
        if self.split_by == "camelyon16":
            split = np.zeros(n, np.int32)
            test = np.array([slide_class(nm) == "test" for nm in names])
            split[test] = 2
            frac_val = self.fractions[1] / (self.fractions[0] + self.fractions[1])
            for cls in sorted({self.slide_label(i) for i in range(n) if not test[i]}):
                idx = [i for i in range(n) if not test[i] and self.slide_label(i) == cls]
                order = np.random.default_rng([self.seed, 70, stable_int(cls)]).permutation(len(idx))
                n_val = max(1, int(round(frac_val * len(idx)))) if len(idx) > 1 else 0  # >= 1 of 2+
                for r, j in enumerate(order):
                    split[idx[j]] = 1 if r < n_val else 0
            return split
        if n < 3:
            raise ValueError(f"data: {n} slide(s); splitting 70/15/15 by slide needs >= 3 (or data.split_by='patch')")
        bounds = np.clip(np.round(np.cumsum(self.fractions)[:2] * n).astype(int), [1, 2], [n - 2, n - 1])
        split = np.empty(n, np.int32)
        split[np.random.default_rng([self.seed, 70]).permutation(n)] = np.searchsorted(
            bounds, np.arange(n), side="right")
        return split

    def slide_label(self, i: int) -> str:
        """A slide's class: from its name (tumor_* / normal_*), reference.csv for test_*, else by
        whether it has an annotation."""
        name, ann = Path(self.slides[i][0]).stem, self.slides[i][1]
        cls = slide_class(name)
        if cls == "test" and self.reference:
            return self.reference.get(name.lower(), "tumor" if ann else "normal")
        return cls if cls in ("tumor", "normal") else ("tumor" if ann else "normal")

    def empty_split_reason(self, split: str) -> str:
        """Why `split` came out with no patch (for the data stage's warning)."""
        if self.split_by == "patch":
            return (f"the random patch-level split (fractions {tuple(self.fractions)}) drew no patch for it "
                    "(split_by='patch')")
        which = self.split_of_slides()
        mine = [Path(s).stem for i, (s, _) in enumerate(self.slides) if which[i] == SPLITS.index(split)]
        if not mine:
            return (f"no slide was assigned to it (split_by={self.split_by!r}, {len(self.slides)} slide(s), "
                    f"fractions {tuple(self.fractions)})")
        return (f"its {len(mine)} slide(s) ({', '.join(mine[:5])}{', ...' if len(mine) > 5 else ''}) gave no patch "
                "(no tissue window, or the class caps: max_per_class / total_per_class)")

    def _patch_split(self, index: int) -> int:
        u = np.random.default_rng([self.seed, 71, int(index)]).random()
        return int(np.searchsorted(np.cumsum(self.fractions), u, side="right"))

    # ---------------------------------------------------------------- extraction
    def _paths(self, i: int, kind: str) -> Path:
        stem = Path(self.slides[i][0]).stem
        return Path(self.cache_dir) / f"{i:04d}_{stem}.{kind}.npz"

    def extract(self) -> list[Path]:
        """Runs (or resumes) both passes; returns the per-slide patch files in slide order."""
        files = [self._paths(i, "patches") for i in range(len(self.slides))]
        if (Path(self.cache_dir) / "slides.json").is_file() and all(f.is_file() for f in files):
            return files  # finished (the dataset builder asks once per split)
        cache = Path(self.cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        cfg, n = self.extract_config, len(self.slides)
        with wsi.SlidePool(self.workers) as pool:  # one set of workers for both passes
            bar = _bar(self.progress, n, "data slides (labels)")
            todo = [(s, a, cfg, str(self._paths(i, "candidates"))) for i, (s, a) in enumerate(self.slides)
                    if not self._paths(i, "candidates").is_file()]
            bar.update(n - len(todo))
            pool.map(wsi._pass1, todo, lambda r: bar.update(1))
            bar.close()
            cands = [ibo_io.read_npz(self._paths(i, "candidates")) for i in range(n)]
            offsets = np.concatenate([[0], np.cumsum([int(c["n_windows"]) for c in cands])])
            if offsets[-1] >= wsi.INDEX_LIMIT:
                raise ValueError(f"data: {int(offsets[-1])} windows over all slides; patch indices must stay below 2**31 "
                                 "(use a larger patch_size or fewer slides per dataset)")
            take = {c: wsi.allocate(np.array([int((x["label"] == c).sum()) for x in cands]), per_slide=self.max_per_slide,
                                    total=self.total_per_class) for c in (0, 1)}
            t0, done = time.perf_counter(), 0
            bar = _bar(self.progress, n, "data slides (patches)")
            tasks = []
            for i, (s, a) in enumerate(self.slides):
                out = self._paths(i, "patches")
                if out.is_file():
                    bar.update(1)
                    continue
                c = cands[i]
                chosen = []
                for cls in (0, 1):
                    idx = np.flatnonzero(c["label"] == cls)
                    r = np.random.default_rng([self.seed, stable_int(Path(s).stem), cls])
                    chosen.append(np.sort(r.permutation(idx)[: int(take[cls][i])]))
                chosen = np.sort(np.concatenate(chosen)).astype(np.int64)
                sel = self._paths(i, "chosen")
                ibo_io.write_npz(sel, {"chosen": chosen, "coords": c["coords"], "label": c["label"][chosen],
                                       "window": c["window"][chosen], "index": offsets[i] + c["window"][chosen]})
                tasks.append((s, a, cfg, str(out), str(sel)))

            def tick(r):
                nonlocal done
                done += r[1]
                bar.update(1)
                bar.set_postfix(patches_per_s=f"{done / max(time.perf_counter() - t0, 1e-9):.1f}")

            pool.map(wsi._pass2, tasks, tick)
            bar.close()
        self._write_summary(cands, take)
        return [self._paths(i, "patches") for i in range(n)]

    def _write_summary(self, cands, take) -> None:
        rows = []
        for i, (s, a) in enumerate(self.slides):
            c, p = cands[i], ibo_io.read_npz(self._paths(i, "patches"))
            rows.append({"slide": Path(s).stem, "annotation": None if a is None else Path(a).name,
                         "class": self.slide_label(i), "windows": int(c["n_windows"]),
                         "tissue_windows": int(len(c["label"])), "tissue_fraction": float(c["tissue_fraction"]),
                         "candidates_normal": int((c["label"] == 0).sum()), "candidates_tumor": int((c["label"] == 1).sum()),
                         "patches_normal": int(take[0][i]), "patches_tumor": int(take[1][i]),
                         "full_res_windows": int(c["full_res_windows"]), "vertices": int(c["n_vertices"]),
                         "skipped_annotations": [str(x) for x in c["skipped_annotations"]],
                         "seconds_labels": float(c["seconds_labels"]), "seconds_tissue": float(c["seconds_tissue"]),
                         "seconds_masks": float(p["seconds_masks"]), "seconds_reads": float(p["seconds_reads"])})
        ibo_io.write_json(Path(self.cache_dir) / "slides.json", {"slides": rows, "split_by": self.split_by})

    def examples(self, split: str) -> Iterator[dict[str, Any]]:
        files = self.extract()
        which = self.split_of_slides() if self.split_by != "patch" else None
        want = SPLITS.index(split)
        for i, path in enumerate(files):
            if which is not None and which[i] != want:
                continue
            for ex in wsi.iter_slide_patches(path):
                if which is None and self._patch_split(ex["index"]) != want:
                    continue
                yield {**ex, "slide": Path(self.slides[i][0]).stem}


class _NoBar:
    n = 0

    def update(self, k=1):
        self.n += k

    def set_postfix(self, **_):
        pass

    def close(self):
        pass


def _bar(enabled: bool, total: int, desc: str):
    import os

    if not enabled or os.environ.get("IBO_JAX_NO_PROGRESS") == "1":
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="slide", mininterval=1.0, dynamic_ncols=True)
