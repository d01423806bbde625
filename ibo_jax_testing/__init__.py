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


def write_explained(explain_dir: str | Path, *, image, tumor_mask, heat, methods, controls=(), k: int = 5,
                    index=None, label=None, twin=None) -> Path:
    """Writes an explain stage's outputs through `ibo_jax.artifacts`: the evaluation set (uint8
    images [N, H, W, 3], tumor masks [N, H, W], index default 100.., label default 1) and heatmaps
    float [N, M, H, W] for `methods` (controls among them named in `controls`), with importance
    levels computed from the float32 maps (k levels), as the explain stage would. Returns the folder."""
    import numpy as np

    from ibo_jax import artifacts
    from ibo_jax.evaluation import levels as lv

    heat = np.asarray(heat, np.float32)
    n, m, h, w = heat.shape
    ev = {"index": np.arange(100, 100 + n, dtype=np.int64) if index is None else np.asarray(index, np.int64),
          "image": np.asarray(image, np.uint8), "label": np.ones(n, np.int32) if label is None else np.asarray(label),
          "tumor_mask": np.asarray(tumor_mask, bool)}
    if twin is not None:
        ev["twin"] = np.asarray(twin, np.uint8)
    else:
        ev["twin_unavailable"] = np.asarray("test data without twins")
    levels, n_levels, valid = lv.importance_levels_info(heat.reshape(n * m, h, w), k)
    artifacts.write_eval_set(explain_dir, ev)
    artifacts.write_heatmaps(explain_dir, {
        "methods": np.asarray(list(methods), dtype=str), "controls": np.asarray(list(controls), dtype=str),
        "heatmaps": heat.astype(np.float16), "levels": levels.reshape(n, m, h, w).astype(np.int8),
        "n_levels": n_levels.reshape(n, m).astype(np.int8), "k": np.int32(k), "valid": valid.reshape(n, m),
        "cam_valid": np.ones((n, m), bool)})
    return Path(explain_dir)


def write_patches_npz(path: str | Path, *, n: int, size: int, splits: Mapping[str, int], seed: int = 0) -> Path:
    """Your-own-data patches for the `npz` source: alternating normal / tumor patches of random
    texture, a purple square (the middle half) on the tumor ones, `splits` {split: count} in order."""
    import numpy as np

    from ibo_jax import io as ibo_io

    rng = np.random.default_rng(seed)
    label = np.arange(n) % 2
    tumor = np.zeros((n, size, size), bool)
    tumor[label == 1, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = True
    image = rng.integers(60, 200, (n, size, size, 3), dtype=np.uint8)
    image[tumor] = [150, 40, 120]
    split = np.array([s for s, k in splits.items() for _ in range(k)])
    if len(split) != n:
        raise ValueError(f"splits {dict(splits)} count {len(split)} patches, not n={n}")
    ibo_io.write_npz(path, {"image": image, "label": label, "tumor_mask": tumor, "split": split})
    return Path(path)
