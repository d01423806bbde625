"""The shared stage store of `pipeline.run(..., store=)`: stage folders under
`store/<stage>/<fingerprint>/`, each run's `workdir/<stage>` a relative link to one, and a flock
per folder so that concurrent processes compute a folder once (the kernel releases it when its
process ends, also by a kill)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


class StoreLock:
    """An exclusive flock on `path` (blocking), or nothing when `path` is None."""

    def __init__(self, path: Path | None):
        self.path, self.fd = path, None

    def __enter__(self):
        if self.path is not None:
            import fcntl

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False


def link_stage(workdir: Path, name: str, target: Path) -> Path:
    """Makes `workdir/name` a relative link to `target` (a store folder); replaces an older link or
    moves aside a real folder left by a run without the store. Returns the link."""
    link = workdir / name
    rel = os.path.relpath(target, workdir)
    if link.is_symlink():
        if os.readlink(link) == rel:
            return link
    elif link.exists():
        trash = link.with_name(f".{name}.old.{os.getpid()}.{time.time_ns()}")
        link.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    tmp = link.with_name(f".{name}.link.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(rel, tmp)
    os.replace(tmp, link)
    return link
