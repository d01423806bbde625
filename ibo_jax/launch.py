"""Entry point: `python -m ibo_jax.launch --config configs/demo.py --workdir runs/demo`.

Flags:
  --config file.py[:arg]    an ml_collections experiment file; `--config.section.field=value`
                            overrides a field (an unknown or misspelled field is an error)
  --workdir DIR             where every stage writes (default runs/<config name>)
  --stages a,b              run only these stages (their inputs must be finished)
  --distributed             call jax.distributed.initialize() (multi-host GPU/TPU; one process per host)

The launcher turns on JAX's persistent compilation cache (`config.jax_cache_dir`), builds the
device mesh and runs the pipeline. It prints the run summary as JSON at the end.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py), optionally file.py:arg.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (default: runs/<config file stem>).")
_STAGES = flags.DEFINE_list("stages", None, "Comma-separated stages to run (default: all).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Initialize jax.distributed (multi-host).")


def setup_jax(config) -> None:
    import jax

    cache_dir = config.get("jax_cache_dir")
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(Path(cache_dir).expanduser()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config configs/demo.py")
    if _DISTRIBUTED.value:
        import jax

        jax.distributed.initialize()
    setup_jax(config)

    from ibo_jax import pipeline

    config_file = flags.FLAGS["config"].config_filename
    workdir = _WORKDIR.value or os.path.join("runs", Path(config_file.split(":")[0]).stem)
    stages = _STAGES.value or ([s for s in config.get("stages", "").split(",") if s] or None)
    logging.info("config %s -> workdir %s", config_file, workdir)
    try:
        summary = pipeline.run(config, workdir, stages=stages)
    except pipeline.PipelineError as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    import jax

    if jax.process_index() == 0:
        short = [{k: r.get(k) for k in ("stage", "status", "seconds", "bytes")} for r in summary["stages"]]
        print(json.dumps({"workdir": summary["workdir"], "seconds": round(summary["seconds"], 1),
                          "stages": short}, indent=1))


def run() -> None:
    """Console script `ibo-jax`."""
    app.run(main)


if __name__ == "__main__":
    run()
