"""Importance levels (1-D k-means) against scikit-learn, degenerate maps, progressive masks."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans

from ibo_jax.evaluation import levels as L


def _sk_levels(x: np.ndarray, k: int, **kw) -> tuple[np.ndarray, float]:
    km = KMeans(k, random_state=0, **kw).fit(x.reshape(-1, 1).astype(np.float64))
    order = np.argsort(-km.cluster_centers_[:, 0])
    lv = np.empty(k, np.int64)
    lv[order] = np.arange(1, k + 1)
    return lv[km.labels_], km.inertia_


def _inertia(x: np.ndarray, labels: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float(sum(((x[labels == j] - x[labels == j].mean()) ** 2).sum() for j in np.unique(labels)))


def _smooth_maps(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    maps = []
    for _ in range(n):
        h = sum(
            np.exp(-((xx - rng.random()) ** 2 + (yy - rng.random()) ** 2) / (2 * rng.uniform(0.05, 0.3) ** 2))
            for _ in range(3)
        )
        maps.append((h - h.min()) / (h.max() - h.min()))
    return np.stack(maps).astype(np.float32)


def test_well_separated_matches_sklearn():
    rng = np.random.default_rng(0)
    sizes = (48, 48, 48, 48, 64)
    x = np.concatenate([rng.normal(m, 0.01, (4, n)) for m, n in zip((0.0, 0.25, 0.5, 0.75, 1.0), sizes, strict=True)], 1)
    x = np.stack([rng.permutation(r) for r in x]).reshape(4, 16, 16).astype(np.float32)
    lv, nl, valid = L.importance_levels_info(x, 5)
    assert lv.dtype == np.int8 and lv.shape == x.shape
    np.testing.assert_array_equal(nl, 5)
    assert valid.all()
    for i in range(3):
        np.testing.assert_array_equal(lv[i].ravel(), _sk_levels(x[i].ravel(), 5, n_init=10)[0])
    # level 1 = highest values
    assert x[0][lv[0] == 1].min() > x[0][lv[0] == 2].max()


def test_lloyd_equals_sklearn_from_same_init():
    rng = np.random.default_rng(1)
    x = (rng.random(300) ** 2).astype(np.float32)
    c0 = np.sort(rng.choice(x, 5, replace=False))
    labels, c, _ = L._lloyd(jnp.asarray(x), jnp.asarray(c0), 5, 300)
    km = KMeans(5, init=c0.reshape(-1, 1), n_init=1, tol=0, algorithm="lloyd").fit(x.reshape(-1, 1))
    order = np.argsort(km.cluster_centers_[:, 0])
    rank = np.empty(5, np.int64)
    rank[order] = np.arange(5)
    np.testing.assert_array_equal(np.asarray(labels), rank[km.labels_])
    np.testing.assert_allclose(np.asarray(c), np.sort(km.cluster_centers_[:, 0]), rtol=1e-5)


def test_smooth_heatmaps_close_to_sklearn_optimum():
    maps = _smooth_maps(4, 40, seed=2)
    lv, _, _ = L.importance_levels_info(maps, 5)
    for i in range(4):
        x = maps[i].ravel()
        sk, _ = _sk_levels(x, 5, n_init=10, tol=0)
        ours, ref = _inertia(x, lv[i].ravel()), _inertia(x, sk)
        assert ours <= ref * 1.002, (ours, ref)  # as good as sklearn's best of 10 starts
        assert (lv[i].ravel() == sk).mean() > 0.9  # near-equal optima may differ a little


def test_random_values_reasonable():
    rng = np.random.default_rng(3)
    x = (rng.random((4, 16, 16)) ** 2).astype(np.float32)
    lv, nl, _ = L.importance_levels_info(x, 5)
    np.testing.assert_array_equal(nl, 5)
    for i in range(3):
        _, ref = _sk_levels(x[i].ravel(), 5, n_init=10)
        assert _inertia(x[i].ravel(), lv[i].ravel()) <= ref * 1.10


def test_degenerate_maps_never_crash():
    d = np.zeros((6, 8, 8), np.float32)
    d[1, :4] = 1.0  # two values
    d[2, 0, 0] = np.nan
    d[3] = (np.arange(64).reshape(8, 8) % 3) / 2  # three values
    d[4, 0, 0], d[4, 0, 1] = 0.5, 1.0
    d[5, 1, 1] = np.inf
    lv, nl, valid = L.importance_levels_info(d.astype(np.float16), 5)
    np.testing.assert_array_equal(nl, [1, 2, 0, 3, 3, 0])
    np.testing.assert_array_equal(valid, [False, True, False, True, True, False])
    assert L.exclusion_counts(nl) == {"nonfinite": 2, "constant": 1}
    assert (lv[2] == 0).all() and (lv[0] == 1).all()
    np.testing.assert_array_equal(lv[3, 0, :3], [3, 2, 1])
    np.testing.assert_array_equal(lv[4, 0, :3], [2, 1, 3])
    masks = L.progressive_masks(lv, 4, nl)
    assert masks.shape == (6, 4, 8, 8) and masks.dtype == bool
    np.testing.assert_array_equal(masks.sum((2, 3))[:5], [[0] * 4, [32] * 4, [0] * 4, [21, 42, 42, 42], [1, 2, 2, 2]])


def test_heavily_tied_values_keep_k_levels():
    x = np.zeros((4, 16, 16), np.float32)
    x[0, :2] = np.linspace(0.1, 1.0, 32).reshape(2, 16)  # 87% zeros, then a ramp
    lv, nl, _ = L.importance_levels_info(x, 5)
    assert nl[0] == 5 and (lv[0, 2:] == 5).all()


def test_progressive_masks_nested_and_level_k_kept():
    maps = _smooth_maps(4, 16, seed=4)
    lv = L.importance_levels(maps, 5)
    m = L.progressive_masks(lv, 4)
    for i in range(4):
        for j in range(3):
            assert (m[i, j] <= m[i, j + 1]).all()
            assert m[i, j].sum() < m[i, j + 1].sum()
        np.testing.assert_array_equal(m[i, 0], lv[i] == 1)
        np.testing.assert_array_equal(m[i, 3], lv[i] <= 4)


def test_fraction_masks_exact_counts():
    maps = _smooth_maps(2, 20, seed=5)
    fm = L.fraction_masks(maps, [0.0, 0.1, 0.5, 1.0])
    np.testing.assert_array_equal(fm.sum((2, 3)), [[0, 40, 200, 400]] * 2)
    assert (fm[:, 1] <= fm[:, 2]).all()
    assert maps[0][fm[0, 1]].min() >= maps[0][~fm[0, 1]].max()


def test_batch_independence_and_chunking():
    maps = _smooth_maps(6, 16, seed=6)
    a = L.importance_levels(maps, 5, chunk=4)  # chunks of 4: one full, one padded
    b = np.concatenate([L.importance_levels(maps[i : i + 1], 5) for i in range(6)])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "bad, match",
    [(np.zeros((4, 4)), r"\[B, H, W\]"), (np.zeros((1, 4, 4), bool), "float")],
)
def test_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        L.importance_levels(bad, 5)
    with pytest.raises(ValueError, match="k"):
        L.importance_levels(np.zeros((1, 4, 4)), 1)
