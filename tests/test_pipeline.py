"""Pipeline: skip when finished, resume a killed stage, recompute what a config change touches."""

import json
import subprocess
import sys
import types
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from ibo_jax import io as ibo_io
from ibo_jax import pipeline

CALLS: list[str] = []
FAIL_AT = {"chunk": -1}  # a stand-in for `kill -9` in the middle of a stage


def _make_module(name, run_fn):
    mod = types.ModuleType(name)
    mod.default_config = lambda: ml_collections.ConfigDict({"n": 3})
    mod.run = run_fn
    sys.modules[name] = mod
    return name


def _first(ctx):
    CALLS.append("first")
    for i in range(ctx.cfg.n):
        if ctx.chunk_done(f"{i}.npz"):
            CALLS.append(f"first-skip-{i}")
            continue
        if FAIL_AT["chunk"] == i:
            raise KeyboardInterrupt("killed")
        ibo_io.write_npz(ctx.chunk_path(f"{i}.npz"), {"x": np.full(4, i + ctx.config.seed)})
    return {"chunks": ctx.cfg.n}


def _second(ctx):
    CALLS.append("second")
    total = sum(ibo_io.read_npz(p)["x"].sum() for p in sorted((ctx.input_dir("first") / "chunks").glob("*.npz")))
    ibo_io.write_json(ctx.dir / "total.json", {"total": int(total)})
    return {"total": int(total)}


REGISTRY = {
    "first": pipeline.Stage("first", _make_module("_fake_first", _first)),
    "second": pipeline.Stage("second", _make_module("_fake_second", _second), deps=("first",)),
}


def _config(**first):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.image_size = 8
    c.num_classes = 2
    c.class_names = ("normal", "tumor")
    c.first = ml_collections.ConfigDict({"n": 3})
    c.first.update(first)
    c.second = ml_collections.ConfigDict({"unused": 1})
    return c


def test_skip_resume_and_recompute(tmp_path):
    CALLS.clear()
    summary = pipeline.run(_config(), tmp_path, registry=REGISTRY)
    assert [r["status"] for r in summary["stages"]] == ["ran", "ran"]
    assert json.loads((tmp_path / "second" / "total.json").read_text())["total"] == 4 * (0 + 1 + 2)
    assert (tmp_path / "run_summary.json").exists()

    CALLS.clear()
    summary = pipeline.run(_config(), tmp_path, registry=REGISTRY)
    assert [r["status"] for r in summary["stages"]] == ["skipped", "skipped"]
    assert CALLS == []

    # Change only the downstream section: upstream skipped, downstream reruns.
    c = _config()
    c.second.unused = 2
    CALLS.clear()
    summary = pipeline.run(c, tmp_path, registry=REGISTRY)
    assert [r["status"] for r in summary["stages"]] == ["skipped", "ran"]

    # Change the upstream section: both rerun, upstream from a clean folder.
    CALLS.clear()
    summary = pipeline.run(_config(n=2), tmp_path, registry=REGISTRY)
    assert [r["status"] for r in summary["stages"]] == ["ran", "ran"]
    assert sorted(p.name for p in (tmp_path / "first" / "chunks").iterdir()) == ["0.npz", "1.npz"]
    assert "first-skip-0" not in CALLS


def test_killed_stage_resumes_from_finished_chunks(tmp_path):
    CALLS.clear()
    FAIL_AT["chunk"] = 2
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(_config(n=4), tmp_path, registry=REGISTRY)
    finally:
        FAIL_AT["chunk"] = -1
    assert not (tmp_path / "first" / "manifest.json").exists()
    assert sorted(p.name for p in (tmp_path / "first" / "chunks").iterdir()) == ["0.npz", "1.npz"]
    assert not list((tmp_path / "first").rglob("*.tmp"))

    CALLS.clear()
    summary = pipeline.run(_config(n=4), tmp_path, registry=REGISTRY)
    assert summary["stages"][0]["status"] == "resumed"
    assert "first-skip-0" in CALLS and "first-skip-1" in CALLS and "first-skip-2" not in CALLS
    assert json.loads((tmp_path / "second" / "total.json").read_text())["total"] == 4 * (0 + 1 + 2 + 3)


def test_stage_selection_needs_finished_inputs(tmp_path):
    with pytest.raises(pipeline.PipelineError, match="needs stage 'first'"):
        pipeline.run(_config(), tmp_path, stages=["second"], registry=REGISTRY)
    with pytest.raises(pipeline.PipelineError, match="unknown stage"):
        pipeline.run(_config(), tmp_path, stages=["nope"], registry=REGISTRY)
    pipeline.run(_config(), tmp_path, stages=["first"], registry=REGISTRY)
    summary = pipeline.run(_config(), tmp_path, stages=["second"], registry=REGISTRY)
    assert [r["stage"] for r in summary["stages"]] == ["second"]


def test_optional_dep_only_when_configured(tmp_path):
    """'second' with 'first' as an optional input: without a 'first' section it runs alone;
    with one, 'first' runs before it and a change there reruns 'second'."""
    def maybe_second(ctx):
        if "first" in ctx.inputs:
            return _second(ctx)
        CALLS.append("second")
        return {}

    registry = {"first": REGISTRY["first"],
                "second": pipeline.Stage("second", _make_module("_fake_maybe_second", maybe_second),
                                         optional_deps=("first",))}
    alone = _config()
    del alone["first"]
    CALLS.clear()
    summary = pipeline.run(alone, tmp_path / "a", registry=registry)
    assert [r["stage"] for r in summary["stages"]] == ["second"] and CALLS == ["second"]
    summary = pipeline.run(_config(), tmp_path / "b", registry=registry)
    assert [r["status"] for r in summary["stages"]] == ["ran", "ran"]
    assert json.loads((tmp_path / "b" / "second" / "total.json").read_text())["total"] == 4 * (0 + 1 + 2)
    summary = pipeline.run(_config(n=2), tmp_path / "b", registry=registry)
    assert [r["status"] for r in summary["stages"]] == ["ran", "ran"]


def test_tensorboard_scalars_and_images(tmp_path, stage_context):
    ctx = stage_context("s", tmp_path)
    ctx.scalar("loss", 0.5, 1)
    ctx.image("samples", np.zeros((6, 8, 3), np.uint8), 1)
    ctx.close()
    (event,) = (tmp_path / "tensorboard" / "s").glob("events.out.tfevents.*")
    data = event.read_bytes()
    assert b"loss" in data and b"samples" in data


def test_bad_workdir(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(pipeline.PipelineError, match="is a file"):
        pipeline.run(_config(), f / "sub", registry=REGISTRY)
    # A folder nobody can create in (works as root too, unlike chmod).
    with pytest.raises(pipeline.PipelineError, match="cannot create|not writable"):
        pipeline.run(_config(), "/proc/ibo_jax_workdir", registry=REGISTRY)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with ibo_io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    ibo_io.write_json(target, {"a": np.int64(1)})
    assert json.loads(target.read_text()) == {"a": 1}


def test_truncated_npz_names_the_file(tmp_path):
    p = tmp_path / "x.npz"
    ibo_io.write_npz(p, {"a": np.arange(1000)})
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ValueError, match="x.npz"):
        ibo_io.read_npz(p)


def test_launcher_rejects_unknown_config_key(tmp_path):
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "ibo_jax.launch", "--config", str(root / "configs" / "demo.py"),
         "--workdir", str(tmp_path / "w"), "--config.no_such_field=3"],
        capture_output=True, text=True, cwd=root,
    )
    assert proc.returncode != 0
    assert "no_such_field" in proc.stderr
    assert not (tmp_path / "w").exists()


def _reads_file(ctx):
    CALLS.append("reader")
    return {"text": Path(ctx.cfg.path).read_text()}


def test_file_inputs_enter_the_fingerprint_by_content(tmp_path, monkeypatch):
    """A file fixed in place after a finished run reruns its stage and everything downstream."""
    monkeypatch.setenv("IBO_JAX_HASH_CACHE", str(tmp_path / "hashes.json"))
    registry = {
        "first": pipeline.Stage("first", _make_module("_fake_reader", _reads_file), file_fields=("path",)),
        "second": REGISTRY["second"],
    }
    src = tmp_path / "labels.txt"
    src.write_text("old")
    config = _config()
    config.first = ml_collections.ConfigDict({"path": str(src), "n": 0})
    runs = lambda: [r["status"] for r in pipeline.run(config, tmp_path / "w", registry=registry)["stages"]]
    assert runs() == ["ran", "ran"]
    assert runs() == ["skipped", "skipped"]
    src.write_text("new")  # same path, same size, new bytes
    assert runs() == ["ran", "ran"]
    manifest = ibo_io.read_json(tmp_path / "w" / "first" / "manifest.json")
    assert manifest["summary"]["text"] == "new" and manifest["files"]["path"].startswith("full:")


def test_file_hash_cache_and_sampled_hash(tmp_path, monkeypatch):
    from ibo_jax import filehash

    cache = filehash.HashCache(tmp_path / "hashes.json")
    d = tmp_path / "slides"
    d.mkdir()
    (d / "a.bin").write_bytes(b"a" * 1000)
    first = filehash.content_hash(d, cache)
    assert cache.computed == 1 and filehash.content_hash(d, cache) == first and cache.computed == 1  # cached
    cache.save()
    assert filehash.HashCache(tmp_path / "hashes.json").entries == cache.entries
    (d / "b.bin").write_bytes(b"b")
    assert filehash.content_hash(d, cache) != first  # a new file in the folder
    assert filehash.content_hash(tmp_path / "nope") == "missing"
    # Big files are hashed from samples: head, tail and evenly spaced blocks.
    monkeypatch.setattr(filehash, "SAMPLE_ABOVE", 1 << 16)
    monkeypatch.setattr(filehash, "_EDGE", 1024)
    monkeypatch.setattr(filehash, "_BLOCK", 256)
    big = tmp_path / "big.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes())
    big.write_bytes(bytes(data))
    h0 = filehash._hash_file(big, len(data))
    data[10] ^= 1  # inside the head sample
    big.write_bytes(bytes(data))
    assert h0.startswith("sampled:") and filehash._hash_file(big, len(data)) != h0
