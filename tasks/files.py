"""Files written whole or not at all: checkpoints, cached corpora, tokenizers; and where caches live.

``cache_dir(name)``: ``$TZOO_CACHE/<name>``, else ``~/.cache/tzoo/<name>`` (the data modules'
default folders, Piper's voices).

``atomic_write(path)`` hands out a file opened under a temporary name beside ``path`` (same
folder, so same file system) and renames it over ``path`` only once the block finished without an
exception: a reader, or a run resumed after a crash, sees the old file or the new one, never half
of one. An exception in the block removes the temporary file.

A process killed mid-write (SIGKILL, power loss) cannot clean up after itself, so its temporary
file stays. The names say who wrote them (``.<name>.<where>.<pid>.<8 hex>.tmp``; ``<where>`` is a
short hash of the host name and the process-id namespace, so two containers sharing a host name
and a folder do not mistake each other's process ids), and every ``atomic_write`` first removes
the ones in its folder whose writer ran here and no longer runs (``remove_stale_temps``, best
effort: what it cannot check or delete it leaves). Files of live writers, of other hosts or
containers sharing the folder, and anything else in the folder are left alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "cache_dir", "remove_stale_temps", "temp_path"]


def _where() -> str:
    """Which process ids a pid in a temporary file's name belongs to: this host, this namespace."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux, or no /proc
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}\0{namespace}".encode()).hexdigest()[:10]


_WHERE = _where()
_STALE = re.compile(rf"\..+\.{_WHERE}\.(\d{{1,10}})\.[0-9a-f]{{8}}\.tmp")


def cache_dir(name: str) -> Path:
    """tzoo's cache folder ``name``: under ``$TZOO_CACHE`` when set, else under ``~/.cache/tzoo``."""
    return Path(os.environ.get("TZOO_CACHE") or Path.home() / ".cache" / "tzoo").expanduser() / name


def temp_path(path: str | os.PathLike[str]) -> Path:
    """A fresh name beside ``path`` that says where and by which process it is written (the name
    part cut to 100 characters, so the temporary name stays within file systems' 255 bytes)."""
    path = Path(path)
    return path.with_name(f".{path.name[:100]}.{_WHERE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # someone else's process (PermissionError), or not a pid
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that ``atomic_write`` calls here (this host, this process-id
    namespace) left in ``folder`` when their process was killed; returns the deleted paths. Best
    effort: an entry it cannot check or delete is left, and never fails the caller."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = _STALE.fullmatch(entry.name)
        try:
            if match is None or not entry.is_file(follow_symlinks=False) or _running(int(match.group(1))):
                continue
            os.unlink(entry.path)
        except OSError:  # cleaned by another process first, or not ours to delete
            continue
        removed.append(Path(entry.path))
    return removed


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", *, fsync: bool = False, encoding: str | None = None) -> Iterator[IO[Any]]:
    """``with atomic_write(path) as f: ...`` writes ``f`` under a temporary name and renames it to
    ``path`` when the block ends without an exception. ``mode`` is ``"wb"`` or ``"w"``;
    ``fsync=True`` flushes the data to disk before the rename (and the rename after it), so the
    new file also survives a power loss."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r} is not one of ('w', 'wb')")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    tmp = temp_path(path)
    try:
        with open(tmp, mode.replace("w", "x"), encoding=encoding) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    try:  # make the rename itself durable
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems cannot fsync a folder; the rename is still atomic
        pass
