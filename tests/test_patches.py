"""Patch dataset format: round trip, splits by slide, grain loader, resume, bad files, stage."""

import shutil

import numpy as np
import pytest

from ibo_jax.data import patches, synthetic

SRC = patches.SyntheticSource(n_patches=60, n_slides=6, seed=3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("patches")
    patches.write_dataset(SRC, root)
    return root


def test_round_trip_same_bytes_as_the_generator(data_dir):
    ref = synthetic.generate(np.arange(SRC.n_patches), seed=3, n_slides=6)
    seen = []
    for split in patches.SPLITS:
        d = patches.read_split(data_dir, split)
        assert d["image"].dtype == np.uint8 and d["tumor_mask"].dtype == bool
        assert np.all(np.diff(d["index"]) > 0)  # sorted by the stable index
        np.testing.assert_array_equal(d["image"], ref["image"][d["index"]])
        np.testing.assert_array_equal(d["tumor_mask"], ref["tumor_mask"][d["index"]])
        np.testing.assert_array_equal(d["label"], ref["label"][d["index"]])
        seen.append(set(d["slide"]))
    assert sorted(len(s) for s in seen) == [1, 1, 4]  # 70/15/15 of 6 slides, split by slide
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    info = patches.dataset_info(data_dir)
    assert sum(s["n"] for s in info["splits"].values()) == SRC.n_patches


def test_label_and_limit(data_dir):
    d = patches.read_split(data_dir, "train", label=1, limit=3)
    assert len(d["label"]) == 3 and np.all(d["label"] == 1)
    assert np.all(d["tumor_mask"].reshape(3, -1).any(1))
    with pytest.raises(ValueError, match="split 'nope'"):
        patches.read_split(data_dir, "nope")


def test_loader_batches_shards_and_epochs(data_dir):
    n = patches.dataset_info(data_dir)["splits"]["train"]["n"]
    got = []
    for shard in range(2):
        batches = list(patches.make_loader(data_dir, "train", batch_size=4, shuffle=True, seed=1,
                                           num_epochs=1, shard_index=shard, shard_count=2,
                                           drop_remainder=False))
        b = batches[0]
        assert b["image"].dtype == np.float32 and b["image"].shape[1:] == (64, 64, 3)
        assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
        assert b["label"].dtype == np.int32 and b["tumor_mask"].shape[1:] == (64, 64)
        got.append(np.concatenate([b["index"] for b in batches]))
    assert not set(got[0]) & set(got[1]) and len(got[0]) + len(got[1]) == n
    two = np.concatenate([b["index"] for b in patches.make_loader(
        data_dir, "train", batch_size=1, shuffle=True, seed=1, num_epochs=2)])
    assert len(two) == 2 * n and sorted(two[:n]) == sorted(two[n:]) and list(two[:n]) != list(two[n:])
    it = iter(patches.make_loader(data_dir, "train", batch_size=8, num_epochs=None, label=0))
    for _ in range(2 * n // 8 + 1):  # runs past one epoch
        assert np.all(next(it)["label"] == 0)


def test_rewrite_reuses_complete_dataset(data_dir):
    marker = data_dir / patches.MARKER
    before = marker.stat().st_mtime_ns
    patches.write_dataset(SRC, data_dir)
    assert marker.stat().st_mtime_ns == before


def test_truncated_file_is_named(data_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    shard = next((copy / "tfds").rglob("*-train.array_record-*"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ValueError, match=shard.name):
        patches.read_split(copy, "train")
    (copy / patches.MARKER).unlink()
    with pytest.raises(ValueError, match="dataset.json missing"):
        patches.read_split(copy, "val")


def test_killed_build_is_rebuilt(tmp_path):
    src = patches.SyntheticSource(n_patches=12, n_slides=3, seed=1)
    stale = tmp_path / "tfds" / "patch_dataset" / "incomplete.XYZ_1.0.0"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("half")
    info = patches.write_dataset(src, tmp_path)
    assert not stale.exists() and sum(s["n"] for s in info["splits"].values()) == 12
    assert patches.read_split(tmp_path, "test")["image"].shape[1:] == (64, 64, 3)


def test_array_source_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    n = 6
    arrays = {"image": rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
              "tumor_mask": rng.random((n, 64, 64)) > 0.5, "label": np.array([0, 1] * 3),
              "slide": np.array(["a", "a", "b", "b", "c", "c"]), "index": np.arange(100, 106),
              "split": np.array(["train"] * 2 + ["val"] * 2 + ["test"] * 2)}
    patches.write_dataset(patches.ArraySource(arrays), tmp_path)
    d = patches.read_split(tmp_path, "val")
    np.testing.assert_array_equal(d["image"], arrays["image"][2:4])
    np.testing.assert_array_equal(d["tumor_mask"], arrays["tumor_mask"][2:4])
    assert list(d["slide"]) == ["b", "b"] and list(d["index"]) == [102, 103]
    arrays["image"][2] = 0  # changed content: rebuilt, never reused
    patches.write_dataset(patches.ArraySource(arrays), tmp_path)
    assert patches.read_split(tmp_path, "val")["image"][0].max() == 0


def test_bad_source_config():
    with pytest.raises(ValueError, match="n_slides"):
        patches.SyntheticSource(n_patches=10, n_slides=2)
    with pytest.raises(ValueError, match="split_by"):
        patches.SyntheticSource(split_by="random")


def test_stage_data_through_the_pipeline(tmp_path):
    from ibo_jax import pipeline

    config = pipeline.default_config(stages=("data",))
    config.data.n_patches = 40
    config.data.n_slides = 5
    config.data.n_examples = 4
    registry = {"data": pipeline.STAGES["data"]}
    summary = pipeline.run(config, tmp_path, registry=registry)
    rec = summary["stages"][0]
    assert rec["stage"] == "data" and rec["status"] == "ran"
    assert rec["summary"]["n_patches"] == 40 and rec["summary"]["bytes"] > 0
    assert (tmp_path / "data" / "examples.png").stat().st_size > 1000
    assert pipeline.run(config, tmp_path, registry=registry)["stages"][0]["status"] == "skipped"
