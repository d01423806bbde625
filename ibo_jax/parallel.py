"""Device mesh and shardings: one mesh axis `data`, batches sharded, parameters replicated.

Works the same on one CPU, several forced host devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N`), one GPU, or a multi-host TPU pod
(each process passes its host-local slice of the batch).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all (global) devices, axis name `data`."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`, everything else replicated."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def local_batch_multiple(mesh: Mesh) -> int:
    """A host-local batch must be a multiple of this to split evenly over local devices."""
    return max(1, len([d for d in mesh.devices.flat if d.process_index == jax.process_index()]))


def pad_batch(x: np.ndarray, multiple: int) -> tuple[np.ndarray, int]:
    """Pads axis 0 up to a multiple by repeating the last row; returns (padded, original size)."""
    n = x.shape[0]
    pad = (-n) % multiple
    if pad == 0:
        return x, n
    filler = np.repeat(x[-1:], pad, axis=0) if n else np.zeros((pad,) + x.shape[1:], x.dtype)
    return np.concatenate([x, filler], axis=0), n


def shard_batch(tree, mesh: Mesh):
    """Host-local numpy batch (pytree) -> global jax.Arrays sharded on the batch axis.

    Each process passes its own slice; the global batch is the concatenation over processes.
    """
    sharding = data_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def replicate(tree, mesh: Mesh):
    """Places a pytree (parameters, optimizer state) replicated on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def to_host(x) -> np.ndarray:
    """Global array -> this process's rows as numpy (all rows on a single process)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
        seen, rows = set(), []
        for s in shards:
            start = s.index[0].start or 0
            if start not in seen:
                seen.add(start)
                rows.append(np.asarray(s.data))
        return np.concatenate(rows, axis=0)
    return np.asarray(x)
