"""Deletion curves: trapezoid areas, fractions p_i = |Mi|/|M4|, LeRF/insertion masks, bad input."""

import numpy as np
import pytest

from ibo_jax import evaluation


def test_auc_matches_trapezoid_by_hand():
    probs = np.array([1.0, 0.8, 0.4, 0.2, 0.0])
    fr = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    want = 0.25 * ((1 + 0.8) + (0.8 + 0.4) + (0.4 + 0.2) + (0.2 + 0)) / 2
    assert evaluation.deletion_auc(probs, fr) == pytest.approx(want)
    assert evaluation.deletion_auc(probs, fr) == pytest.approx(np.trapezoid(probs, fr))


def test_auc_batched_and_broadcast_fractions():
    rng = np.random.default_rng(0)
    probs = rng.uniform(size=(3, 7, 5))
    fr = np.sort(rng.uniform(size=(3, 7, 5)), axis=-1)
    fr[..., 0], fr[..., -1] = 0, 1
    got = evaluation.deletion_auc(probs, fr)
    assert got.shape == (3, 7)
    np.testing.assert_allclose(got, np.trapezoid(probs, fr, axis=-1))
    shared = evaluation.deletion_auc(probs, np.linspace(0, 1, 5))
    np.testing.assert_allclose(shared, np.trapezoid(probs, np.linspace(0, 1, 5), axis=-1))


def test_faster_fall_gives_lower_auc():
    fr = np.linspace(0, 1, 5)
    fast = evaluation.deletion_auc([0.99, 0.1, 0.05, 0.02, 0.01], fr)
    slow = evaluation.deletion_auc([0.99, 0.95, 0.9, 0.6, 0.1], fr)
    assert fast < slow


def test_mask_fractions_and_empty_m4():
    areas = np.array([[10, 20, 30, 40], [0, 0, 0, 0], [5, 5, 5, 5]])
    fr, valid = evaluation.mask_fractions(areas)
    np.testing.assert_allclose(fr[0], [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(fr[2], [0, 1, 1, 1, 1])
    assert valid.tolist() == [True, False, True]
    assert np.all(np.isnan(fr[1, 1:]))
    auc = evaluation.deletion_auc(np.full((3, 5), 0.5), fr)
    assert np.isfinite(auc[0]) and np.isnan(auc[1])


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluation.deletion_auc([0.5, 1.7], [0, 1])
    with pytest.raises(ValueError, match="last axis"):
        evaluation.deletion_auc([0.5, 0.4, 0.3], [0, 1])
    with pytest.raises(ValueError, match="non-decreasing"):
        evaluation.deletion_auc([0.5, 0.4, 0.3], [0, 1, 0.5])
    with pytest.raises(ValueError, match="nested"):
        evaluation.mask_fractions([3, 2, 5])
    # logits are fine through curve_auc
    assert evaluation.curve_auc([5.0, -3.0], [0, 1]) == pytest.approx(1.0)


def test_lerf_and_insertion_masks():
    levels = np.array([[[1, 2], [3, 5]]], np.int8)  # L = 5 (level 4 absent)
    lerf = evaluation.lerf_masks(levels, n=4)
    assert lerf.shape == (1, 4, 2, 2)
    assert lerf[0, 0].tolist() == [[False, False], [False, True]]  # level 5 first
    assert np.all(lerf[0, :-1] <= lerf[0, 1:])  # nested
    assert not lerf[0, :, 0, 0].any()  # level 1 never removed
    constant = np.ones((1, 2, 2), np.int8)
    assert not evaluation.lerf_masks(constant).any()
    ins = evaluation.insertion_masks(evaluation.progressive_masks(levels, n=4))
    assert ins.shape == (1, 5, 2, 2) and ins[0, 0].all()
    assert not ins[0, 1, 0, 0] and ins[0, 1, 1, 1]


def test_mean_curve_skips_nan_rows():
    y = np.array([[1.0, 0.5, 0.0], [np.nan, 0.2, 0.1], [0.8, 0.3, 0.2]])
    x, m = evaluation.mean_curve(y, np.array([0, 0.5, 1.0]))
    np.testing.assert_allclose(m, [0.9, 0.4, 0.1])
    assert evaluation.LOWER_IS_BETTER["morf"] and not evaluation.LOWER_IS_BETTER["insertion"]
