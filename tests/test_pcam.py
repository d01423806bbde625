"""PatchCamelyon source: tiny PCam-format HDF5 files generated here, read into the patch dataset."""

import csv

import numpy as np
import pytest

from ibo_jax import pipeline

h5py = pytest.importorskip("h5py")

SPLITS = {"train": 12, "valid": 6, "test": 6}


def _write_pcam(root, meta_for=("train",), seed=0):
    """PCam's file layout with random images; label = row parity; meta CSV for some splits."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in SPLITS.items():
        x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        y = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            f.create_dataset("x", data=x, chunks=(1, 96, 96, 3))
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f.create_dataset("y", data=y)
        if split in meta_for:
            with open(root / f"camelyonpatch_level_2_split_{split}_meta.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["", "coord_y", "coord_x", "tumor_patch", "center_tumor_patch", "wsi"])
                for i in range(n):
                    w.writerow([i, 100 * i, 7 * i, bool(y[i, 0, 0, 0]), bool(y[i, 0, 0, 0]),
                                f"tumor_{i % 3:03d}"])
        data[split] = (x, y.reshape(-1))
    return data


def _config(pcam_dir, image_size=96, **data):
    from ibo_jax_testing import demo_config

    config = demo_config()
    config.image_size = image_size
    config.data.source = "pcam"
    config.data.pcam_dir = str(pcam_dir)
    config.data.n_examples = 4
    for k, v in data.items():
        config.data[k] = v
    return config


def test_pcam_round_trip_keeps_splits_labels_and_meta(tmp_path):
    from ibo_jax.data.patches import dataset_info, read_split

    src = _write_pcam(tmp_path)
    pipeline.run(_config(tmp_path), tmp_path / "w", stages=["data"])
    info = dataset_info(tmp_path / "w" / "data")
    assert {s: v["n"] for s, v in info["splits"].items()} == {"train": 12, "val": 6, "test": 6}
    centre = np.zeros((96, 96), bool)
    centre[32:64, 32:64] = True
    for ours, theirs, base in (("train", "train", 0), ("val", "valid", 1 << 20), ("test", "test", 2 << 20)):
        got = read_split(tmp_path / "w" / "data", ours)
        x, y = src[theirs]
        rows = got["index"] - base
        np.testing.assert_array_equal(rows, np.arange(len(x)))
        np.testing.assert_array_equal(got["image"], x[rows])
        np.testing.assert_array_equal(got["label"], y[rows])
        for m, lab in zip(got["tumor_mask"], got["label"], strict=True):
            np.testing.assert_array_equal(m, centre if lab == 1 else np.zeros_like(centre))
        if ours == "train":  # slide names come from the meta CSV
            assert sorted(set(got["slide"])) == ["tumor_000", "tumor_001", "tumor_002"]
        else:
            assert set(got["slide"]) == {f"pcam-{ours}"}
    assert (tmp_path / "w" / "data" / "examples.png").is_file()


def test_pcam_subset_resize_and_no_masks(tmp_path):
    from ibo_jax.data.pcam import PcamSource

    _write_pcam(tmp_path, meta_for=())
    a = PcamSource(root=str(tmp_path), max_per_split=4, seed=1)
    b = PcamSource(root=str(tmp_path), max_per_split=4, seed=2)
    rows = a.rows("train")
    assert len(rows) == 4 and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(rows, PcamSource(root=str(tmp_path), max_per_split=4, seed=1).rows("train"))
    assert not np.array_equal(rows, b.rows("train")) or not np.array_equal(a.rows("val"), b.rows("val"))
    small = list(PcamSource(root=str(tmp_path), image_size=48, mask="none").examples("test"))
    assert small[0]["image"].shape == (48, 48, 3) and small[0]["tumor_mask"].shape == (48, 48)
    assert not any(ex["tumor_mask"].any() for ex in small)
    centre = list(PcamSource(root=str(tmp_path), image_size=48).examples("test"))
    tumor = [ex for ex in centre if ex["label"] == 1][0]["tumor_mask"]
    assert tumor.sum() == 16 * 16 and tumor[16:32, 16:32].all()


def test_pcam_gzipped_files_are_decompressed_once(tmp_path):
    import gzip

    from ibo_jax.data.pcam import PcamSource

    src = _write_pcam(tmp_path)
    for p in tmp_path.glob("*.h5"):
        p.with_name(p.name + ".gz").write_bytes(gzip.compress(p.read_bytes()))
        p.unlink()
    exs = list(PcamSource(root=str(tmp_path)).examples("val"))
    np.testing.assert_array_equal(np.stack([e["image"] for e in exs]), src["valid"][0])
    assert sorted(p.name for p in tmp_path.glob("*valid*.h5")) == [
        "camelyonpatch_level_2_split_valid_x.h5", "camelyonpatch_level_2_split_valid_y.h5"]
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("breakage, message", [
    ("gz", "cannot decompress"),
    ("shape", "expected uint8 \\[N, 96, 96, 3\\]"),
    ("count", "5 labels for 6 images"),
    ("meta", "expected at least"),
    ("mask", "data.pcam_mask"),
])
def test_pcam_errors_name_the_file_and_field(tmp_path, breakage, message):
    from ibo_jax.data.pcam import PcamSource

    _write_pcam(tmp_path)
    kw = {}
    if breakage == "gz":  # not gzip data under a .gz name
        p = tmp_path / "camelyonpatch_level_2_split_test_x.h5"
        p.rename(p.with_name(p.name + ".gz"))
    elif breakage == "shape":
        with h5py.File(tmp_path / "camelyonpatch_level_2_split_valid_x.h5", "w") as f:
            f.create_dataset("x", data=np.zeros((6, 64, 64, 3), np.uint8))
    elif breakage == "count":
        with h5py.File(tmp_path / "camelyonpatch_level_2_split_test_y.h5", "w") as f:
            f.create_dataset("y", data=np.zeros((5, 1, 1, 1), np.uint8))
    elif breakage == "meta":
        (tmp_path / "camelyonpatch_level_2_split_train_meta.csv").write_text("a,b\n1,2\n")
    else:
        kw["mask"] = "box"
    with pytest.raises(ValueError, match=message):
        list(PcamSource(root=str(tmp_path), **kw).examples("train"))
    if breakage == "gz":  # nothing half-written left behind
        assert not (tmp_path / "camelyonpatch_level_2_split_test_x.h5").exists()
        assert not list(tmp_path.glob(".*.tmp"))


def test_pcam_stage_errors(tmp_path):
    with pytest.raises(ValueError, match="data.pcam_dir: required"):
        pipeline.run(_config(""), tmp_path / "w", stages=["data"])
    with pytest.raises(ValueError, match="is not a directory of PCam files"):
        pipeline.run(_config(tmp_path / "nope"), tmp_path / "w", stages=["data"])
