"""A benchmark grid: the study over data regimes x classifier architectures x classifier seeds
(and a few variant cells), its shared stages computed once, its cells claimed by processes.

    workdir/
      cells/<regime>-<arch>-s<seed>[+<variant>]/   one pipeline work directory per cell:
          config.json                              the cell's config (the grid's, with its overrides)
          run_summary.json                         as `pipeline.run` writes it
          <stage> -> ../../store/<stage>/<fp>      a link per stage to its shared folder
      store/<stage>/<fingerprint>/                 every stage folder, once per fingerprint
      store/<stage>/<fingerprint>.lock             held while a process computes it
      claims/<cell>.lock                           held by the process running that cell
      aggregate/                                   summary.json, report.md, figures (`grid.aggregate`)
      grid.json                                    the cells, their overrides, the processes' times

Sharing follows from the pipeline's fingerprints: a stage whose config section, globals and inputs
are identical in two cells has one folder (data per regime; the DDPM for every cell, keyed on the
normal training patches it reads; explain, occlude, score and trust per classifier). A process
takes the first cell nobody holds (a non-blocking lock), runs it, and goes on; when none is left it
waits for the cells others hold (blocking locks) and completes any whose process died, then
aggregates. Locks are released by the kernel when a process ends (also by a kill), so a rerun
resumes wherever the grid stopped. Any number of processes can run the same command at once
(`grid.workers = N` starts N - 1 more itself); each is a single-process JAX program.
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import ml_collections

from ibo_jax import io as ibo_io
from ibo_jax import pipeline

WORKER_ENV = "IBO_JAX_GRID_WORKER"  # set in the processes `grid.workers` starts: they start none


def default_config() -> ml_collections.ConfigDict:
    """The grid's own section (`config.grid`); every other section is the study's, shared by the cells."""
    c = ml_collections.ConfigDict()
    c.regimes = ("local", "global")  # data.cue per regime
    c.archs = ("resnet_small", "cnn_small")  # train_classifier.arch per architecture
    # train_classifier.model_kwargs per architecture (absent: the section's own)
    c.arch_kwargs = ml_collections.ConfigDict({
        "resnet_small": {"widths": (16, 32, 64), "layers": (1, 1, 1), "strides": (2, 2, 2)},
        "cnn_small": {"widths": (16, 32, 64), "convs": (2, 2, 2), "strides": (2, 2, 2)},
    })
    c.seeds = (0, 1, 2)  # train_classifier.seed: the data, evaluation set and DDPM stay fixed
    # extra cells: name -> {"cell": "<regime>-<arch>-s<seed>", "<section>": {field: value}, ...},
    # the named cell's config with those fields changed (e.g. a second DDPM seed)
    c.variants = ml_collections.ConfigDict()
    c.workers = 1  # processes (this one and N - 1 started with the same command line)
    # the aggregate (`ibo_jax.grid.aggregate`)
    c.curves = ("morf",)  # curves the verdicts are computed on
    # the verdicts' statistic: 'decided' (per patch, the method pairs the known answer orders, (concordant -
    # discordant) / decided) or 'kendall' (within-patch tau on all pairs). 'decided' was chosen from the
    # power curves of a pilot grid (2026-12-05, docs/results.md): at 64 patches it decided more of IBO's
    # pairs in 3 of 4 cells; the margin (stats.TAU_MARGIN) was fixed before either was looked at.
    c.statistic = "decided"
    c.tie_tol = 1e-3  # AUC differences within this count as ties (near-ties that swap between CPUs)
    c.n_boot = 1000
    c.alpha = 0.05
    c.power_ns = (8, 16, 32, 64, 128)  # patch counts of the power curves (those <= the evaluation set)
    c.power_repeats = 8
    return c


@dataclasses.dataclass(frozen=True)
class Cell:
    name: str
    regime: str
    arch: str
    seed: int
    variant: str
    config: ml_collections.ConfigDict

    @property
    def base(self) -> str:
        return f"{self.regime}-{self.arch}-s{self.seed}"


def _apply(config: ml_collections.ConfigDict, overrides: Mapping, where: str) -> None:
    for section, fields in overrides.items():
        if section == "cell":
            continue
        if section not in config or not isinstance(config[section], ml_collections.ConfigDict):
            raise ValueError(f"{where}: {section!r} is not a stage section of the config")
        for field, value in dict(fields).items():
            if field not in config[section]:
                raise ValueError(f"{where}: config.{section} has no field {field!r}")
            config[section][field] = ml_collections.ConfigDict(value) if isinstance(value, Mapping) else value


def cells(config: ml_collections.ConfigDict) -> list[Cell]:
    """The grid's cells in run order: regimes x archs x seeds, then the variant cells."""
    g = config.grid
    study = copy.deepcopy(config)
    with study.unlocked():
        del study["grid"]
    for field in ("regimes", "archs", "seeds"):
        if not len(g[field]):
            raise ValueError(f"config.grid.{field}: expected at least one value")
    out = []
    for regime in g.regimes:
        for arch in g.archs:
            for seed in g.seeds:
                c = copy.deepcopy(study)
                c.data.cue = str(regime)
                c.train_classifier.arch = str(arch)
                if arch in g.arch_kwargs:
                    c.train_classifier.model_kwargs = ml_collections.ConfigDict(dict(g.arch_kwargs[arch]))
                c.train_classifier.seed = int(seed)
                out.append(Cell(f"{regime}-{arch}-s{int(seed)}", str(regime), str(arch), int(seed), "", c))
    by_name = {c.name: c for c in out}
    for vname, spec in g.variants.items():
        spec = ibo_io.plain(spec)
        base = spec.get("cell")
        if base not in by_name:
            raise ValueError(f"config.grid.variants.{vname}.cell: expected one of {sorted(by_name)}, got {base!r}")
        b = by_name[base]
        c = copy.deepcopy(b.config)
        _apply(c, spec, f"config.grid.variants.{vname}")
        out.append(Cell(f"{base}+{vname}", b.regime, b.arch, b.seed, str(vname), c))
    return out


class Claim:
    """A flock on `path`: `Claim(path, wait=False).held` says whether this process got it."""

    def __init__(self, path: Path, *, wait: bool):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            self.held = True
        except BlockingIOError:
            self.held = False
            os.close(self.fd)
            self.fd = None

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def _run_cell(cell: Cell, workdir: Path, registry, say) -> dict:
    cell_dir = workdir / "cells" / cell.name
    cell_dir.mkdir(parents=True, exist_ok=True)
    ibo_io.write_json(cell_dir / "config.json", ibo_io.plain(cell.config, lists=True))
    t = time.time()
    summary = pipeline.run(cell.config, cell_dir, registry=registry, store=workdir / "store",
                           echo=lambda line: say(f"[{cell.name}] {line}"))
    ran = [r["stage"] for r in summary["stages"] if r["status"] != "skipped"]
    say(f"[{cell.name}] done in {time.time() - t:.1f} s" + (f" (ran {', '.join(ran)})" if ran else " (all shared or finished)"))
    return summary


def _start_workers(n: int, say) -> list[subprocess.Popen]:
    if n <= 1 or os.environ.get(WORKER_ENV):
        return []
    env = {**os.environ, WORKER_ENV: "1", "IBO_JAX_NO_PROGRESS": "1"}
    say(f"grid: starting {n - 1} more process(es)")
    return [subprocess.Popen([sys.executable, "-m", "ibo_jax.launch", *sys.argv[1:]], env=env,
                             stdout=subprocess.DEVNULL) for _ in range(n - 1)]


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, registry=None,
        echo: Callable[[str], None] | None = None, aggregate: bool = True) -> dict:
    """Runs every cell not finished yet (claiming cells against concurrent processes), then the
    aggregate. Returns {"cells": {name: run summary}, "aggregate": summary or None, "seconds"}."""
    say = echo or (lambda _line: None)
    workdir = pipeline.check_workdir(workdir)
    all_cells = cells(config)
    t0 = time.time()
    workers = _start_workers(int(config.grid.workers), say)
    try:
        return _run(config, workdir, all_cells, workers, registry, say, aggregate, t0)
    finally:
        for w in workers:  # this process failed or was interrupted: no orphans left running
            if w.poll() is None:
                w.terminate()


def _run(config, workdir: Path, all_cells, workers, registry, say, aggregate: bool, t0: float) -> dict:
    from ibo_jax.grid import aggregate as agg

    ibo_io.write_json(workdir / "grid.json", {
        "cells": [{"name": c.name, "regime": c.regime, "arch": c.arch, "seed": c.seed, "variant": c.variant}
                  for c in all_cells], "grid": ibo_io.plain(config.grid, lists=True)})
    done: dict[str, dict] = {}
    for cell in all_cells:  # first pass: the cells nobody holds
        with Claim(workdir / "claims" / f"{cell.name}.lock", wait=False) as claim:
            if claim.held:
                done[cell.name] = _run_cell(cell, workdir, registry, say)
    for cell in all_cells:  # then wait for the others' cells (and finish any whose process died)
        if cell.name not in done:
            with Claim(workdir / "claims" / f"{cell.name}.lock", wait=True):
                done[cell.name] = _run_cell(cell, workdir, registry, say)
    for w in workers:
        w.wait()
    failed = [w.args for w in workers if w.returncode]
    if failed:
        say(f"grid: {len(failed)} worker process(es) failed; their cells were completed by this one")
    summary = None
    if aggregate:
        with Claim(workdir / "aggregate.lock", wait=True):
            summary = agg.run(config, workdir, all_cells, say=say, started=t0)
    return {"cells": done, "aggregate": summary, "seconds": time.time() - t0}
