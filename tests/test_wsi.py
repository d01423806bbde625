"""Whole-slide patch extraction on generated pyramidal TIFFs with ASAP annotations: labels and
masks, the fast screen against the full-resolution rule, workers and resume, the inputs' errors."""

import shutil

import numpy as np
import pytest

from ibo_jax.data import annotations
from ibo_jax_testing.slides import write_slide

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("openslide")
pytest.importorskip("imagecodecs")


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    root = tmp_path_factory.mktemp("wsi")
    path = root / "slide_a.tif"
    write_slide(path, 0)
    tumor = annotations.Polygon("t", "Tumor", np.array([[0, 0], [512, 0], [512, 512], [0, 512.0]]))
    hole = annotations.Polygon("h", "_2", np.array([[256, 256], [512, 256], [512, 512], [256, 512.0]]))
    xml = root / "slide_a.xml"
    annotations.write_asap(xml, [tumor, hole])
    return path, xml


def test_asap_round_trip_types_and_rasterize(slide, tmp_path):
    polys = annotations.read_asap(slide[1])
    assert [p.group for p in polys] == ["Tumor", "_2"]
    m = annotations.rasterize(polys, (0, 0), (128, 128), downsample=4.0)
    assert m[10, 10] and not m[100, 100] and not m[127, 127]
    assert 0.72 < m.mean() < 0.78  # the 512-px tumor square (whole window) minus its hole
    text = slide[1].read_text().replace('Type="Polygon"', 'Type="Dot"', 1)  # the tumor square becomes a dot
    (tmp_path / "dot.xml").write_text(text)
    skipped = {}
    assert [p.group for p in annotations.read_asap(tmp_path / "dot.xml", skipped=skipped)] == ["_2"]
    assert skipped == {"Dot": 1}


def test_candidates_and_patches_labels_masks_tissue(slide):
    from ibo_jax.data import wsi

    cfg = wsi.ExtractConfig(patch_size=256, image_size=64)
    c = wsi.slide_candidates(str(slide[0]), str(slide[1]), cfg)
    coords = {tuple(xy): i for i, xy in enumerate(c["coords"].tolist())}
    assert all(x < 768 for _, x in coords)  # the white quarter is not tissue
    assert c["label"][coords[(0, 0)]] == 1 and c["label"][coords[(256, 256)]] == 0  # excluded hole
    assert c["label"][coords[(768, 0)]] == 0
    p = wsi.slide_patches(str(slide[0]), str(slide[1]), cfg, np.arange(len(c["label"])), c["coords"])
    assert p["image"].shape == (len(c["label"]), 64, 64, 3) and p["image"].dtype == np.uint8
    assert p["tumor_mask"][coords[(0, 0)]].all() and not p["tumor_mask"][coords[(768, 0)]].any()


def test_fast_labels_equal_the_full_resolution_rule(tmp_path):
    """A wiggly 5,000-vertex outline over a 2048 px slide: the screen's labels equal the labels of
    the unclipped full-resolution rasterization for every tissue window, and most windows never
    need full resolution."""
    from ibo_jax.data import raster, wsi

    path = tmp_path / "big.tif"
    write_slide(path, 1, size=2048, white_quarter=False)
    th = np.linspace(0, 2 * np.pi, 5000, endpoint=False)
    r = 700 + 120 * np.sin(9 * th) + 40 * np.sin(41 * th)
    outline = annotations.Polygon("t", "Tumor", np.stack([1024 + r * np.cos(th), 1024 + r * np.sin(th)], 1))
    hole = annotations.Polygon("h", "Exclusion", np.stack([1024 + 150 * np.cos(th[::50]), 1024 + 150 * np.sin(th[::50])], 1))
    xml = tmp_path / "big.xml"
    annotations.write_asap(xml, [outline, hole])
    cfg = wsi.ExtractConfig(patch_size=128, image_size=64, min_tissue=0.0)
    c = wsi.slide_candidates(str(path), str(xml), cfg)
    polys = annotations.read_asap(xml)
    full = np.array([annotations.rasterize(polys, (x, y), (128, 128), clip=False).mean() for y, x in c["coords"]])
    want = np.where(full >= 0.5, 1, np.where(full == 0, 0, -1))
    np.testing.assert_array_equal(c["label"], want)
    assert set(np.unique(want)) == {-1, 0, 1} and int(c["full_res_windows"]) < 0.5 * len(want)
    ann = raster.SlideAnnotations(polys, downsample=32.0, shape=(64, 64))
    assert ann.screen(0, 0, 128) == 0.0 and ann.screen(1024 - 64, 1024 + 300, 128) == 1.0
    assert ann.screen(1024 - 64, 1024 - 64, 128) is None  # the hole: full resolution decides


def _slides(tmp_path, slide, names):
    out = []
    for name in names:
        shutil.copy(slide[0], tmp_path / f"{name}.tif")
        out.append((str(tmp_path / f"{name}.tif"), str(slide[1])))
    return out


def test_workers_resume_quotas_and_splits(slide, tmp_path):
    from ibo_jax.data import patches, wsi
    from ibo_jax.data.wsi_source import WsiSource

    slides = _slides(tmp_path, slide, ("tumor_001", "tumor_002", "normal_001", "test_001"))
    kw = dict(extract_config=wsi.ExtractConfig(patch_size=256, image_size=64), max_per_slide=3, total_per_class=8,
              split_by="camelyon16", progress=False)
    one = WsiSource(slides, cache_dir=str(tmp_path / "one"), workers=1, **kw)
    files = one.extract()
    two = WsiSource(slides, cache_dir=str(tmp_path / "two"), workers=2, **kw)
    for a, b in zip(files, two.extract(), strict=True):  # the bytes do not depend on the workers
        za, zb = np.load(a), np.load(b)
        for k in ("image", "tumor_mask", "index", "label"):
            np.testing.assert_array_equal(za[k], zb[k])
    # a killed extraction: one slide's patches are missing; the others are not redone
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    files[2].unlink()
    again = one.extract()
    assert files[2].is_file() and all(f.stat().st_mtime_ns == mtimes[f] for f in files if f != files[2])
    np.testing.assert_array_equal(np.load(files[2])["image"], np.load(two.extract()[2])["image"])
    totals = [int((np.load(f)["label"] == c).sum()) for c in (0, 1) for f in again]
    assert sum(totals[:4]) == 8 and sum(totals[4:]) <= 8  # normal: 8 of 4 slides x 3; tumor: all there are
    index = np.concatenate([np.load(f)["index"] for f in again])
    assert len(np.unique(index)) == len(index) and index.max() < 2**31
    from ibo_jax import io as ibo_io
    from ibo_jax.reporting import report

    text = "".join(report.slides_section(ibo_io.read_json(tmp_path / "one" / "slides.json")))
    assert "4 slides (4 with an annotation), split camelyon16" in text and "| tumor_001 | tumor |" in text
    np.testing.assert_array_equal(one.split_of_slides(), [0, 1, 0, 2])  # test_* = test; one tumor slide for val
    info = patches.write_dataset(one, tmp_path / "ds")
    assert info["splits"]["test"]["slides"] == 1
    assert wsi.allocate(np.array([5, 1, 9]), per_slide=4, total=6).tolist() == [3, 1, 2]


_EXTRACT = """
import sys
from ibo_jax.data import wsi
from ibo_jax.data.wsi_source import WsiSource
slides = [tuple(x.split(",")) for x in sys.argv[2:]]
WsiSource(slides, extract_config=wsi.ExtractConfig(patch_size=128, image_size=64), max_per_slide=40,
          split_by="slide", progress=False, cache_dir=sys.argv[1], workers=2).extract()
"""


def test_kill_9_during_extraction_then_resume(slide, tmp_path):
    """A real kill -9 of an extraction with two workers (the whole process group, as the shell would
    when a job is killed) as soon as the first slide is labelled: the rerun continues from the files
    written, redoes none of them, and gives the same bytes as an uninterrupted extraction."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from ibo_jax.data import wsi
    from ibo_jax.data.wsi_source import WsiSource

    slides = _slides(tmp_path, slide, [f"tumor_{i:03d}" for i in range(6)])
    cache = tmp_path / "killed"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", _EXTRACT, str(cache), *(",".join(x) for x in slides)],
                            env=env, start_new_session=True, stderr=subprocess.PIPE)
    try:
        while proc.poll() is None and not list(cache.glob("0000_*.candidates.npz")):
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        err = proc.communicate()[1]
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    before = {f.name: f.stat().st_mtime_ns for f in cache.glob("*.npz")}
    assert not (cache / "slides.json").is_file() and before  # stopped part-way, some slides done
    kw = dict(extract_config=wsi.ExtractConfig(patch_size=128, image_size=64), max_per_slide=40,
              split_by="slide", progress=False)
    resumed = WsiSource(slides, cache_dir=str(cache), workers=1, **kw).extract()
    after = {f.name: f.stat().st_mtime_ns for f in cache.glob("*.npz")}
    assert all(after[k] == v for k, v in before.items())  # finished slides never redone
    fresh = WsiSource(slides, cache_dir=str(tmp_path / "fresh"), workers=1, **kw).extract()
    for a, b in zip(resumed, fresh, strict=True):
        za, zb = np.load(a), np.load(b)
        for k in ("image", "tumor_mask", "index", "label"):
            np.testing.assert_array_equal(za[k], zb[k])


def test_slide_and_annotation_input_errors(slide, tmp_path):
    from pathlib import Path

    from ibo_jax.data import wsi
    from ibo_jax.data.wsi_source import find_slides

    slides_dir, ann_dir = tmp_path / "slides", tmp_path / "ann"
    slides_dir.mkdir()
    ann_dir.mkdir()
    for name in ("Tumor_001", "normal_001", "normal_002"):
        shutil.copy(slide[0], slides_dir / f"{name.lower()}.tif")
    shutil.copy(slide[1], ann_dir / "Tumor_001.xml")  # another case than the slide's name

    pairs, _ = find_slides(slides_dir, annotations_dir=ann_dir)
    assert {Path(s).name: a is not None for s, a in pairs} == {
        "normal_001.tif": False, "normal_002.tif": False, "tumor_001.tif": True}
    (ann_dir / "Tumor_001.xml").rename(ann_dir / "other.xml")
    with pytest.raises(ValueError, match="none of the 3 slides has an ASAP XML"):
        find_slides(slides_dir, annotations_dir=ann_dir)
    shutil.copy(slide[1], ann_dir / "normal_001.xml")
    with pytest.raises(ValueError, match=r"tumor_001.tif: a tumor slide without an ASAP XML"):
        find_slides(slides_dir, annotations_dir=ann_dir)
    long = tmp_path / "long.tif"
    tifffile.imwrite(long, np.full((256, 12_032, 3), 200, np.uint8), photometric="rgb", tile=(256, 256), compression="jpeg")
    with pytest.raises(ValueError, match=r"long.tif: 12032 x 256 px with a single level"):
        wsi.slide_candidates(str(long), None, wsi.ExtractConfig())
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="junk.tif"):
        wsi.open_slide(junk)
    bad = tmp_path / "bad.xml"
    bad.write_text("<ASAP_Annotations><Annotations><Annotation")
    with pytest.raises(ValueError, match="bad.xml"):
        annotations.read_asap(bad)
