"""Mesh helpers on forced host devices and with two jax.distributed processes on localhost."""

import os
import sys
import textwrap

import numpy as np
import pytest

from ibo_jax import parallel

_SCRIPT = textwrap.dedent(
    """
    import os, sys, json
    import jax, jax.numpy as jnp, numpy as np
    nproc, pid, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if nproc > 1:
        jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)
    from ibo_jax import parallel
    mesh = parallel.make_mesh()
    # Each process holds its own 4 rows of a global batch of 4 * nproc rows.
    local = np.arange(4 * pid, 4 * (pid + 1), dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    x = parallel.shard_batch(local, mesh)
    w = parallel.replicate(jnp.float32(2.0), mesh)
    y = jax.jit(lambda x, w: x * w)(x, w)
    total = jax.jit(lambda y: y.sum())(y)
    back = parallel.to_host(y)
    print(json.dumps({"pid": pid, "devices": jax.device_count(), "global": list(x.shape),
                      "total": float(total), "local_ok": bool(np.allclose(back, local * 2))}))
    """
)


def _run(nproc: int, devices_per_proc: int, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_SCRIPT)
    from ibo_jax_testing.procs import last_json, run_workers, worker_env

    env = worker_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_proc}")
    port = str(20000 + os.getpid() % 20000)

    return [last_json(o) for o in run_workers([[sys.executable, str(script), str(nproc), str(i), port]
                                               for i in range(nproc)], env)]


def test_forced_host_devices(tmp_path):
    (res,) = _run(1, 4, tmp_path)
    assert res["devices"] == 4 and res["global"] == [4, 3]
    assert res["total"] == pytest.approx(2 * 3 * sum(range(4)))
    assert res["local_ok"]


def test_two_processes_on_localhost(tmp_path):
    res = _run(2, 2, tmp_path)
    for r in res:
        assert r["devices"] == 4 and r["global"] == [8, 3]
        assert r["total"] == pytest.approx(2 * 3 * sum(range(8)))
        assert r["local_ok"]


def test_pad_batch():
    x = np.arange(5)[:, None]
    padded, n = parallel.pad_batch(x, 4)
    assert n == 5 and padded.shape == (8, 1) and (padded[5:, 0] == 4).all()
    same, n = parallel.pad_batch(x[:4], 4)
    assert n == 4 and same.shape == (4, 1)
