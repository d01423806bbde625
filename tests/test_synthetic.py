"""Synthetic histology: determinism, batch independence, masks, sizes, and the colour cue check."""

import numpy as np
import pytest

from ibo_jax.data import synthetic

N = 24


@pytest.fixture(scope="module")
def patches():
    return synthetic.generate(np.arange(N), seed=7)


def test_shapes_dtypes_and_ranges(patches):
    assert patches["image"].shape == (N, 64, 64, 3) and patches["image"].dtype == np.uint8
    assert patches["tumor_mask"].shape == (N, 64, 64) and patches["tumor_mask"].dtype == bool
    assert patches["label"].dtype == np.int32 and set(np.unique(patches["label"])) <= {0, 1}
    assert patches["slide"].min() >= 0 and patches["slide"].max() < 20
    np.testing.assert_array_equal(patches["index"], np.arange(N))
    # H&E-like: pinkish on average (red and blue above green), not saturated.
    mean = patches["image"].reshape(-1, 3).mean(0)
    assert mean[0] > mean[1] and mean[2] > mean[1] and 60 < mean.mean() < 230


def test_tumor_masks(patches):
    area = patches["tumor_mask"].reshape(N, -1).mean(1)
    y = patches["label"]
    assert 0 < y.sum() < N
    assert np.all(area[y == 0] == 0)
    assert np.all((area[y == 1] > 0.07) & (area[y == 1] < 0.83)), area[y == 1]


def test_same_seed_same_bytes_whatever_the_batching(patches):
    idx = np.arange(N)[::-1]
    again = synthetic.generate(idx, seed=7, batch_size=128)
    for k in ("image", "tumor_mask", "label", "slide"):
        np.testing.assert_array_equal(again[k][::-1], patches[k], err_msg=k)
    # A different batch size is a different compiled program: same bytes anyway.
    small = synthetic.generate(np.array([5, 3, 17]), seed=7, batch_size=4)
    np.testing.assert_array_equal(small["image"], patches["image"][[5, 3, 17]])
    other = synthetic.generate(np.arange(4), seed=8)
    assert not np.array_equal(other["image"], patches["image"][:4])


def test_plan_matches_generate(patches):
    label, slide = synthetic.plan(np.arange(N), seed=7)
    np.testing.assert_array_equal(label, patches["label"])
    np.testing.assert_array_equal(slide, patches["slide"])
    label, _ = synthetic.plan(np.arange(2000), seed=0)
    assert 0.45 < label.mean() < 0.55


def test_other_size():
    out = synthetic.generate(np.arange(2), seed=1, image_size=96, batch_size=2)
    assert out["image"].shape == (2, 96, 96, 3) and out["tumor_mask"].shape == (2, 96, 96)


@pytest.mark.parametrize("kwargs, field", [
    ({"image_size": 32}, "image_size"), ({"image_size": 1024}, "image_size"),
    ({"n_slides": 0}, "n_slides"), ({"tumor_fraction": 1.5}, "tumor_fraction"),
    ({"tumor_area": (0.5, 0.2)}, "tumor_area"),
])
def test_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        synthetic.generate(np.arange(2), seed=0, **kwargs)


def test_colour_histogram_baseline_is_weak():
    """Classes must not be separable by global colour: a per-channel histogram + logistic
    regression, trained and tested on different pseudo-slides, stays far below a CNN (>= 95%)."""
    from sklearn.linear_model import LogisticRegression

    d = synthetic.generate(np.arange(640), seed=0)
    feats = np.concatenate([np.stack([np.histogram(im[..., c], bins=16, range=(0, 256))[0]
                                      for im in d["image"]]) for c in range(3)], 1) / 4096.0
    train = d["slide"] < 14
    clf = LogisticRegression(max_iter=2000).fit(feats[train], d["label"][train])
    acc = clf.score(feats[~train], d["label"][~train])
    assert acc < 0.85, acc


@pytest.mark.parametrize("size", [64, 96])
def test_counterfactual_twins_are_local(size):
    """A normal patch's twin is the patch; a tumor twin differs only within r of the region, has
    no tumor left and keeps every draw (same bytes everywhere else); same bytes with or without
    twins requested."""
    from scipy import ndimage

    d = synthetic.generate(np.arange(24), seed=3, image_size=size, counterfactual=True)
    plain = synthetic.generate(np.arange(24), seed=3, image_size=size)
    np.testing.assert_array_equal(d["image"], plain["image"])
    normal, tumor = d["label"] == 0, d["label"] == 1
    assert normal.any() and tumor.any()
    np.testing.assert_array_equal(d["twin"][normal], d["image"][normal])
    r = synthetic.reach_px(size)
    for i in np.flatnonzero(tumor):
        changed = np.any(d["twin"][i] != d["image"][i], axis=-1)
        far = ndimage.distance_transform_edt(~d["tumor_mask"][i]) > r
        assert changed.any() and not (changed & far).any()
        assert changed[d["tumor_mask"][i]].mean() > 0.3  # the region itself is re-rendered


def test_global_cue_twin_differs_outside_the_region():
    from scipy import ndimage

    d = synthetic.generate(np.arange(24), seed=3, cue="global", counterfactual=True)
    far_changes = []
    for i in np.flatnonzero(d["label"] == 1):
        changed = np.any(d["twin"][i] != d["image"][i], axis=-1)
        far = ndimage.distance_transform_edt(~d["tumor_mask"][i]) > synthetic.reach_px(64)
        far_changes.append((changed & far).sum())
    assert max(far_changes) > 50  # lymphocytes thinned everywhere: evidence outside the annotation
    with pytest.raises(ValueError, match="cue"):
        synthetic.generate(np.arange(2), seed=0, cue="nearby")
