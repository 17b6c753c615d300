"""The error hierarchy and the exit codes the CLI maps it to.

Every error the user can cause derives from :class:`VerifilyTrainError` and carries
the process exit code of ``cli-design.md``:

====  ==========================================================
code  meaning
====  ==========================================================
0     success
1     configuration error (bad config, unknown plugin, model not found)
2     data error (dataset missing, bad row, hash mismatch, leakage)
3     training error (NaN/inf loss, out of memory, device error)
4     evaluation error
5     reproduction check failed (MISMATCH, NOT REPRODUCIBLE)
6     reproduction check: PARTIAL MATCH (only the environment differs)
10    managed mode not available (v1 stub)
====  ==========================================================
"""

from __future__ import annotations


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


class ManagedModeUnavailable(VerifilyTrainError):
    """Managed mode is a v1 stub (exit code 10)."""

    exit_code = 10


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "configuration error",
    2: "data error",
    3: "training error",
    4: "evaluation error",
    5: "reproduction check failed",
    6: "partial match (only the environment differs)",
    10: "managed mode not available",
}
