"""The error hierarchy and the exit codes the CLI maps it to.

Every error the user can cause derives from :class:`VerifilyTrainError` and carries
the process exit code of ``cli-design.md``:

====  ==========================================================
code  meaning
====  ==========================================================
0     success
1     configuration error (bad config, unknown plugin, model not found), or a push to the
      Hugging Face Hub that failed
2     data error (dataset missing, bad row, hash mismatch, leakage)
3     training error (NaN/inf loss, out of memory, device error)
4     evaluation error
5     reproduction check failed (MISMATCH, NOT REPRODUCIBLE)
6     reproduction check: PARTIAL MATCH (only the environment differs)
10    managed mode not available (v1 stub)
====  ==========================================================
"""

from __future__ import annotations

import errno
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class VerifilyTrainError(Exception):
    """Base class of every error Verifily Train reports to a user.

    The message is one line that names the file, field or row at fault and what to do.
    """

    exit_code: int = 1


class ConfigError(VerifilyTrainError):
    """The configuration is invalid (exit code 1)."""

    exit_code = 1


class RunLocked(ConfigError):
    """Another process is training, resuming or evaluating the run asked for (exit code 1: the
    request is refused before anything is touched, as a bad configuration is)."""


class DataError(VerifilyTrainError):
    """The dataset is missing, malformed, leaking or fails its hash check (exit code 2)."""

    exit_code = 2


class TrainingError(VerifilyTrainError):
    """Training failed: NaN/inf loss, out of memory, device error (exit code 3)."""

    exit_code = 3


class EvalError(VerifilyTrainError):
    """Evaluation failed (exit code 4)."""

    exit_code = 4


class ReproduceError(VerifilyTrainError):
    """A run could not be verified or reproduced (exit code 5)."""

    exit_code = 5


class PushError(VerifilyTrainError):
    """Pushing a run to the Hugging Face Hub failed: no token, offline mode, the network or an
    HTTP error (exit code 1). The message never holds the token.

    :ivar run: the run trained by this process when training completed and only its push
        (``output.push_to_hub``) failed; ``None`` otherwise.
    """

    exit_code = 1

    def __init__(self, message: str, run: object = None) -> None:
        super().__init__(message)
        self.run = run


class ManagedModeUnavailable(VerifilyTrainError):
    """Managed mode is a v1 stub (exit code 10)."""

    exit_code = 10


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "configuration error, or a failed push to the Hub",
    2: "data error",
    3: "training error",
    4: "evaluation error",
    5: "reproduction check failed",
    6: "partial match (only the environment differs)",
    10: "managed mode not available",
}


# -- file system errors ------------------------------------------------------------------------

_PROBLEMS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.EIO: "input/output error",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files in the system",
    errno.ENAMETOOLONG: "file name too long",
}
_FULL = {errno.ENOSPC, errno.EDQUOT}
_LOCKED = {errno.EACCES, errno.EPERM}
# How libraries that do their own I/O word a full disk (safetensors, tokenizers) or any failed
# write (torch.save says neither why nor where).
_FULL_TEXT = re.compile(r"no space left on device|os error 28\b|StorageFull", re.IGNORECASE)
_QUOTA_TEXT = re.compile(r"disk quota exceeded|os error 122\b", re.IGNORECASE)
_WRITE_TEXT = re.compile(r"PytorchStreamWriter|inline_container|iostream error|file write failed")
LOW_SPACE = 64 * 1024 * 1024
"""Free bytes under which a write failure that gives no reason is reported as a full disk."""


def os_error_of(exc: BaseException, path: str | Path | None = None) -> OSError | None:
    """The file system error behind ``exc``, or ``None`` when it is not one.

    That is ``exc`` itself or an ``OSError`` it was raised from; for a library that reports a
    full disk in its message only (safetensors, tokenizers), an ``OSError(ENOSPC)``; for a write
    failure without a reason (``torch.save``), ``ENOSPC`` when the file system of ``path`` has
    less than :data:`LOW_SPACE` free, else ``EIO``. The errors made here name ``path``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and not isinstance(current, BrokenPipeError):
            return current
        seen.add(id(current))
        current = current.__cause__
    text = f"{exc} {exc.__context__ or ''}"
    code = None
    if _FULL_TEXT.search(text):
        code = errno.ENOSPC
    elif _QUOTA_TEXT.search(text):
        code = errno.EDQUOT
    elif _WRITE_TEXT.search(text):
        code = errno.ENOSPC if path is not None and _free_bytes(path) < LOW_SPACE else errno.EIO
    return None if code is None else OSError(code, _PROBLEMS[code], *([str(path)] if path else []))


def is_full_disk(exc: BaseException, path: str | Path | None = None) -> bool:
    """Whether ``exc`` (see :func:`os_error_of`) is a full disk or an exhausted quota."""
    found = os_error_of(exc, path)
    return found is not None and found.errno in _FULL


def _free_bytes(path: str | Path) -> int:
    import shutil

    for candidate in (Path(path), *Path(path).parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return LOW_SPACE


def describe_os_error(exc: OSError, elsewhere: str = "", path: str | Path | None = None) -> str:
    """One line for a file system error: the path (``exc.filename``, else ``path``), the problem
    and what to do, e.g. ``runs/x/run_meta.json: no space left on device; free space or set
    output.dir elsewhere``.

    :param elsewhere: how to write somewhere else (``"set output.dir elsewhere"``), offered with
        freeing space for a full disk and with checking permissions for a permission error.
    """
    # a copy that fills the disk names its source first (shutil.copyfile); the full disk is the target's
    where = (exc.filename2 if exc.errno in _FULL and exc.filename2 else exc.filename) or path
    problem = _PROBLEMS.get(exc.errno) or (exc.strerror or str(exc) or type(exc).__name__).lower()
    if exc.errno in _FULL:
        advice = "free space" + (f" or {elsewhere}" if elsewhere else "")
    elif exc.errno == errno.EROFS:
        advice = elsewhere or "write to another file system"
    elif exc.errno in _LOCKED:
        advice = "check its permissions" + (f" or {elsewhere}" if elsewhere else "")
    elif exc.errno == errno.ENOENT:
        advice = "check that the path exists"
    else:
        advice = "check the disk and the path"
    return f"{where}: {problem}; {advice}" if where else f"{problem}; {advice}"


@contextmanager
def os_errors_as(error: type[VerifilyTrainError], elsewhere: str = "") -> Iterator[None]:
    """Turn a file system error raised in the block into ``error`` with :func:`describe_os_error`'s
    line (a closed stdout, ``BrokenPipeError``, passes through for the CLI to handle)."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise error(describe_os_error(exc, elsewhere)) from exc
