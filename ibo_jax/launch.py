"""Entry point: `python -m ibo_jax.launch --config configs/demo.py --workdir runs/demo`.

Flags:
  --config file.py[:arg]    an ml_collections experiment file; `--config.section.field=value`
                            overrides a field (an unknown or misspelled field is an error)
  --workdir DIR             where every stage writes (default runs/<config name>)
  --stages a,b              run only these stages (their inputs must be finished)
  --distributed             call jax.distributed.initialize() (multi-host GPU/TPU; one process per host)
  --verbose                 library log lines (orbax, TFDS, JAX) and full tracebacks on the console

A config with a `grid` section (configs/benchmark.py) runs a benchmark grid instead
(`ibo_jax.grid`): every cell under <workdir>/cells/, shared stages under <workdir>/store/, then
<workdir>/aggregate/. Several processes may run the same command at once: they share the cells.

The launcher turns on JAX's persistent compilation cache (`config.jax_cache_dir`), builds the
device mesh and runs the pipeline: one line per stage and the stages' progress bars on stderr, the
run summary as JSON on stdout at the end. Any error ends the run with one line,
`error: <what, naming the file, field or stage>`, and exit status 2; the full traceback goes to
`<workdir>/error.log` (and to the console with --verbose).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py), optionally file.py:arg.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (default: runs/<config file stem>).")
_STAGES = flags.DEFINE_list("stages", None, "Comma-separated stages to run (default: all).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Initialize jax.distributed (multi-host).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Library log lines and full tracebacks on the console.")

EXIT_ERROR = 2


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_ERROR)


def _config_file_arg(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def describe_flag_error(e: BaseException, argv: list[str]) -> str:
    """One line for a command-line or config-file problem (what ml_collections raises is a long
    chain of KeyError / AttributeError / OSError)."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    cfg_file = _config_file_arg(argv)
    path = (cfg_file or "").split(":", 1)[0]
    if cfg_file is not None and path and not Path(path).is_file():
        return f"config file {path!r} not found (--config expects a configs/*.py file, optionally file.py:arg)"
    if isinstance(e, SyntaxError):
        return f"config file {path!r}: syntax error at line {e.lineno}: {e.msg}"
    if "Error whilst parsing config file" in str(e):  # its message embeds the traceback: keep the end
        return f"config file {path!r} failed to load: {lines[-1].strip()}"
    if isinstance(e, (KeyError, AttributeError)):
        field = re.sub(r"^[\"']+|[\"']+$", "", text)
        overrides = [a for a in argv if a.startswith("--config.") and re.search(rf"\b{re.escape(field)}\b", a)]
        if overrides:
            from ibo_jax.pipeline import renamed_field_message

            dotted = overrides[0][len("--config."):].split("=", 1)[0]
            renamed = renamed_field_message(dotted) or renamed_field_message(dotted.split(".")[0])
            if renamed:
                return renamed
        where = f" ({overrides[0]})" if overrides else ""
        return (f"unknown config field {field!r}{where}: {path or 'the config'} has no such field "
                f"(fields are section.name, e.g. --config.explain.n_images=32)")
    if isinstance(e, OSError) and path:
        return f"config file {path!r} could not be loaded: {text}"
    return text.replace("flag --", "--")


def _parse_flags(argv: list[str]) -> list[str]:
    cfg_file = _config_file_arg(argv)
    if cfg_file is not None and not Path(cfg_file.split(":", 1)[0]).is_file():
        _fail(describe_flag_error(FileNotFoundError(cfg_file), argv))
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001  every parse problem becomes one line
        cause = e
        while isinstance(cause, flags.Error):  # a config file's own error is inside the flag's
            inner = cause.__cause__ or cause.__context__
            if not (isinstance(inner, (KeyError, AttributeError, OSError, SyntaxError))
                    or "Error whilst parsing" in str(inner)):
                break
            cause = inner
        if "--verbose" in argv:
            traceback.print_exception(e)
        _fail(describe_flag_error(cause, argv))


def quiet_libraries() -> None:
    """Hides library INFO chatter (orbax, TFDS, JAX's backend probing) and TFDS's own prints and
    progress bars; the stages' progress bars and warnings stay."""
    logging.set_verbosity(logging.ERROR)  # orbax's "waiting for previous save" warnings and the like
    import logging as std_logging

    for name in ("jax", "orbax", "absl", "tensorflow_datasets", "grain"):
        std_logging.getLogger(name).setLevel(std_logging.ERROR)


def setup_jax(config) -> None:
    import jax

    cache_dir = config.get("jax_cache_dir")
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(Path(cache_dir).expanduser()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _write_error_log(workdir: str, exc: BaseException) -> Path | None:
    path = Path(workdir) / "error.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
            f.write("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return path


def describe_error(exc: BaseException) -> str:
    """`stage 'x': Type: message` from an exception the pipeline tagged with its stage."""
    from ibo_jax import pipeline

    stage = pipeline.failed_stage(exc)
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = "" if isinstance(exc, (ValueError, pipeline.PipelineError)) else f"{type(exc).__name__}: "
    return (f"stage {stage!r}: " if stage else "") + kind + (msg or type(exc).__name__)


def main(argv) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]} (flags are --name=value)")
    verbose = _VERBOSE.value
    if not verbose:
        quiet_libraries()
    try:
        config = _CONFIG.value  # a config file that fails to load raises here, not while parsing
    except Exception as e:  # noqa: BLE001
        if verbose:
            traceback.print_exception(e)
        _fail(describe_flag_error(e.__cause__ or e, sys.argv))
    if config is None:
        _fail("--config is required, e.g. --config configs/demo.py")
    config_file = flags.FLAGS["config"].config_filename
    workdir = _WORKDIR.value or os.path.join("runs", Path(config_file.split(":")[0]).stem)
    try:
        if _DISTRIBUTED.value:
            import jax

            jax.distributed.initialize()
        setup_jax(config)
        from ibo_jax import pipeline

        stages = _STAGES.value or ([s for s in config.get("stages", "").split(",") if s] or None)
        logging.info("config %s -> workdir %s", config_file, workdir)
        import jax

        echo = (lambda line: print(line, file=sys.stderr, flush=True)) if jax.process_index() == 0 else None
        if "grid" in config:  # a benchmark grid (configs/benchmark.py): cells, then the aggregate
            if stages:
                raise pipeline.PipelineError("--stages: a grid config runs whole cells; drop --stages")
            from ibo_jax import grid

            result = grid.run(config, workdir, echo=echo)
            print(json.dumps({"workdir": str(Path(workdir).resolve()), "seconds": round(result["seconds"], 1),
                              "cells": len(result["cells"]),
                              "goal": (result["aggregate"] or {}).get("goal")}, indent=1))
            return
        summary = pipeline.run(config, workdir, stages=stages, echo=echo)
    except KeyboardInterrupt:
        _fail("interrupted; rerun the same command to resume")
    except Exception as e:  # noqa: BLE001  one line on the console, the traceback in the log
        log = _write_error_log(workdir, e)
        if verbose:
            traceback.print_exception(e)
        hint = f" (traceback in {log}; --verbose prints it)" if log and not verbose else ""
        _fail(describe_error(e) + hint)
    import jax

    if jax.process_index() == 0:
        short = [{k: r.get(k) for k in ("stage", "status", "seconds", "bytes")} for r in summary["stages"]]
        print(json.dumps({"workdir": summary["workdir"], "seconds": round(summary["seconds"], 1),
                          "stages": short}, indent=1))


def run() -> None:
    """Console script `ibo-jax`."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
