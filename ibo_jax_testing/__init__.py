"""Test and benchmark helpers for ibo_jax (not part of the library: nothing in `ibo_jax` imports it).

    from ibo_jax_testing import demo_config, stage_context
    from ibo_jax_testing.models import colour_classifier, toy_eps_model, diffusers_pipeline_dir
    from ibo_jax_testing.procs import run_workers, last_json, worker_env
    from ibo_jax_testing import reference      # torch: pytorch-grad-cam and plain-torch ResNets

Importable from the repository root (tests, `python -m ...`) and from `benchmarks/*.py` (which put
the root on sys.path); worker processes get it through `procs.worker_env()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository: configs/, benchmarks/, tests/


def demo_config(arg: str | None = None):
    """A fresh `configs/demo.py` config (through `pipeline.config_from_file`, not sys.path)."""
    from ibo_jax import pipeline

    return pipeline.config_from_file(ROOT / "configs" / "demo.py", arg)


def stage_context(name: str, workdir: str | Path, cfg=None, config=None, *,
                  inputs: Iterable[str] | Mapping[str, Path] = (), key=None, mesh=None, seed: int = 0):
    """A `pipeline.StageContext` for stage `name` in `workdir/name` (created), as `pipeline.run`
    builds it: `cfg` defaults to `config[name]` (else the stage's default_config()), `inputs` are
    stage names (folders `workdir/<stage>`) or a mapping name -> folder, `key` defaults to the
    stage's key under the root key of `seed`."""
    from ibo_jax import pipeline, rng

    workdir = Path(workdir)
    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    if cfg is None and config is not None and name in config:
        cfg = config[name]
    elif cfg is None and name in pipeline.STAGES:
        cfg = pipeline.STAGES[name].load().default_config()
    if not isinstance(inputs, Mapping):
        inputs = {k: workdir / k for k in inputs}
    if key is None:
        key = rng.fold(rng.root_key(seed), name)
    return pipeline.StageContext(name=name, dir=d, workdir=workdir, cfg=cfg, config=config, key=key,
                                 mesh=mesh, inputs=dict(inputs))
