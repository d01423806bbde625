"""Whole-slide patch extraction on a tiny generated pyramidal TIFF with an ASAP annotation."""

import numpy as np
import pytest

from ibo_jax.data import annotations, synthetic

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("openslide")
pytest.importorskip("imagecodecs")


def _write_slide(path, seed):
    """1024 x 1024 tissue (synthetic normal patches) with a white right quarter, 3 levels as
    main IFDs, 256-px JPEG tiles (what openslide's generic-TIFF reader accepts)."""
    d = synthetic.generate(np.arange(64), seed=seed, image_size=128, tumor_fraction=0.0)
    img = d["image"].reshape(8, 8, 128, 128, 3).transpose(0, 2, 1, 3, 4).reshape(1024, 1024, 3)
    img[:, 768:] = 245
    with tifffile.TiffWriter(path) as tw:
        for f in (1, 2, 4):
            tw.write(np.ascontiguousarray(img[::f, ::f]), tile=(256, 256), compression="jpeg",
                     photometric="rgb", subfiletype=0 if f == 1 else 1)
    return img


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    root = tmp_path_factory.mktemp("wsi")
    path = root / "slide_a.tif"
    _write_slide(path, 0)
    tumor = annotations.Polygon("t", "Tumor", np.array([[0, 0], [512, 0], [512, 512], [0, 512.0]]))
    hole = annotations.Polygon("h", "_2", np.array([[256, 256], [512, 256], [512, 512], [256, 512.0]]))
    xml = root / "slide_a.xml"
    annotations.write_asap(xml, [tumor, hole])
    return path, xml


def test_asap_round_trip_and_rasterize(slide):
    polys = annotations.read_asap(slide[1])
    assert [p.group for p in polys] == ["Tumor", "_2"]
    m = annotations.rasterize(polys, (0, 0), (128, 128), downsample=4.0)
    assert m[10, 10] and not m[100, 100] and not m[127, 127]
    assert 0.72 < m.mean() < 0.78  # the 512-px tumor square (whole window) minus its hole


def test_extract_labels_masks_and_tissue(slide):
    from ibo_jax.data import wsi

    exs = list(wsi.extract(slide[0], slide[1], patch_size=256, image_size=64, min_tissue=0.5))
    coords = {ex["coords"]: ex for ex in exs}
    assert all(x < 768 for _, x in coords)  # the white quarter is not tissue
    assert coords[(0, 0)]["label"] == 1 and coords[(0, 0)]["tumor_mask"].all()
    assert (256, 256) not in coords or coords[(256, 256)]["label"] == 0  # excluded hole
    assert coords[(768, 0)]["label"] == 0 and not coords[(768, 0)]["tumor_mask"].any()
    ex = exs[0]
    assert ex["image"].shape == (64, 64, 3) and ex["image"].dtype == np.uint8


def test_bad_files(tmp_path):
    from ibo_jax.data import wsi

    bad = tmp_path / "bad.xml"
    bad.write_text("<ASAP_Annotations><Annotations><Annotation")
    with pytest.raises(ValueError, match="bad.xml"):
        annotations.read_asap(bad)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="junk.tif"):
        wsi.open_slide(junk)


def test_wsi_source_builds_a_dataset_split_by_slide(slide, tmp_path):
    import shutil

    from ibo_jax.data import patches, wsi

    slides = []
    for name in ("s1", "s2", "s3"):
        shutil.copy(slide[0], tmp_path / f"{name}.tif")
        slides.append((str(tmp_path / f"{name}.tif"), str(slide[1])))
    src = wsi.WsiSource(slides, patch_size=256, image_size=64, max_per_class=3)
    info = patches.write_dataset(src, tmp_path / "ds")
    assert {k: v["slides"] for k, v in info["splits"].items()} == {"train": 1, "val": 1, "test": 1}
    d = patches.read_split(tmp_path / "ds", "train")
    assert d["image"].shape[1:] == (64, 64, 3) and set(d["label"]) == {0, 1}
    assert np.all(d["tumor_mask"][d["label"] == 1].reshape(-1, 64 * 64).mean(1) >= 0.5)
