"""Stage `data` with your own patches (source='npz') and clear errors for bad sources."""

import numpy as np
import pytest

from ibo_jax import io as ibo_io
from ibo_jax import pipeline


def _config(tmp_path, **data):
    from ibo_jax_testing import demo_config

    config = demo_config()
    config.image_size = 16
    config.data.n_examples = 4
    for k, v in data.items():
        config.data[k] = v
    return config


def _patches(n=24, size=16):
    rng = np.random.default_rng(0)
    label = np.arange(n) % 2
    mask = np.zeros((n, size, size), bool)
    mask[label == 1, 4:12, 4:12] = True
    split = np.array(["train"] * (n - 8) + ["val"] * 4 + ["test"] * 4)
    image = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return {"image": image, "label": label, "tumor_mask": mask, "split": split}


def test_npz_source_round_trip(tmp_path):
    from ibo_jax.data.patches import read_split

    arrays = _patches()
    ibo_io.write_npz(tmp_path / "mine.npz", arrays)
    config = _config(tmp_path, source="npz", npz_path=str(tmp_path / "mine.npz"))
    pipeline.run(config, tmp_path / "w", stages=["data"])
    test = read_split(tmp_path / "w" / "data", "test")
    order = np.argsort(test["index"])
    np.testing.assert_array_equal(test["image"][order], arrays["image"][-4:])
    np.testing.assert_array_equal(test["tumor_mask"][order], arrays["tumor_mask"][-4:])
    assert (test["label"][order] == arrays["label"][-4:]).all()


def test_evaluation_only_dataset_has_empty_splits(tmp_path):
    """No training patches (your own classifier and DDPM): the empty split reads as empty, a loader
    on it says so, and a dataset without any patch is refused with a clear message."""
    from ibo_jax.data.patches import make_loader, read_split

    arrays = _patches()
    arrays["split"] = np.array(["val"] * 8 + ["test"] * 16)
    ibo_io.write_npz(tmp_path / "eval.npz", arrays)
    pipeline.run(_config(tmp_path, source="npz", npz_path=str(tmp_path / "eval.npz")), tmp_path / "w", stages=["data"])
    data_dir = tmp_path / "w" / "data"
    info = ibo_io.read_json(data_dir / "dataset.json")
    assert info["splits"]["train"]["n"] == 0 and info["splits"]["test"]["n"] == 16
    train = read_split(data_dir, "train", label=0)
    assert train["image"].shape == (0, 16, 16, 3) and train["label"].shape == (0,)
    assert len(read_split(data_dir, "val")["label"]) == 8
    with pytest.raises(ValueError, match="split 'train' shard 0/1 has 0 examples"):
        make_loader(data_dir, "train", batch_size=2)
    from ibo_jax.data.patches import write_dataset

    class Nothing:
        name, image_size, description, splits = "nothing", 16, "empty", ("train", "test")

        def config(self):
            return {"name": self.name}

        def examples(self, split):
            return iter(())

    with pytest.raises(ValueError, match=r"nothing: every split \(train, test\) is empty"):
        write_dataset(Nothing(), tmp_path / "empty")


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("split"), "missing array 'split'"),
    (lambda a: a.__setitem__("image", a["image"].astype(np.float32)), "must be uint8"),
    (lambda a: a.__setitem__("split", np.array(["train"] * 23 + ["holdout"])), "holdout"),
    (lambda a: a["label"].__setitem__(3, 2), r"bad.npz: 'label' must be 0 \(normal\) or 1 \(tumor\); 1 patch\(es\) have \[2\]"),
    (lambda a: a["label"].__setitem__(5, -1), r"'label' must be 0 .* have \[-1\] \(first at position 5\)"),
    (lambda a: a.__setitem__("split", a["split"][:22]), r"bad.npz: arrays of different lengths .*split 22"),
    (lambda a: a.__setitem__("label", a["label"][:20]), r"arrays of different lengths \(image 24, label 20"),
    (lambda a: a.__setitem__("tumor_mask", a["tumor_mask"][:, :8]), r"'tumor_mask' has shape \(24, 8, 16\)"),
])
def test_npz_source_errors_name_the_problem(tmp_path, change, message):
    arrays = _patches()
    change(arrays)
    ibo_io.write_npz(tmp_path / "bad.npz", arrays)
    config = _config(tmp_path, source="npz", npz_path=str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match=message):
        pipeline.run(config, tmp_path / "w", stages=["data"])
    assert not (tmp_path / "w" / "data" / "manifest.json").exists()


def test_unknown_source_and_missing_slides_dir(tmp_path):
    with pytest.raises(ValueError, match="unknown source 'pcam2'"):
        pipeline.run(_config(tmp_path, source="pcam2"), tmp_path / "w", stages=["data"])
    with pytest.raises(ValueError, match="data.slides_dir"):
        pipeline.run(_config(tmp_path, source="wsi", slides_dir=str(tmp_path / "nope")), tmp_path / "w",
                     stages=["data"])


def _slide_dir(tmp_path, names, blank=()):
    """Tiny 512 px slides (no annotations: all normal) in tmp_path/slides."""
    pytest.importorskip("openslide")
    pytest.importorskip("tifffile")
    from ibo_jax_testing.slides import write_slide

    d = tmp_path / "slides"
    d.mkdir()
    for i, name in enumerate(names):
        write_slide(d / f"{name}.tif", i, size=512, blank=name in blank)
    return d


def test_camelyon16_split_without_test_slides_is_refused(tmp_path):
    """Your own slides under configs/camelyon16.py's split: no test_* slide would leave the test
    split empty; the data stage says so before extracting anything, naming the fix."""
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("a", "b", "c"):  # never opened: the split is refused first
        (slides / f"{name}.tif").write_bytes(b"")
    config = _config(tmp_path, source="wsi", slides_dir=str(slides), split_by="camelyon16", patch_size=128)
    with pytest.raises(ValueError, match=r"none of the 3 slide\(s\) .* is: the test split would be empty.*"
                                         r"--config\.data\.split_by=slide") as e:
        pipeline.run(config, tmp_path / "w", stages=["data"])
    assert "\n" not in str(e.value)
    assert not (tmp_path / "w" / "data" / "slides").exists()  # refused before the extraction


def test_empty_split_is_logged_and_recorded_for_slides(tmp_path, caplog):
    """A slide without tissue gives its split no patch: a warning names the split and the slide,
    and the stage's summary (manifest.json) lists it under empty_splits."""
    slides = _slide_dir(tmp_path, ("a", "b", "blank"), blank=("blank",))
    config = _config(tmp_path, source="wsi", slides_dir=str(slides), split_by="slide", patch_size=128,
                     tissue_method="fixed", n_examples=0)
    with caplog.at_level("WARNING"):
        summary = pipeline.run(config, tmp_path / "w", stages=["data"])
    out = summary["stages"][0]["summary"]
    (split,) = out["empty_splits"]  # the blank slide's split, the others have patches
    assert out["splits"][split]["n"] == 0 and all(v["n"] > 0 for k, v in out["splits"].items() if k != split)
    assert "blank" in out["empty_splits"][split] and "gave no patch" in out["empty_splits"][split]
    assert f"the {split} split is empty" in caplog.text and "blank" in caplog.text
    manifest = ibo_io.read_json(tmp_path / "w" / "data" / "manifest.json")
    assert manifest["summary"]["empty_splits"] == out["empty_splits"]


def test_empty_split_is_logged_and_recorded_for_patches(tmp_path, caplog):
    arrays = _patches()
    arrays["split"] = np.array(["val"] * 8 + ["test"] * 16)
    ibo_io.write_npz(tmp_path / "eval.npz", arrays)
    with caplog.at_level("WARNING"):
        summary = pipeline.run(_config(tmp_path, source="npz", npz_path=str(tmp_path / "eval.npz")), tmp_path / "w",
                               stages=["data"])
    empty = summary["stages"][0]["summary"]["empty_splits"]
    assert list(empty) == ["train"] and "eval.npz is 'train'" in empty["train"]
    assert "data: the train split is empty" in caplog.text
    full = _patches()
    ibo_io.write_npz(tmp_path / "full.npz", full)
    summary = pipeline.run(_config(tmp_path, source="npz", npz_path=str(tmp_path / "full.npz")), tmp_path / "w2",
                           stages=["data"])
    assert summary["stages"][0]["summary"]["empty_splits"] == {}
