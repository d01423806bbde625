"""The stage graph, the work directory, caching and resume.

    workdir/
      <stage>/manifest.json     written last, atomically: the stage is finished
      <stage>/.fingerprint      written first: what the files in this folder were made from
      <stage>/chunks/...        finished pieces of a long stage (atomic, one file each)
      tensorboard/<stage>/      TensorBoard event files
      run_summary.json          stages run / skipped, seconds, sizes

A stage's fingerprint hashes its own config section, the global fields, the library version and
its inputs' fingerprints, and the *contents* of the files and folders its section names
(`Stage.file_fields`: npz, slides, checkpoints, ...; see `ibo_jax.filehash`). A stage whose manifest carries the same fingerprint is skipped. A stage
whose folder carries the same fingerprint but no manifest was killed mid-way: it runs again in the
same folder and skips its finished chunks. Any other folder is cleared first, so results of
different configs are never mixed, and everything downstream of a changed stage reruns.

A stage that declares a `content_key` is keyed on the content of what it reads from an input
instead of that input's fingerprint (`train_ddpm`: the normal training patches).

With a `store` (`run(..., store=dir)`, what a benchmark grid uses), a stage's folder is
`store/<stage>/<fingerprint>/` and `workdir/<stage>` is a link to it: runs whose stage inputs are
identical share one folder, computed once. A file lock per folder (`<fingerprint>.lock`, released
when its process ends, also by a kill) lets concurrent processes wait for a stage instead of
computing it twice.

A stage is a module with `default_config() -> ConfigDict` and `run(ctx: StageContext) -> dict`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import platform
import shutil
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import logging

from ibo_jax import io as ibo_io
from ibo_jax import parallel, rng
from ibo_jax.context import PipelineError, StageContext
from ibo_jax.store import StoreLock, link_stage


def _plain(value: Any) -> Any:
    """A config section as JSON sees it (keys are sorted where it is written: sort_keys)."""
    return ibo_io.plain(value, lists=True)


GLOBAL_FIELDS = ("seed", "image_size", "num_classes", "class_names", "tumor_class")
FINGERPRINT_FILE = ".fingerprint"
MANIFEST_FILE = "manifest.json"
# 2: the stage `meta` became `trust`; one global `tumor_class`; residual fills stored as arrays.
FORMAT_VERSION = 2

# Config fields and stages that were renamed: a config (or a work directory) that still uses the
# old name gets one line naming the new one instead of a silent default.
RENAMED_FIELDS = {
    "explain.target_class": "tumor_class",
    "score.tumor_class": "tumor_class",
    "ddpm_check.tumor_class": "tumor_class",
}
RENAMED_STAGES = {"meta": "trust"}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One node of the stage graph: `module` provides default_config() and run(ctx)."""

    name: str
    module: str
    deps: tuple[str, ...] = ()
    # Inputs used when the config has their section (then they are deps like the others: in the
    # fingerprint and required finished); skipped otherwise.
    optional_deps: tuple[str, ...] = ()
    # Config fields of the stage's section that name input files or folders: they enter the
    # fingerprint by content (ibo_jax.filehash), so a file changed in place reruns the stage.
    file_fields: tuple[str, ...] = ()
    # "module:function" (inputs: {dep: folder}, config) -> {dep: digest}: what the stage actually
    # reads from those inputs, by content. The digest replaces the dep's fingerprint in this stage's
    # fingerprint, so upstream config changes that leave what it reads unchanged do not rerun it
    # (e.g. `train_ddpm` reads only the normal training patches of `data`).
    content_key: str = ""

    def load(self):
        return importlib.import_module(self.module)


# The explicit registry, in run order. A stage that is not built yet is simply not listed.
STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("data", "ibo_jax.stages.data",
              file_fields=("npz_path", "slides_dir", "annotations_dir", "pcam_dir")),
        Stage("train_classifier", "ibo_jax.stages.train_classifier", deps=("data",),
              file_fields=("init_weights",)),
        # F-Fidelity's explanation-agnostic fine-tune (random pixel removal) of the classifier: the
        # model the occlude stage's `ffidelity` strategy predicts with (not in STUDY_STAGES).
        Stage("finetune_ffidelity", "ibo_jax.stages.finetune_ffidelity", deps=("data", "train_classifier")),
        Stage("train_ddpm", "ibo_jax.stages.train_ddpm", deps=("data",), file_fields=("init_weights",),
              content_key="ibo_jax.stages.train_ddpm:input_key"),
        # The DDPM's samples against held-out normal patches (needs the classifier's features).
        Stage("ddpm_check", "ibo_jax.stages.ddpm_check", deps=("data", "train_classifier", "train_ddpm")),
        Stage("explain", "ibo_jax.stages.explain", deps=("data", "train_classifier"), file_fields=("heatmaps_npz",)),
        Stage("occlude", "ibo_jax.stages.occlude", deps=("explain", "train_ddpm"),
              optional_deps=("finetune_ffidelity",)),
        Stage("score", "ibo_jax.stages.score", deps=("train_classifier", "explain", "occlude"),
              file_fields=("lpips_alexnet_weights", "lpips_heads")),
        # Known-answer checks of the verdict: counterfactual reference, graded controls, model
        # randomization, SRG, the run's power.
        Stage("trust", "ibo_jax.stages.trust", deps=("data", "train_classifier", "explain", "score")),
        # ROAR / KAR (Hooker et al.): retrain from scratch without (with only) each method's top
        # pixels, with the mask-only leakage control; the known answer from trust (not in STUDY_STAGES:
        # configs/benchmark.py:roar runs it).
        Stage("roar", "ibo_jax.stages.roar", deps=("data", "train_classifier", "trust"),
              content_key="ibo_jax.stages.roar:input_key"),
        # A grid over RePaint settings: cost against realism and rank agreement (configs/demo.py
        # runs a small one; configs/repaint_sweep.py runs it alone).
        Stage("repaint_sweep", "ibo_jax.stages.repaint_sweep",
              deps=("data", "train_classifier", "train_ddpm", "explain"),
              file_fields=("lpips_alexnet_weights", "lpips_heads")),
        Stage("report", "ibo_jax.stages.report",
              deps=("data", "train_classifier", "explain", "occlude", "score"),
              optional_deps=("train_ddpm", "ddpm_check", "trust", "roar", "repaint_sweep")),
    )
}

# What the study runs, in order (configs/demo.py, configs/camelyon16.py).
STUDY_STAGES = ("data", "train_classifier", "train_ddpm", "ddpm_check", "explain", "occlude", "score", "trust",
                "report")


def renamed_field_message(field: str) -> str | None:
    """The one line for a config field or stage section that was renamed, or None."""
    if field in RENAMED_FIELDS:
        new = RENAMED_FIELDS[field]
        return (f"config field {field!r} was replaced by the global {new!r} (the index of the tumor logit, read "
                f"by every stage): set config.{new} / --config.{new}=N instead")
    if field in RENAMED_STAGES:
        new = RENAMED_STAGES[field]
        return (f"config section {field!r}: the stage is now called {new!r} (config.{new}, "
                f"<workdir>/{new}/summary.json); rename the section")
    return None


def check_config(config: ml_collections.ConfigDict) -> None:
    """Refuses renamed fields and stages, and a tumor class outside the classifier's classes."""
    for name in RENAMED_STAGES:
        if name in config:
            raise PipelineError(renamed_field_message(name))
    for dotted in RENAMED_FIELDS:
        section, field = dotted.split(".")
        if section in config and isinstance(config[section], ml_collections.ConfigDict) and field in config[section]:
            raise PipelineError(renamed_field_message(dotted))
    t, k = config.get("tumor_class", 1), config.get("num_classes", 2)
    if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < int(k):
        raise PipelineError(f"config field 'tumor_class': expected an integer in [0, num_classes={k}), got {t!r}")


def check_workdir_format(workdir: Path) -> None:
    """A work directory written before a stage was renamed gets one line naming the new stage."""
    for old, new in RENAMED_STAGES.items():
        if (workdir / old / MANIFEST_FILE).is_file():
            raise PipelineError(
                f"workdir {workdir}: '{old}/' is an older ibo_jax's stage folder; the stage is now {new!r} "
                f"(writes {new}/summary.json): delete {workdir / old} (or use a new workdir) and rerun")


def file_hashes(stage: Stage, config: ml_collections.ConfigDict, cache=None) -> dict[str, str]:
    """Content hash of every non-empty file field of the stage's section (`Stage.file_fields`)."""
    from ibo_jax import filehash

    section = config.get(stage.name, {})
    paths = {f: str(section.get(f)) for f in stage.file_fields if section.get(f)}
    if not paths:
        return {}
    cache = filehash.HashCache() if cache is None else cache
    out = {f: filehash.content_hash(p, cache) for f, p in sorted(paths.items())}
    cache.save()
    return out


def fingerprint(stage: Stage, config: ml_collections.ConfigDict, upstream: Mapping[str, str],
                files: Mapping[str, str] | None = None) -> str:
    """Hash of what a stage's outputs depend on: its section, the globals, its inputs' hashes and
    the contents of its file inputs (`files`: field -> content hash, see `file_hashes`)."""
    from ibo_jax import __version__

    payload = {
        "stage": stage.name,
        "format": FORMAT_VERSION,
        "version": __version__,
        "section": _plain(config.get(stage.name, {})),
        "globals": {k: _plain(config.get(k)) for k in GLOBAL_FIELDS},
        "inputs": dict(sorted(upstream.items())),
    }
    if files:  # only when there are file inputs: fingerprints of other stages stay as they were
        payload["files"] = dict(sorted(files.items()))
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("ibo_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
                 "tensorflow-datasets", "grain", "scikit-learn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def check_workdir(workdir: str | os.PathLike) -> Path:
    """Creates the work directory or explains why it cannot be used."""
    path = Path(workdir).expanduser()
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            raise PipelineError(f"workdir {path}: {parent} exists and is a file, not a directory")
        if parent.exists():
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PipelineError(f"workdir {path}: cannot create it ({e.strerror})") from e
    probe = path / f".write_test.{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PipelineError(f"workdir {path}: not writable ({e.strerror})") from e
    return path.resolve()


def read_manifest(stage_dir: Path) -> dict | None:
    path = stage_dir / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        return ibo_io.read_json(path)
    except ValueError:
        logging.warning("%s is unreadable; the stage will rerun", path)
        return None


def _prepare_dir(stage_dir: Path, fp: str) -> bool:
    """Makes `stage_dir` hold only work for fingerprint `fp`. Returns True when resuming."""
    stage_dir = stage_dir.resolve()  # a store link: prepare the folder it points to (named by `fp`)
    marker = stage_dir / FINGERPRINT_FILE
    if stage_dir.exists():
        if marker.exists() and marker.read_text().strip() == fp:
            (stage_dir / MANIFEST_FILE).unlink(missing_ok=True)
            return True
        # Different config or unknown contents: move aside then delete, never mix.
        trash = stage_dir.with_name(f".{stage_dir.name}.old.{os.getpid()}.{time.time_ns()}")
        stage_dir.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    ibo_io.write_text(marker, fp + "\n")
    return False


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


CONTENT_KEY_FILE = ".content_key.{stage}.json"


def content_keys(stage: Stage, config: ml_collections.ConfigDict, dirs: Mapping[str, Path],
                 fingerprints: Mapping[str, str]) -> dict[str, str]:
    """{dep: 'content:<digest>'} for the inputs `stage.content_key` reads, where they are finished with
    their current fingerprint (else nothing: the chained fingerprint stands, and a stage that needs
    them finished says so). Cached beside the input's manifest, per input fingerprint."""
    if not stage.content_key:
        return {}
    deps = [d for d in stage.deps if d in dirs]
    done = {}
    for d in deps:
        m = read_manifest(dirs[d])
        if m is None or m.get("fingerprint") != fingerprints.get(d):
            return {}
        done[d] = dirs[d]
    cache = dirs[deps[0]] / CONTENT_KEY_FILE.format(stage=stage.name) if deps else None
    # the key function may read the stage's own section (e.g. which curve): part of the cache key
    key_of = {"inputs": {d: fingerprints[d] for d in done}, "section": _plain(config.get(stage.name, {}))}
    if cache is not None and cache.is_file():
        try:
            cached = ibo_io.read_json(cache)
            if {k: cached.get(k) for k in key_of} == json.loads(json.dumps(key_of, default=str)):
                return {d: "content:" + v for d, v in cached["keys"].items()}
        except ValueError:
            pass
    module, _, fn = stage.content_key.partition(":")
    keys = getattr(importlib.import_module(module), fn)(done, config)
    if cache is not None and jax.process_index() == 0:
        ibo_io.write_json(cache, {**key_of, "keys": keys})
    return {d: "content:" + v for d, v in keys.items()}


def select(stages: Mapping[str, Stage], names: Sequence[str] | None) -> list[Stage]:
    if not names:
        return list(stages.values())
    unknown = [n for n in names if n not in stages]
    if unknown:
        raise PipelineError(f"--stages: unknown stage(s) {unknown}; known: {list(stages)}")
    return [s for s in stages.values() if s.name in names]


_STAGE_NOTE = "ibo_jax stage: "


def failed_stage(exc: BaseException) -> str | None:
    """The stage an exception from `run` came out of (the pipeline notes it), or None."""
    for note in getattr(exc, "__notes__", ()):
        if note.startswith(_STAGE_NOTE):
            return note[len(_STAGE_NOTE):]
    return None


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
        stages: Sequence[str] | None = None,
        registry: Mapping[str, Stage] | None = None, mesh=None,
        echo: Callable[[str], None] | None = None, store: str | os.PathLike | None = None) -> dict:
    """Runs the selected stages in registry order, skipping finished ones. Returns the run summary.

    `echo`, if given, receives one line per stage (skipped / running / done in N s), for the
    console. An exception raised by a stage carries the stage's name (`failed_stage(exc)`).
    `store`: the folder of shared stage folders (see the module docstring); one JAX process only
    (the grid runs cells in separate processes)."""
    say = echo or (lambda _line: None)
    registry = STAGES if registry is None else registry
    check_config(config)
    workdir = check_workdir(workdir)
    check_workdir_format(workdir)
    mesh = parallel.make_mesh() if mesh is None else mesh
    if stages:
        chosen = select(registry, stages)
        missing_sections = [s.name for s in chosen if s.name not in config]
        if missing_sections:
            raise PipelineError(f"--stages: the config has no section for stage(s) {missing_sections}")
    else:  # every registered stage the config has a section for
        chosen = [s for s in registry.values() if s.name in config]
    root = rng.root_key(config.seed)
    if store is not None:
        if jax.process_count() > 1:
            raise PipelineError("a shared stage store needs one JAX process per run (the grid's processes "
                                "each run their own cells); run without --distributed")
        store = Path(store).resolve()

    fingerprints: dict[str, str] = {}
    records = []
    t_run = time.time()
    for stage in registry.values():
        upstream = {}
        deps = stage.deps + tuple(d for d in stage.optional_deps if d in config)
        for dep in deps:
            if dep not in fingerprints:
                raise PipelineError(f"stage {stage.name!r} depends on {dep!r}, which is not registered before it")
            upstream[dep] = fingerprints[dep]
        if stage.name not in config:
            continue
        upstream.update(content_keys(stage, config, {d: workdir / d for d in deps}, fingerprints))
        files = file_hashes(stage, config)
        fp = fingerprint(stage, config, upstream, files)
        fingerprints[stage.name] = fp
        if stage not in chosen:
            continue
        stage_dir = workdir / stage.name
        if store is not None:
            stage_dir = link_stage(workdir, stage.name, store / stage.name / fp)
        elif stage_dir.is_symlink():  # a grid cell's folder run without the store: never touch the store
            stage_dir.unlink()
        for dep in deps:
            m = read_manifest(workdir / dep)
            if m is None or m.get("fingerprint") != fingerprints[dep]:
                raise PipelineError(
                    f"stage {stage.name!r} needs stage {dep!r} finished with the current config; "
                    f"run it first (add it to --stages)"
                )
        with StoreLock(store / stage.name / f"{fp}.lock" if store is not None else None):
            record = _run_stage(stage, config, fp, stage_dir, workdir, deps, upstream, files, root, mesh, say)
        records.append(record)
    run_summary = {"workdir": str(workdir), "seconds": time.time() - t_run, "stages": records,
                   "registered": list(registry), "versions": library_versions()}
    if jax.process_index() == 0:
        ibo_io.write_json(workdir / "run_summary.json", run_summary)
    return run_summary


def _run_stage(stage: Stage, config, fp: str, stage_dir: Path, workdir: Path, deps, upstream, files, root, mesh,
               say) -> dict:
    """One stage: skipped when its manifest carries `fp`, else (re)run in `stage_dir`. The record."""
    manifest = read_manifest(stage_dir)
    if manifest is not None and manifest.get("fingerprint") == fp:
        logging.info("stage %s: up to date (%s), skipped", stage.name, fp)
        say(f"stage {stage.name}: up to date, skipped")
        return {"stage": stage.name, "status": "skipped", "fingerprint": fp,
                "seconds": manifest.get("seconds"), "bytes": _dir_bytes(stage_dir)}
    resuming = False
    if jax.process_index() == 0:
        resuming = _prepare_dir(stage_dir, fp)
    _barrier(f"prepare-{stage.name}")
    logging.info("stage %s: %s (%s)", stage.name, "resuming" if resuming else "running", fp)
    say(f"stage {stage.name}: {'resuming' if resuming else 'running'}")
    ctx = StageContext(
        name=stage.name, dir=stage_dir, workdir=workdir, cfg=config[stage.name], config=config,
        key=rng.fold(root, stage.name), mesh=mesh,
        inputs={d: workdir / d for d in deps},
    )
    started = time.time()
    try:
        summary = stage.load().run(ctx) or {}
    except Exception as e:
        e.add_note(_STAGE_NOTE + stage.name)
        raise
    finally:
        ctx.close()
    seconds = time.time() - started
    _barrier(f"finish-{stage.name}")
    if jax.process_index() == 0:
        ibo_io.write_json(stage_dir / MANIFEST_FILE, {
            "stage": stage.name,
            "fingerprint": fp,
            "config": _plain(config[stage.name]),
            "globals": {k: _plain(config.get(k)) for k in GLOBAL_FIELDS},
            "inputs": upstream,
            "files": files,
            "versions": library_versions(),
            "host": socket.gethostname(),
            "process_count": jax.process_count(),
            "devices": [str(d) for d in jax.devices()],
            "started": started,
            "finished": time.time(),
            "seconds": seconds,
            "resumed": resuming,
            "summary": summary,
        })
    logging.info("stage %s: done in %.1f s", stage.name, seconds)
    say(f"stage {stage.name}: done in {seconds:.1f} s")
    return {"stage": stage.name, "status": "resumed" if resuming else "ran",
            "fingerprint": fp, "seconds": seconds, "bytes": _dir_bytes(stage_dir), "summary": summary}


def default_config(stages: Sequence[str] = STUDY_STAGES) -> ml_collections.ConfigDict:
    """The global fields plus the default section of each named stage (only those are run)."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.image_size = 64
    config.num_classes = 2
    config.class_names = ("normal", "tumor")
    config.tumor_class = 1  # index of the tumor logit; every stage reads it (labels: 0 normal, 1 tumor)
    config.jax_cache_dir = str(Path("~/.cache/ibo_jax/jax").expanduser())
    config.stages = ""
    for name in stages:
        config[name] = STAGES[name].load().default_config()
    return config


def config_from_file(path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of an experiment file (configs/*.py), so one config file can build on
    another: `pipeline.config_from_file(Path(__file__).with_name("camelyon16.py"))`."""
    import importlib.util

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    spec = importlib.util.spec_from_file_location(f"ibo_jax_configs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)
