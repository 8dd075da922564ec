"""Writing files whole or not at all; reading and mending files appended to a line at a time; hashing files;
one writer at a time in a folder."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK = ".lock"  # the file a folder's writer holds locked


def write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """`write(temp_path)` next to `path`, flushed to the disk, then renamed over `path`: readers never see half a
    file, nor does a power cut leave one, and a failed write (a folder in the way, a full disk) leaves neither the
    temporary file nor a changed `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    try:
        write(tmp)
        with open(tmp, "rb") as f:  # on the disk before the rename makes it the file
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # readable like any output (mkstemp makes it owner-only)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """`text` into `path`, whole or not at all (`write_atomically`)."""
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))


def finite_json(value):
    """`value` with every NaN or infinity made None: standard JSON (null), which json.dump's bare NaN is not."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_json(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def write_json_atomically(path: str | os.PathLike, value) -> None:
    """`value` as standard JSON (non-finite numbers as null) into `path`, whole or not at all."""
    write_text_atomically(path, json.dumps(finite_json(value), indent=2, allow_nan=False) + "\n")


def check_record_file(path: str | os.PathLike, flag: str = "--out") -> None:
    """A file a command writes its record to at the end: refused before the work if it could not be written."""
    if not Path(path).resolve().parent.is_dir():
        raise ValueError(f"{flag} {path}: its folder does not exist")
    if Path(path).is_dir():
        raise ValueError(f"{flag} {path} is a folder; name a file")


def check_new_folder(path: str | os.PathLike) -> Path:
    """A folder to write a model or a dataset into that holds nothing yet: refused if it is a file or holds anything,
    so that nothing kept there is written over."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; name a new or empty folder")
    if path.is_dir() and any(path.iterdir()):
        raise ValueError(f"{path} is not empty; name a new or empty folder (nothing in it was changed)")
    return path


@contextmanager
def folder_lock(root: str | os.PathLike, busy: str) -> Iterator[None]:
    """Hold `root`'s write lock while the block runs: a second writer is refused at once with `busy` instead of
    writing under the first. The system drops the lock when the process ends, however it ends. Where the system has
    no `flock` (Windows), nor is a folder that does not exist (it has nothing to lose)."""
    root = Path(root)
    if not root.is_dir():
        yield
        return
    with open(root / LOCK, "w") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(busy) from None
        yield


def complete_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a file appended to a line at a time (without their newlines), less a last one a kill cut short
    before its newline; [] when there is no file."""
    path = Path(path)
    return path.read_text().split("\n")[:-1] if path.exists() else []


def truncate_partial_line(path: str | os.PathLike) -> None:
    """Drop a last line a kill cut short, so that the next append starts a line of its own."""
    data = Path(path).read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256, remembered while its size and modification time stay: a replayed recipe's input is checked
    and then recorded, the app matches every upload against the same examples, and an evaluation names its weights."""
    info = os.stat(path)
    return _sha256(str(Path(path).resolve()), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()
