"""Stain normalization: Macenko recovers the synthetic slides' true stain vectors; both methods
bring patches of differently stained pseudo-slides closer in colour."""

import numpy as np
import pytest

from ibo_jax.data import stain, synthetic


def _angle(a, b):
    return np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


@pytest.fixture(scope="module")
def tumor_patches():
    d = synthetic.generate(np.arange(40), seed=5, tumor_area=(0.5, 0.8))
    keep = d["label"] == 1
    return {k: v[keep] for k, v in d.items()}


def test_macenko_recovers_true_stain(tumor_patches):
    errors = []
    for img, slide in zip(tumor_patches["image"][:6], tumor_patches["slide"][:6], strict=True):
        he, max_conc = stain.macenko_stains(img)
        true = synthetic.slide_stain(5, int(slide))
        errors.append((_angle(he[0], true["h_vec"]), _angle(he[1], true["e_vec"])))
        assert np.all(max_conc > 0)
    errors = np.asarray(errors)
    assert np.median(errors[:, 0]) < 12 and np.median(errors[:, 1]) < 12, errors


def test_normalization_reduces_colour_spread(tumor_patches):
    imgs = tumor_patches["image"][:8]
    target = stain.macenko_target(imgs[0])
    mac = np.stack([stain.macenko_normalize(im, **target) for im in imgs])
    mean_l, std_l = stain.reinhard_stats(imgs[0])
    rei = np.stack([stain.reinhard_normalize(im, mean_l, std_l) for im in imgs])
    spread = lambda x: x.reshape(len(x), -1, 3).mean(1).std(0).mean()
    assert mac.dtype == np.uint8 and mac.shape == imgs.shape
    assert spread(mac) < spread(imgs) and spread(rei) < spread(imgs)


def test_lab_round_trip_and_bad_input():
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    back = stain.lab_to_rgb(stain.rgb_to_lab(rgb))
    assert np.abs(back.astype(int) - rgb).max() <= 1
    with pytest.raises(ValueError, match="background"):
        stain.macenko_stains(np.full((8, 8, 3), 250, np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        stain.macenko_stains(np.zeros((8, 8), np.uint8))


def test_stain_normalized_source_in_the_dataset(tmp_path):
    from ibo_jax.data import patches

    src = patches.SyntheticSource(n_patches=12, n_slides=3, seed=2)
    norm = patches.StainNormalized(src)
    assert norm.config()["stain_normalization"] == "macenko" and norm.image_size == 64
    patches.write_dataset(norm, tmp_path)
    d = patches.read_split(tmp_path, "train")
    raw = synthetic.generate(d["index"], seed=2, n_slides=3)
    assert d["image"].shape == raw["image"].shape and not np.array_equal(d["image"], raw["image"])
    np.testing.assert_array_equal(d["tumor_mask"], raw["tumor_mask"])
    with pytest.raises(ValueError, match="macenko"):
        patches.StainNormalized(src, "vahadane")
