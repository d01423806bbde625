"""Cheap stages with the benchmark grid's shape, for tests of stage sharing, cell claiming and resume.

    data              writes normal.npy (depends only on `n`) and tumor.npy (on `n` and `cue`)
    train_ddpm        reads normal.npy only: keyed on its content (`input_key`), like the real one
    train_classifier  reads both, with its `seed` and `arch`
    score             writes result.json from the classifier's output

Every run of a stage appends `<stage> <fingerprint> <pid>` to the file named by $IBO_JAX_TOY_LOG, so
a test counts how often each stage folder was computed and by which process. $IBO_JAX_TOY_SLEEP
(seconds) slows each stage so that concurrent processes interleave; $IBO_JAX_TOY_FAIL=<stage>:<flag>
makes the first run of that stage (while file <flag> does not exist) write a partial file, create
<flag> and raise (a kill mid-stage; the rerun resumes in the same folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import ml_collections
import numpy as np

from ibo_jax import pipeline

REGISTRY = {s.name: s for s in (
    pipeline.Stage("data", __name__),
    pipeline.Stage("train_ddpm", __name__, deps=("data",), content_key=f"{__name__}:input_key"),
    pipeline.Stage("train_classifier", __name__, deps=("data",)),
    pipeline.Stage("score", __name__, deps=("train_classifier", "train_ddpm")),
)}


def default_config() -> ml_collections.ConfigDict:  # one module serves every toy stage
    return ml_collections.ConfigDict()


def config() -> ml_collections.ConfigDict:
    """A grid config over the toy stages (no aggregate: `grid.run(..., aggregate=False)`)."""
    from ibo_jax import grid

    c = ml_collections.ConfigDict()
    c.seed, c.image_size, c.num_classes, c.class_names, c.tumor_class = 0, 8, 2, ("normal", "tumor"), 1
    c.data = ml_collections.ConfigDict({"n": 16, "cue": "local"})
    c.train_ddpm = ml_collections.ConfigDict({"steps": 3, "seed": -1})
    c.train_classifier = ml_collections.ConfigDict({"arch": "a", "seed": -1, "model_kwargs": {}})
    c.score = ml_collections.ConfigDict({"scale": 1.0})
    c.grid = grid.default_config()
    c.grid.regimes = ("local", "global")
    c.grid.archs = ("a", "b")
    c.grid.arch_kwargs = {}
    c.grid.seeds = (0, 1)
    return c


def input_key(inputs, config) -> dict[str, str]:
    return {"data": hashlib.sha256((inputs["data"] / "normal.npy").read_bytes()).hexdigest()[:16]}


def _log(ctx) -> None:
    path = os.environ.get("IBO_JAX_TOY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{ctx.name} {ctx.dir.resolve().name} {os.getpid()}\n")


def _save(path, array) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def run(ctx) -> dict:
    time.sleep(float(os.environ.get("IBO_JAX_TOY_SLEEP", "0")))
    c = ctx.cfg
    stage, _, flag = os.environ.get("IBO_JAX_TOY_FAIL", "").partition(":")
    fail = stage == ctx.name and not os.path.exists(flag)
    if ctx.name == "data":
        rng = np.random.default_rng(int(c.n))
        _save(ctx.dir / "normal.npy", rng.normal(size=(int(c.n), 4)))
        bump = 1.0 if c.cue == "global" else 0.0
        _save(ctx.dir / "tumor.npy", rng.normal(size=(int(c.n), 4)) + bump)
    elif ctx.name == "train_ddpm":
        normal = np.load(ctx.input_dir("data") / "normal.npy")
        _save(ctx.dir / "model.npy", normal.mean(0) * int(c.steps) + int(c.seed))
    elif ctx.name == "train_classifier":
        partial = ctx.dir / "partial.npy"
        if fail:
            _save(partial, np.zeros(1))
            open(flag, "w").close()
            raise RuntimeError("toy: killed mid-stage")
        d = ctx.input_dir("data")
        w = np.load(d / "tumor.npy").mean(0) - np.load(d / "normal.npy").mean(0)
        _save(ctx.dir / "weights.npy", w * (1 + int(c.seed)) + len(str(c.arch)) + ord(str(c.arch)[0]))
    elif ctx.name == "score":
        w = np.load(ctx.input_dir("train_classifier") / "weights.npy")
        m = np.load(ctx.input_dir("train_ddpm") / "model.npy")
        (ctx.dir / "result.json").write_text(json.dumps({"score": float(np.dot(w, m) * float(c.scale))}))
    _log(ctx)
    return {"ok": True}
