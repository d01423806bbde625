"""The benchmark grid: cells, stages shared by content and computed once, cell claiming by
concurrent processes, resume, and (slow) the real grid at toy size, one process against two."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ibo_jax import grid, pipeline
from ibo_jax_testing import ROOT, grid_toy
from ibo_jax_testing.procs import run_workers, worker_env


def _log_counts(path: Path) -> Counter:
    lines = path.read_text().split("\n") if path.exists() else []
    return Counter(tuple(line.split()[:2]) for line in lines if line)


def _results(workdir: Path) -> dict:
    return {d.name: json.loads((d / "score" / "result.json").read_text())
            for d in sorted((workdir / "cells").iterdir())}


def test_cells_expand_the_grid_and_name_bad_variants():
    c = grid_toy.config()
    c.grid.variants = {"second": {"cell": "local-a-s0", "train_ddpm": {"seed": 1}}}
    cells = grid.cells(c)
    assert [x.name for x in cells][:3] == ["local-a-s0", "local-a-s1", "local-b-s0"]
    assert len(cells) == 2 * 2 * 2 + 1 and cells[-1].name == "local-a-s0+second"
    assert cells[-1].config.train_ddpm.seed == 1 and cells[0].config.train_ddpm.seed == -1
    assert {x.config.data.cue for x in cells if x.regime == "global"} == {"global"}
    assert [x.config.train_classifier.seed for x in cells[:2]] == [0, 1]
    assert "grid" not in cells[0].config
    c.grid.variants = {"second": {"cell": "nowhere-a-s0"}}
    with pytest.raises(ValueError, match=r"config.grid.variants.second.cell: expected one of"):
        grid.cells(c)
    c.grid.variants = {"second": {"cell": "local-a-s0", "train_ddpm": {"stepz": 1}}}
    with pytest.raises(ValueError, match=r"config.grid.variants.second: config.train_ddpm has no field 'stepz'"):
        grid.cells(c)


def test_shared_stages_run_once_and_a_rerun_runs_nothing(tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("IBO_JAX_TOY_LOG", str(log))
    c = grid_toy.config()
    grid.run(c, tmp_path / "g", registry=grid_toy.REGISTRY, aggregate=False)
    runs = _log_counts(log)
    assert max(runs.values()) == 1  # no stage folder computed twice
    per_stage = Counter(stage for stage, _ in runs)
    # data once per regime; the DDPM once for both regimes (it reads only the normal patches,
    # identical in both); the classifier and everything after it once per cell
    assert per_stage == {"data": 2, "train_ddpm": 1, "train_classifier": 8, "score": 8}
    links = {(tmp_path / "g" / "cells" / n / "train_ddpm").resolve() for n in ("local-a-s0", "global-b-s1")}
    assert len(links) == 1
    before = log.read_text()
    grid.run(c, tmp_path / "g", registry=grid_toy.REGISTRY, aggregate=False)
    assert log.read_text() == before
    # what the DDPM reads changes -> it runs again (content key, not the data config)
    c.data.n = 17
    grid.run(c, tmp_path / "g", registry=grid_toy.REGISTRY, aggregate=False)
    assert Counter(s for s, _ in _log_counts(log))["train_ddpm"] == 2


def test_chained_fingerprint_would_not_share(tmp_path, monkeypatch):
    """The control: without the content key the DDPM runs once per regime."""
    log = tmp_path / "log"
    monkeypatch.setenv("IBO_JAX_TOY_LOG", str(log))
    reg = dict(grid_toy.REGISTRY)
    reg["train_ddpm"] = pipeline.Stage("train_ddpm", grid_toy.__name__, deps=("data",))
    grid.run(grid_toy.config(), tmp_path / "g", registry=reg, aggregate=False)
    assert Counter(s for s, _ in _log_counts(log))["train_ddpm"] == 2


def test_a_killed_stage_resumes_and_gives_the_same_results(tmp_path, monkeypatch):
    monkeypatch.setenv("IBO_JAX_TOY_FAIL", f"train_classifier:{tmp_path / 'failed'}")
    with pytest.raises(RuntimeError, match="toy: killed mid-stage"):
        grid.run(grid_toy.config(), tmp_path / "a", registry=grid_toy.REGISTRY, aggregate=False)
    partial = list((tmp_path / "a" / "store" / "train_classifier").glob("*/partial.npy"))
    assert len(partial) == 1
    grid.run(grid_toy.config(), tmp_path / "a", registry=grid_toy.REGISTRY, aggregate=False)  # resumes
    assert partial[0].exists()  # the same folder went on (resumed, not cleared)
    monkeypatch.delenv("IBO_JAX_TOY_FAIL")
    grid.run(grid_toy.config(), tmp_path / "b", registry=grid_toy.REGISTRY, aggregate=False)
    assert _results(tmp_path / "a") == _results(tmp_path / "b")


_WORKER = """
import os, sys, time
from ibo_jax import grid
from ibo_jax_testing import grid_toy
if len(sys.argv) > 2:  # a start barrier: every worker has imported everything before any starts
    open(os.path.join(sys.argv[2], str(os.getpid())), "w").close()
    while len(os.listdir(sys.argv[2])) < 2:
        time.sleep(0.05)
grid.run(grid_toy.config(), sys.argv[1], registry=grid_toy.REGISTRY, aggregate=False)
print("{}")
"""


def test_two_processes_share_the_cells_and_equal_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    log = tmp_path / "log"
    env = worker_env(IBO_JAX_TOY_LOG=str(log), IBO_JAX_TOY_SLEEP="0.15")
    (tmp_path / "barrier").mkdir()
    run_workers([[sys.executable, str(script), str(tmp_path / "two"), str(tmp_path / "barrier")]] * 2, env)
    lines = [ln.split() for ln in log.read_text().split("\n") if ln]
    assert max(Counter((s, fp) for s, fp, _ in lines).values()) == 1  # every folder computed once
    assert len({pid for *_, pid in lines}) == 2  # both processes computed cells
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=worker_env(), check=True,
                   capture_output=True)
    assert _results(tmp_path / "two") == _results(tmp_path / "one")


def test_sigkill_while_holding_a_stage_lock_then_rerun(tmp_path):
    """A process killed (SIGKILL) in the middle of a shared stage, holding its lock: the kernel frees
    the lock, a rerun resumes that folder and gives the results of an uninterrupted grid."""
    import os
    import signal
    import time

    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    work = tmp_path / "g"
    proc = subprocess.Popen([sys.executable, str(script), str(work)], env=worker_env(IBO_JAX_TOY_SLEEP="60"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not list((work / "store" / "data").glob("*/.fingerprint")):  # inside the first stage
            assert proc.poll() is None and time.time() < deadline, "the worker did not reach its first stage"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not list((work / "store" / "data").glob("*/manifest.json"))
    subprocess.run([sys.executable, str(script), str(work)], env=worker_env(), check=True, capture_output=True,
                   timeout=300)
    subprocess.run([sys.executable, str(script), str(tmp_path / "fresh")], env=worker_env(), check=True,
                   capture_output=True, timeout=300)
    assert _results(work) == _results(tmp_path / "fresh")


@pytest.mark.slow
def test_real_grid_two_processes_equal_one(tmp_path):
    """configs/benchmark.py:tiny (2 regimes x 1 arch x 2 seeds) through the launcher: one process,
    then two (`grid.workers=2`) in a fresh work directory; the same aggregate tables."""
    base = [sys.executable, "-m", "ibo_jax.launch", f"--config={ROOT / 'configs' / 'benchmark.py'}:tiny",
            "--config.grid.archs=('resnet_small',)", "--config.grid.variants={}"]
    env = worker_env(IBO_JAX_NO_PROGRESS="1")
    out = {}
    for name, extra in (("one", []), ("two", ["--config.grid.workers=2"])):
        r = subprocess.run([*base, f"--workdir={tmp_path / name}", *extra], env=env, capture_output=True, text=True,
                           cwd=tmp_path, timeout=1500)
        assert r.returncode == 0, r.stderr[-3000:]
        out[name] = json.loads((tmp_path / name / "aggregate" / "summary.json").read_text())
    one, two = out["one"], out["two"]
    assert one["seeds"] == [0, 1]
    for key in ("agreement", "pairwise", "per_seed_pairwise", "goal", "power"):
        assert one[key] == two[key], key
    row = one["agreement"][0]
    assert {"regime", "arch", "curve", "strategy", "statistic", "estimate", "lo", "hi"} <= set(row)
    assert {r["verdict"] for r in one["pairwise"]} <= {"separated", "equivalent", "undecided"}
    assert {r["statistic"] for r in one["agreement"]} == {"kendall", "decided", "mard", "plausibility"}
    runs = one["seconds"]["per_stage"]
    assert runs["data"]["runs"] == 2 and runs["train_ddpm"]["runs"] == 1 and runs["train_classifier"]["runs"] == 4
    report = (tmp_path / "one" / "aggregate" / "report.md").read_text()
    assert report.startswith("# Benchmark grid") and "## Verdict table (morf)" in report
    cells = {c["name"] for c in json.loads((tmp_path / "two" / "grid.json").read_text())["cells"]}
    assert cells == {"local-resnet_small-s0", "local-resnet_small-s1", "global-resnet_small-s0",
                     "global-resnet_small-s1"}


def _orders(rng, n_patches, m, gap, noise=0.0):
    """AUC tables [1, P, M] whose methods are ordered 0 < 1 < ... with steps `gap` (plus noise)."""
    base = np.arange(m) * gap + 0.3
    return (base + rng.normal(0, noise, size=(n_patches, m)))[None] if noise else np.broadcast_to(base, (n_patches, m))[None].copy()


def test_a_verdict_resting_on_near_ties_is_reported_undecided():
    from ibo_jax.grid import aggregate

    rng = np.random.default_rng(0)
    p, m, tol = 40, 6, 1e-3
    ref = _orders(rng, p, m, 0.05)
    fragile = _orders(rng, p, m, 1.01 * tol)  # the right order, by steps barely above the tie threshold
    solid = ref + rng.normal(0, 0.04, size=ref.shape)  # the right order, noisily, by large steps
    inverted = ref[..., ::-1].copy()
    rows = aggregate.stable_verdicts({"fragile": fragile, "solid": solid, "inverted": inverted}, ref, "kendall",
                                     tie_tol=tol, n_boot=300, seed=0, alpha=0.05, margin=0.1)
    by = {(r["a"], r["b"]): r for r in rows}
    assert by[("fragile", "solid")]["verdict_raw"] == "separated"  # tau 1 against ~0.6, unperturbed
    assert not by[("fragile", "solid")]["stable"] and by[("fragile", "solid")]["verdict"] == "undecided"
    assert by[("solid", "inverted")]["stable"] and by[("solid", "inverted")]["verdict"] == "separated"
    mard = aggregate.stable_verdicts({"solid": solid, "inverted": inverted}, ref, "mard", tie_tol=tol, n_boot=300,
                                     seed=0, alpha=0.05, margin=0.5)
    assert mard[0]["verdict"] == "separated" and mard[0]["difference"] < 0  # lower MARD = better


def test_patches_needed_extrapolates_at_holms_strictest_level():
    from statistics import NormalDist

    from ibo_jax.grid import aggregate

    z = NormalDist().inv_cdf(0.975)
    row = {"difference": 0.2, "lo": 0.2 - z * 0.1, "hi": 0.2 + z * 0.1, "verdict_raw": "undecided"}  # se 0.1
    z15 = NormalDist().inv_cdf(1 - 0.05 / 30)
    want = int(np.ceil(32 * (z15 * 0.1 / 0.2) ** 2))
    assert aggregate.patches_needed(row, 32, margin=0.1, n_pairs=15) == want
    assert aggregate.patches_needed({**row, "verdict_raw": "separated"}, 32, margin=0.1, n_pairs=15) is None
    tiny = {"difference": 0.0, "lo": -0.05, "hi": 0.05, "verdict_raw": "undecided"}  # equivalence is reachable
    assert aggregate.patches_needed(tiny, 32, margin=0.1, n_pairs=15) >= 33
