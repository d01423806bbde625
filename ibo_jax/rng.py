"""Randomness that does not depend on how the work is cut.

Every draw for an example derives from the root key folded with that example's identity
(image id, method, mask, draw), never with its position in a batch.
"""

from __future__ import annotations

import functools
import hashlib

import jax
import numpy as np


def stable_int(value: int | str) -> int:
    """Maps an int or a string to a stable non-negative 31-bit int (not Python's salted hash)."""
    if isinstance(value, (int, np.integer)):
        return int(value) & 0x7FFFFFFF
    digest = hashlib.blake2b(str(value).encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def fold(key: jax.Array, *identity: int | str) -> jax.Array:
    """fold_in of each part of an identity, in order: fold(key, 'ibo', image_id, mask, draw)."""
    for part in identity:
        key = jax.random.fold_in(key, stable_int(part))
    return key


def root_key(seed: int) -> jax.Array:
    return jax.random.key(int(seed))


def example_keys(key, batch: int, *, name: str = "key") -> jax.Array:
    """Per-example typed keys [B] from one key (folded with the batch position 0..B-1) or keys [B].

    Pass per-example keys (e.g. `row_keys` of image id, method, mask) so draws do not depend on
    how examples are batched. Accepts typed keys and raw uint32 keys ([2] or [B, 2]).
    """
    if key is None:
        raise ValueError(f"{name}: this function is random; pass a jax key or per-example keys [B]")
    key = jax.numpy.asarray(key) if not isinstance(key, jax.Array) else key
    if not jax.numpy.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype != jax.numpy.uint32 or key.shape[-1:] != (2,):
            raise ValueError(f"{name}: expected a jax key (jax.random.key) or keys [B], got {key.dtype}{key.shape}")
        key = jax.random.wrap_key_data(key)
    if key.shape == ():
        return _positions(key, batch)
    if key.shape == (batch,):
        return key
    raise ValueError(f"{name}: expected one key or per-example keys of shape [{batch}], got {key.shape}")


@functools.partial(jax.jit, static_argnames=("batch",))
def _positions(key: jax.Array, batch: int) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jax.numpy.arange(batch))


def row_keys(base: jax.Array, ids) -> jax.Array:
    """fold(base, *row) for every row of stable ints ids [R, P] (vectorized) -> typed keys [R]:
    the key of an occluded image (image id, method, '<curve>:<mask>', draw) whatever its batch.

    Compiled once per power-of-two bucket of R (rows padded with zeros, then cut off): an occlude
    stage calls it once per chunk with many row counts, and the eager vmap cost ~50 ms a call."""
    ids = np.asarray(ids, np.int64)
    r = len(ids)
    bucket = max(64, 1 << max(0, r - 1).bit_length())
    padded = np.zeros((bucket, ids.shape[1] if ids.ndim == 2 else 0), np.uint32)
    padded[:r] = ids.astype(np.uint32)
    return _row_keys(base, jax.numpy.asarray(padded))[:r]


@jax.jit
def _row_keys(base: jax.Array, ids: jax.Array) -> jax.Array:
    def one(row):
        k = base
        for j in range(ids.shape[1]):
            k = jax.random.fold_in(k, row[j])
        return k

    return jax.vmap(one)(ids)


# --- counter-mode normals with an unrolled Threefry-2x32 -------------------------------------
# JAX lowers its threefry primitive on the CPU as a rolled 5-iteration loop (compile time over
# run time): inside a sampler that draws three image-sized normals per network call, that loop
# was 12% of a tiny UNet's step on this 2-core CPU. Written out as plain uint32 ops the hash is
# one fused elementwise kernel on every backend. Same function (Threefry-2x32, 20 rounds, Salmon
# et al. 2011), so `fold_in` below is bit-identical to `jax.random.fold_in` (tested).

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32, 20 rounds: key words (k0, k1), counter words (x0, x1) -> two uint32 words."""
    u32 = lambda a: jax.numpy.asarray(a, jax.numpy.uint32)  # noqa: E731
    k0, k1, x0, x1 = u32(k0), u32(k1), u32(x0), u32(x1)
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for s in range(5):
        for r in _ROTATIONS[s % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
        x0 = x0 + ks[(s + 1) % 3]
        x1 = x1 + ks[(s + 2) % 3] + np.uint32(s + 1)
    return x0, x1


def _is_threefry(key: jax.Array) -> bool:
    return jax.numpy.issubdtype(key.dtype, jax.dtypes.prng_key) and \
        str(jax.random.key_impl(key)).endswith("threefry2x32")


def fold_in(key: jax.Array, data) -> jax.Array:
    """`jax.random.fold_in` (bit-identical for threefry keys), unrolled; other key kinds fall back."""
    if not _is_threefry(key):
        return jax.random.fold_in(key, data)
    kd = jax.random.key_data(key)
    y0, y1 = threefry2x32(kd[..., 0], kd[..., 1], 0, jax.numpy.asarray(data).astype(jax.numpy.uint32))
    return jax.random.wrap_key_data(jax.numpy.stack([y0, y1], axis=-1), impl=jax.random.key_impl(key))


def normal(key: jax.Array, shape: tuple[int, ...], dtype=np.float32) -> jax.Array:
    """Standard normals of `shape` from one key: counter-mode Threefry bits, 23-bit uniforms in
    (-1, 1), sqrt(2) * erfinv. Not `jax.random.normal`'s stream; deterministic given the key on
    every backend. Keys that are not threefry fall back to `jax.random.normal`."""
    if not _is_threefry(key) or key.ndim:
        if key.ndim:
            raise ValueError(f"rng.normal: one key expected (vmap over batches of keys), got shape {key.shape}")
        return jax.random.normal(key, shape, dtype)
    jnp = jax.numpy
    n = int(np.prod(shape, dtype=np.int64))
    half = (n + 1) // 2
    kd = jax.random.key_data(key)
    y0, y1 = threefry2x32(kd[0], kd[1], jax.lax.iota(jnp.uint32, half), 0)
    bits = jnp.stack([y0, y1], axis=-1).reshape(-1)[:n]  # counter j -> values 2j, 2j + 1
    one_two = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32)  # [1, 2)
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u = jnp.maximum(one_two * 2.0 - 3.0, lo)  # [-1, 1) -> (-1, 1)
    return (np.float32(np.sqrt(2.0)) * jax.lax.erf_inv(u)).reshape(shape).astype(dtype)
