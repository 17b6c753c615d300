"""One process at a time writes a run directory (see ``docs/run-directory.md``).

The lock is an OS lock (``flock``) on a file descriptor of the run directory itself, not a file
in it: nothing is added to the run or its hashes, the lock follows the directory when it is
renamed (sealed or failed), and the kernel drops it when the process exits, however it dies,
so a killed run can be resumed at once. Within one process the lock is re-entrant (the
``--resume`` command holds it while the run writer takes it again). Where ``flock`` is missing
(Windows) or refused by the filesystem (some network filesystems), runs are not locked.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from verifily_core.errors import ConfigError, RunLocked

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("verifily.runs")

_held: dict[tuple[int, int], list[int]] = {}  # (st_dev, st_ino) -> [fd, holders] in this process
_guard = threading.Lock()


class RunLock:
    """A held lock on one run directory; :meth:`release` (or leaving the ``with`` block) lets it go."""

    def __init__(self, key: tuple[int, int] | None) -> None:
        self._key = key

    def release(self) -> None:
        """Let the lock go (the last holder in this process unlocks it); calling again does nothing."""
        key, self._key = self._key, None
        if key is None:
            return
        with _guard:
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                os.close(entry[0])  # closing the descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_run(path: str | Path) -> RunLock:
    """Lock the run directory ``path`` for this process without waiting.

    :raises RunLocked: another process holds it (its pid is named where the OS tells it).
    :raises ConfigError: ``path`` is not a directory, or it was renamed (sealed or failed by
        the other process) while this one was taking the lock.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such run directory") from None
    except NotADirectoryError:
        raise ConfigError(f"{path}: not a run directory") from None
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    with _guard:
        entry = _held.get(key)
        if entry is not None:  # this process holds it already
            os.close(fd)
            entry[1] += 1
            return RunLock(key)
        if fcntl is None:
            os.close(fd)
            return RunLock(None)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _holder_pid(st)
            who = f"another process (pid {pid})" if pid else "another process"
            raise RunLocked(f"run {path} is in use: {who} is writing it (training, resuming or evaluating); "
                            "wait for it to end (or stop it) and try again") from None
        except OSError as exc:
            os.close(fd)
            log.warning("cannot lock %s (%s); make sure no other process trains this run", path, exc.strerror)
            return RunLock(None)
        try:
            now = os.stat(path)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != key:
            os.close(fd)
            raise ConfigError(f"{path}: another process finished this run meanwhile; "
                              f"see `verifily runs --runs-dir {path.parent}`")
        _held[key] = [fd, 1]
    return RunLock(key)


def _holder_pid(st: os.stat_result) -> int | None:
    """The pid holding an ``flock`` on the file ``st`` describes, from ``/proc/locks`` (Linux only)."""
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 12345 fe:00:2163642 0 EOF" ("->" marks a waiter)
                if "->" not in fields and len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode:
                    return int(fields[4]) if fields[4].isdigit() and fields[4] != "0" else None
    except OSError:
        pass
    return None
