"""Content hashes of input files and folders, for stage fingerprints (a file fixed in place reruns
its stage and everything downstream; a path string alone would not).

    content_hash("patches.npz")          # hex digest of the bytes
    content_hash("slides/")              # of every file below it: relative names and contents

Hashes are cached in a small JSON file keyed by (absolute path, size, mtime_ns, inode), so an
unchanged file is hashed once. Files over `SAMPLE_ABOVE` bytes (1 GB) are hashed from samples: the
first and last 16 MiB and 64 evenly spaced 1 MiB blocks, plus the size, so 400 slides of a few GB
each cost seconds, not an hour. Such a hash misses an edit that changes no sampled byte and keeps
size and mtime; the cache key (which includes the mtime) still catches ordinary rewrites.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ibo_jax import io as ibo_io

SAMPLE_ABOVE = 1 << 30
_EDGE, _BLOCK, _N_BLOCKS = 16 << 20, 1 << 20, 64
_READ = 8 << 20


def default_cache_file() -> Path:
    return Path(os.environ.get("IBO_JAX_HASH_CACHE", "~/.cache/ibo_jax/file_hashes.json")).expanduser()


def _hash_file(path: Path, size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"size={size};".encode())
    with open(path, "rb") as f:
        if size <= SAMPLE_ABOVE:
            while chunk := f.read(_READ):
                h.update(chunk)
            return "full:" + h.hexdigest()
        step = (size - 2 * _EDGE - _BLOCK) // (_N_BLOCKS - 1)
        spans = [(0, _EDGE)] + [(_EDGE + i * step, _BLOCK) for i in range(_N_BLOCKS)] + [(size - _EDGE, _EDGE)]
        for start, n in spans:
            f.seek(start)
            h.update(f.read(n))
    return "sampled:" + h.hexdigest()


class HashCache:
    """(path, size, mtime_ns, inode) -> content hash, persisted in one JSON file."""

    def __init__(self, cache_file: str | os.PathLike | None = None):
        self.file = Path(cache_file) if cache_file else default_cache_file()
        self.entries: dict[str, str] = {}
        self.dirty = False
        try:
            self.entries = json.loads(self.file.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.computed = 0  # files hashed (not found in the cache) by this object

    def file_hash(self, path: Path) -> str:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
        if key not in self.entries:
            self.entries[key] = _hash_file(path, st.st_size)
            self.computed += 1
            self.dirty = True
        return self.entries[key]

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            ibo_io.write_text(self.file, json.dumps(self.entries, sort_keys=True))
        except OSError:
            pass  # a read-only home: hashing still works, only slower next time
        self.dirty = False


def content_hash(path: str | os.PathLike, cache: HashCache | None = None) -> str:
    """Hash of a file's bytes, or of a folder's files (relative names and contents, recursively).
    A missing path hashes as 'missing' (the stage that reads it reports the error)."""
    own = cache is None
    cache = HashCache() if own else cache
    p = Path(path).expanduser()
    if p.is_file():
        out = cache.file_hash(p)
    elif p.is_dir():
        h = hashlib.blake2b(digest_size=16)
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(p).as_posix()}={cache.file_hash(f)};".encode())
        out = "dir:" + h.hexdigest()
    else:
        out = "missing"
    if own:
        cache.save()
    return out
