"""ibo_jax.rng: stable identities, the unrolled Threefry (known answers, fold_in parity), normals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ibo_jax import rng


@pytest.mark.parametrize("key,counter,expected", [  # Random123 known-answer vectors, 20 rounds
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
])
def test_threefry_known_answers(key, counter, expected):
    y = rng.threefry2x32(*key, *counter)
    assert tuple(int(w) for w in y) == expected


def test_fold_in_is_bit_identical_to_jax():
    key = jax.random.key(1234)
    for d in (0, 1, 17, 2**31 - 1):
        np.testing.assert_array_equal(jax.random.key_data(rng.fold_in(key, d)),
                                      jax.random.key_data(jax.random.fold_in(key, d)))
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(5))
    ours = jax.jit(jax.vmap(rng.fold_in))(keys, jnp.arange(5) * 7)
    np.testing.assert_array_equal(jax.random.key_data(ours),
                                  jax.random.key_data(jax.vmap(jax.random.fold_in)(keys, jnp.arange(5) * 7)))


def test_normal_is_standard_normal_and_deterministic():
    key = jax.random.key(7)
    z = np.asarray(rng.normal(key, (600, 501)))  # odd element count: the last counter's half is dropped
    assert z.shape == (600, 501) and z.dtype == np.float32
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(stats.skew(z.ravel())) < 0.02 and abs(stats.kurtosis(z.ravel())) < 0.03
    assert stats.kstest(z.ravel()[::3], "norm").pvalue > 1e-3
    np.testing.assert_array_equal(z, np.asarray(jax.jit(rng.normal, static_argnums=1)(key, (600, 501))))
    other = np.asarray(rng.normal(jax.random.fold_in(key, 1), (600, 501)))
    assert abs(np.corrcoef(z.ravel(), other.ravel())[0, 1]) < 0.01
    # the first n values do not depend on the requested size (counter mode)
    np.testing.assert_array_equal(np.asarray(rng.normal(key, (10,))), np.asarray(rng.normal(key, (20,)))[:10])


def test_normal_other_key_kinds_and_errors():
    rbg = jax.random.key(0, impl="rbg")
    np.testing.assert_array_equal(np.asarray(rng.normal(rbg, (4,))), np.asarray(jax.random.normal(rbg, (4,))))
    with pytest.raises(ValueError, match="one key"):
        rng.normal(jax.random.split(jax.random.key(0), 2), (3,))
