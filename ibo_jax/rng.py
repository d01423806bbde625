"""Randomness that does not depend on how the work is cut.

Every draw for an example derives from the root key folded with that example's identity
(image id, method, mask, draw), never with its position in a batch.
"""

from __future__ import annotations

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
