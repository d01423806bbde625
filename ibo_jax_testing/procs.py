"""Running several worker processes in a test (jax.distributed on localhost) without time limits.

A slow machine only makes them slow; a worker that fails stops the others at once (a peer waiting
in a barrier would otherwise wait for it forever), and its stderr is in the assertion message.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

from ibo_jax_testing import ROOT


def worker_env(**extra: str) -> dict:
    """os.environ + JAX on the CPU + the repository root first on PYTHONPATH, so a worker script
    (run from a temporary folder) imports this checkout's `ibo_jax` and `ibo_jax_testing`."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=path, **extra)


def run_workers(cmds: list[list[str]], env: dict) -> list[str]:
    """Runs the commands together; returns each one's stdout once all exited with status 0."""
    with tempfile.TemporaryDirectory() as tmp:
        files = [(open(f"{tmp}/{i}.out", "w+"), open(f"{tmp}/{i}.err", "w+")) for i in range(len(cmds))]
        procs = [subprocess.Popen(c, env=env, stdout=o, stderr=e, text=True) for c, (o, e) in zip(cmds, files)]
        failed = None
        while failed is None and any(p.poll() is None for p in procs):
            failed = next((i for i, p in enumerate(procs) if p.poll() not in (None, 0)), None)
            time.sleep(0.2)
        failed = next((i for i, p in enumerate(procs) if p.poll() not in (None, 0)), failed)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        outs = []
        for o, e in files:
            o.seek(0)
            e.seek(0)
            outs.append((o.read(), e.read()))
            o.close()
            e.close()
    if failed is not None:
        raise AssertionError(f"worker {failed} exited with {procs[failed].returncode}:\n{outs[failed][1][-3000:]}")
    return [o for o, _ in outs]


def last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])
