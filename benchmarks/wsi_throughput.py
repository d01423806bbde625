"""Whole-slide extraction throughput on a generated slide (no downloads): one JSON line.

    python benchmarks/wsi_throughput.py            # 20,000 x 20,000 slide, 10,000-vertex outline
    python benchmarks/wsi_throughput.py --smoke    # 2,048 x 2,048, seconds

Measures, on a JPEG-tiled pyramidal TIFF of synthetic tissue with one tumor outline:
- rasterization ms per boundary window against the outline's vertex count (35, 3.5k, 35k and the
  main one), before (every polygon drawn whole for every window, as ibo_jax did) and after
  (polygons clipped to the window);
- the slide's candidate pass (tissue + labels: the screen, full resolution only where needed)
  and the patch pass (masks, reads) per vertex count with the same caps: seconds apart;
- patches/s end to end with Macenko stain normalization, 1 and 2 workers (4 copies of the slide).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ibo_jax.data import annotations, synthetic, wsi  # noqa: E402
from ibo_jax.data.wsi_source import WsiSource  # noqa: E402


def write_slide(path: Path, size: int, seed: int = 0) -> None:
    """size x size synthetic normal tissue (a few 512 px tiles repeated), levels to 1/32, JPEG tiles."""
    import tifffile

    d = synthetic.generate(np.arange(16), seed=seed, image_size=128, tumor_fraction=0.0)
    block = d["image"].reshape(4, 4, 128, 128, 3).transpose(0, 2, 1, 3, 4).reshape(512, 512, 3)
    tiles = [np.ascontiguousarray(np.roll(block, (k * 97, k * 61), (0, 1))) for k in range(4)]
    with tifffile.TiffWriter(path, bigtiff=size > 16_000) as tw:
        f = 1
        while size // f >= 256:
            n = size // f
            reps = {k: np.ascontiguousarray(t[::f, ::f] if f < 512 else t[::256, ::256]) for k, t in enumerate(tiles)}

            def gen(n=n, f=f, reps=reps):
                step = 256
                for y in range(0, n, step):
                    for x in range(0, n, step):
                        t = reps[(y // step + x // step) % 4]
                        tile = np.resize(t, (step, step, 3)) if t.shape[0] < step else t[:step, :step]
                        yield tile

            tw.write(gen(), shape=(n, n, 3), dtype=np.uint8, tile=(256, 256), compression="jpeg",
                     photometric="rgb", subfiletype=0 if f == 1 else 1)
            f *= 2


def outline(n_vertices: int, size: int) -> annotations.Polygon:
    th = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    r = size * (0.25 + 0.04 * np.sin(9 * th) + 0.01 * np.sin(53 * th))
    return annotations.Polygon("t", "Tumor", np.stack([size / 2 + r * np.cos(th), size / 2 + r * np.sin(th)], 1))


def rasterize_before(polys, origin, size) -> np.ndarray:
    """The previous rasterization: every polygon drawn whole (a Python tuple per vertex)."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("1", (w, h), 0)
    d = ImageDraw.Draw(img)
    for p in polys:
        d.polygon([tuple(map(float, q)) for q in (np.asarray(p.xy) - origin)], fill=1, outline=1)
    return np.asarray(img, bool)


def raster_ms(poly, size: int, windows: int, patch: int) -> dict:
    th = np.linspace(0, 2 * np.pi, windows, endpoint=False)
    r = size * 0.25
    origins = [np.array([size / 2 + r * np.cos(t) - patch / 2, size / 2 + r * np.sin(t) - patch / 2]) for t in th]
    out = {}
    for name, fn in (("before", lambda o: rasterize_before([poly], o, (patch, patch))),
                     ("after", lambda o: annotations.rasterize([poly], tuple(o), (patch, patch)))):
        t0 = time.perf_counter()
        for o in origins:
            fn(o)
        out[name] = 1000 * (time.perf_counter() - t0) / len(origins)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--size", type=int, default=20_000)
    p.add_argument("--vertices", type=int, default=10_000)
    p.add_argument("--cap", type=int, default=200, help="patches per class and slide")
    a = p.parse_args(argv)
    size, main_v, cap, patch = (2048, 500, 8, 256) if a.smoke else (a.size, a.vertices, a.cap, 512)
    vertex_counts = sorted({35, 3_500 if not a.smoke else 350, 35_000 if not a.smoke else 1_500, main_v})
    root = Path(tempfile.mkdtemp(prefix="wsi_bench_"))
    try:
        t0 = time.perf_counter()
        write_slide(root / "slide.tif", size)
        out = {"bench": "wsi_throughput", "slide_px": size, "write_s": round(time.perf_counter() - t0, 1),
               "patch_size": patch, "cap_per_class": cap, "cpus": os.cpu_count(), "raster_ms_per_window": {},
               "extraction": {}}
        cfg = wsi.ExtractConfig(patch_size=patch, image_size=224 if not a.smoke else 64)
        wsi.slide_candidates(str(root / "slide.tif"), None, cfg)  # warm-up (imports, file cache)
        for v in vertex_counts:
            poly = outline(v, size)
            out["raster_ms_per_window"][str(v)] = raster_ms(poly, size, 8 if not a.smoke else 4, patch)
            annotations.write_asap(root / f"slide_{v}.xml", [poly])
            t = time.perf_counter()
            c = wsi.slide_candidates(str(root / "slide.tif"), str(root / f"slide_{v}.xml"), cfg)
            t1 = time.perf_counter()
            chosen = np.concatenate([np.flatnonzero(c["label"] == k)[:cap] for k in (0, 1)])
            pp = wsi.slide_patches(str(root / "slide.tif"), str(root / f"slide_{v}.xml"), cfg, chosen, c["coords"])
            t2 = time.perf_counter()
            out["extraction"][str(v)] = {
                "windows": int(len(c["label"])), "full_res_windows": int(c["full_res_windows"]),
                "tumor": int((c["label"] == 1).sum()), "normal": int((c["label"] == 0).sum()), "patches": int(len(chosen)),
                "seconds_tissue": round(float(c["seconds_tissue"]), 3), "seconds_labels": round(float(c["seconds_labels"]), 3),
                "seconds_masks": round(float(pp["seconds_masks"]), 3), "seconds_reads": round(float(pp["seconds_reads"]), 3),
                "seconds_end_to_end": round(t2 - t, 3), "seconds_candidates": round(t1 - t, 3)}
        e = out["extraction"]
        out["end_to_end_ratio_max_vs_35"] = round(e[str(max(vertex_counts))]["seconds_end_to_end"] / e["35"]["seconds_end_to_end"], 3)
        # patches/s with Macenko, 1 and 2 workers, 4 copies of the slide with the main outline
        copies = []
        for k in range(4):
            shutil.copy(root / "slide.tif", root / f"copy{k}.tif")
            copies.append((str(root / f"copy{k}.tif"), str(root / f"slide_{main_v}.xml")))
        out["workers"] = {}
        for workers in (1, 2):
            src = WsiSource(copies, extract_config=wsi.ExtractConfig(patch_size=patch, image_size=cfg.image_size,
                                                                     stain_normalization="macenko"),
                            max_per_slide=cap, cache_dir=str(root / f"cache{workers}"), workers=workers, progress=False)
            t = time.perf_counter()
            files = src.extract()
            dt = time.perf_counter() - t
            n = sum(len(np.load(f)["label"]) for f in files)
            out["workers"][str(workers)] = {"patches": n, "seconds": round(dt, 2), "patches_per_s": round(n / dt, 2)}
        out["speedup_2_workers"] = round(out["workers"]["2"]["patches_per_s"] / out["workers"]["1"]["patches_per_s"], 3)
        out["load_avg"] = os.getloadavg()[0]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
