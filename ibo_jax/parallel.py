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


def map_batches(fn, *arrays: np.ndarray, batch_size: int, pad: str = "zeros", pad_single: bool = False,
                callback=None):
    """fn(*batch) over consecutive batches of the arrays' leading axis, results trimmed and
    concatenated (numpy; fn may return an array or a tuple / dict of arrays). None when empty.

    The last batch is padded to `batch_size` when there is more than one batch (or always, with
    pad_single), so one compiled shape serves every call; `pad`: 'zeros' or 'edge' (repeat the
    last row). Which rows pad a batch can change a real row's float results on XLA:CPU, so each
    caller keeps its own choice. `callback(rows_done)` runs after each batch (progress bars).
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"map_batches: arrays of different lengths {[len(a) for a in arrays]}")
    if n == 0:
        return None
    if pad not in ("zeros", "edge"):
        raise ValueError(f"map_batches: pad must be 'zeros' or 'edge', got {pad!r}")
    outs = []
    for start in range(0, n, batch_size):
        part = [a[start:start + batch_size] for a in arrays]
        m = len(part[0])
        if m < batch_size and (n > batch_size or pad_single):
            if pad == "edge":
                part = [np.concatenate([p, np.repeat(p[-1:], batch_size - m, axis=0)]) for p in part]
            else:
                part = [np.pad(np.asarray(p), [(0, batch_size - m)] + [(0, 0)] * (np.ndim(p) - 1)) for p in part]
        outs.append(jax.tree.map(lambda y, m=m: np.asarray(y)[:m], fn(*part)))
        if callback is not None:
            callback(start + m)
    return jax.tree.map(lambda *ys: np.concatenate(ys), *outs)


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
