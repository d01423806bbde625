"""Atomic file writes, small JSON/NPZ helpers and `plain` (configs as dicts) shared by every stage.

Every output is written to a temporary name in the same directory and renamed into place, so a
killed process never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def pyplot():
    """matplotlib.pyplot on the Agg backend (figures are files; no display is needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 100) -> None:
    """Writes a matplotlib figure as PNG atomically and closes it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); delete it to recompute") from e


def plain(value: Any, *, lists: bool = False) -> Any:
    """`value` with every ConfigDict, FrozenConfigDict or other Mapping turned into a dict,
    recursively (keys kept, in their order); anything else is left as it is. lists=True also turns
    tuples and lists into lists, recursively, as JSON reads them back (to compare a config with
    one stored in a JSON file)."""
    import ml_collections

    if isinstance(value, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
        return {k: plain(value[k], lists=lists) for k in value.keys()}
    if isinstance(value, Mapping):
        return {k: plain(v, lists=lists) for k, v in value.items()}
    if lists and isinstance(value, (list, tuple)):
        return [plain(v, lists=lists) for v in value]
    return value


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> None:
    """Writes an uncompressed .npz atomically (np.savez would append '.npz' to a temp name)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    write_bytes(path, buf.getvalue())


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found" if not path.exists() else f"{path}: not a file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, EOFError, ValueError, ...
        raise ValueError(f"{path}: unreadable or truncated .npz ({type(e).__name__}: {e})") from e


class ChunkDir:
    """A folder of finished pieces of a long computation, one atomic .npz each, so a killed run
    resumes where it stopped and several processes can share the work (`wait` for another's)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path / name

    def done(self, name: str) -> bool:
        return (self.path / name).exists()

    def save(self, name: str, arrays: Mapping[str, Any]) -> None:
        write_npz(self.file(name), arrays)

    def load(self, name: str) -> dict[str, np.ndarray]:
        return read_npz(self.path / name)

    def wait(self, name: str, timeout_s: float = 3600.0, poll_s: float = 1.0) -> None:
        """Blocks until another process has written chunk `name` (multi-host stages)."""
        import time

        start = time.time()
        while not self.done(name):
            if time.time() - start > timeout_s:
                raise TimeoutError(f"{self.path / name}: another process did not write it in {timeout_s:.0f} s")
            time.sleep(poll_s)
