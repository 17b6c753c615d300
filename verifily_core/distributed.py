"""Data-parallel training over several processes (``torch.distributed``; see ``docs/training.md``).

A distributed run is one job trained by ``WORLD_SIZE`` worker processes, started by
``verifily train --nproc N`` (which runs torch's elastic launcher, :func:`launch`), by ``torchrun``
or by ``accelerate launch``; each worker reads its place from the ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` environment variables (:func:`world`). The Trainer does the data-parallel part
(DDP); this module adds what makes the job one run: the process group (gloo on CPU, nccl on
CUDA), one run id for every rank (:func:`agree_run_id`), the same dataset on every rank
(:func:`check_same_data`), and the launcher parent that marks the run failed when a worker dies.
torch is imported only when a distributed run starts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import attrs

from verifily_core.errors import DataError, TrainingError

ENV_RUN_ID = "VERIFILY_RUN_ID"
"""Set by the ``--nproc`` launcher for its workers: the id of the run rank 0 creates."""
TEST_BREAK_DATA_HASH_RANK = "VERIFILY_TEST_BREAK_DATA_HASH_RANK"
"""Test hook only: the rank named here reports a wrong dataset hash (a rank that read other data)."""
TEST_EXIT_AT_STEP = "VERIFILY_TEST_EXIT_AT_STEP"
"""Test hook only: ``RANK:STEP`` makes that rank end with ``os._exit(17)`` after that optimizer step
(a worker that dies mid-run); read by the local backend."""
PEER_LOST = "stopped: another process of this distributed run ended"
"""The error a rank records when the launcher stops it or a collective loses a peer."""

log = logging.getLogger("verifily.distributed")


@attrs.frozen
class World:
    """This process's place in a distributed job (a single process is rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        """More than one process trains this job."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run directory and prints."""
        return self.rank == 0

    @property
    def num_nodes(self) -> int:
        """Machines in the job (``WORLD_SIZE / LOCAL_WORLD_SIZE``)."""
        return max(1, self.world_size // max(1, self.local_world_size))


def world() -> World:
    """This process's :class:`World`, from ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``LOCAL_WORLD_SIZE``."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    return World(rank=int(os.environ.get("RANK", "0")), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                 world_size=size, local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(size))))


def backend_for(device: str) -> str:
    """The collective backend of a device: ``nccl`` on CUDA, ``gloo`` elsewhere."""
    return "nccl" if device.startswith("cuda") else "gloo"


def init(device: str) -> str | None:
    """Join the job's process group (once; the Trainer then finds it) and return its backend;
    ``None`` for a single process. On CUDA each process takes the GPU of its local rank."""
    w = world()
    if not w.is_distributed:
        return None
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return str(dist.get_backend())
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(w.local_rank)
    dist.init_process_group(backend=backend)
    signal.signal(signal.SIGTERM, _stopped_by_launcher)
    if not w.is_main:  # only rank 0 prints: progress, notes and warnings
        from verifily_core.console import set_quiet

        set_quiet(True)
        logging.getLogger("verifily").setLevel(logging.ERROR)
    return backend


def _stopped_by_launcher(signum: int, frame: Any) -> None:
    raise TrainingError(f"{PEER_LOST} (the launcher stopped this rank)")


EXIT_STOPPED = 143
"""The exit code of a worker that stopped because another one ended (as if SIGTERM ended it): the
launcher never names such a worker as the cause."""


def hold_stops() -> None:
    """Ignore the launcher's stop (SIGTERM) from now on: this rank already knows a peer is gone
    and is recording it; a stop arriving mid-write would leave the record unwritten."""
    if world().is_distributed:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def peer_lost(exc: BaseException) -> bool:
    """``exc`` says another process of the job ended: the launcher's stop, or a collective whose peer
    closed its connection (gloo) or failed (nccl)."""
    if isinstance(exc, TrainingError):
        return str(exc).startswith(PEER_LOST)
    if not isinstance(exc, RuntimeError):
        return False
    import torch.distributed as dist

    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    return any(k in str(exc) for k in ("gloo", "NCCL", "Connection closed", "Connection reset"))


def agree_run_id(proposed: str) -> str:
    """The run id every rank uses: the launcher's (``VERIFILY_RUN_ID``) or ``proposed``, as rank 0 has it."""
    return _broadcast(os.environ.get(ENV_RUN_ID) or proposed)


def _broadcast(value: Any) -> Any:
    if not world().is_distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """``value`` of every rank, by rank (``[value]`` for a single process)."""
    w = world()
    if not w.is_distributed:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * w.world_size
    dist.all_gather_object(out, value)
    return out


def check_same_data(data_hash: str) -> None:
    """Every rank resolved the same dataset content; otherwise all ranks fail together (exit 2), the
    message, printed by rank 0, naming the ranks that differ from rank 0.

    :raises DataError: a rank's dataset hash differs (quiet on the other ranks).
    """
    w = world()
    if not w.is_distributed:
        return
    if os.environ.get(TEST_BREAK_DATA_HASH_RANK) == str(w.rank):
        data_hash = "sha256:" + "0" * 64
    hashes = gather(data_hash)
    differ = [r for r, h in enumerate(hashes) if h != hashes[0]]
    if not differ:
        return
    if w.is_main:
        names = ", ".join(f"rank {r} ({hashes[r]})" for r in differ)
        raise DataError(f"the dataset differs between the processes of this run: {names} against rank 0 "
                        f"({hashes[0]}); give every node the same data files (a shared or identical copy)")
    try:  # rank 0 never joins: this returns when it has reported and exited, so the launcher sees its code first
        barrier()
    except Exception:  # noqa: BLE001 - the lost peer is the expected way out
        pass
    raise QuietWorkerError(DataError.exit_code)


class QuietWorkerError(TrainingError):
    """A non-zero rank failing with an error rank 0 reports: exits with ``code`` and prints nothing."""

    quiet = True

    def __init__(self, code: int) -> None:
        super().__init__("")
        self.exit_code = code


def barrier() -> None:
    """Wait for every rank (nothing for a single process)."""
    if world().is_distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def exit_joined(code: int) -> None:
    """In a worker that joined a process group (and failed, or has nothing left to do): leave now
    with ``code``. Its peers see it gone (a collective they wait in fails), and the interpreter's
    shutdown is skipped, where the process group's threads, still running, would abort the
    process (SIGABRT) and hide ``code`` from the launcher. Does nothing in a process that joined
    no group."""
    if not world().is_distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def shard_map(run: Any, items: list[Any], device: str) -> list[Any] | None:
    """``run(items)`` (one result per item) shared by the processes of a job: rank ``r`` of ``N``
    runs ``items[r::N]``, and rank 0 gets every result in the order of ``items`` (and leaves the
    job's process group) while the other ranks get ``None`` (still in the group: a command
    leaves with :func:`exit_joined`). In a single process: ``run(items)``."""
    w = world()
    if not w.is_distributed:
        return run(items)
    init(device)
    mine = run(items[w.rank::w.world_size])
    parts = gather(list(mine))
    if not w.is_main:
        return None
    finish()
    merged: list[Any] = [None] * len(items)
    for rank, part in enumerate(parts):
        merged[rank::w.world_size] = part
    return merged


def finish() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if world().is_distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# -- the launcher parent ----------------------------------------------------------------------

@attrs.frozen
class Launch:
    """How ``verifily train --nproc`` (or ``eval --nproc``) starts its workers: the command each
    runs (``verifily``'s arguments) and the rendezvous (torchrun's flags of the same names)."""

    command: tuple[str, ...]
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_endpoint: str | None = None

    def torchrun_args(self, nproc: int, nnodes: int) -> list[str]:
        """The launcher's flags: standalone on one machine, a static or c10d rendezvous across several."""
        args = [f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
        if self.rdzv_endpoint:
            return [*args, "--rdzv-backend=c10d", f"--rdzv-endpoint={self.rdzv_endpoint}", "--rdzv-id=verifily"]
        if nnodes == 1 and not self.master_addr:
            return [*args, "--standalone"]
        args += [f"--node-rank={self.node_rank}", f"--master-addr={self.master_addr or '127.0.0.1'}"]
        return args + ([f"--master-port={self.master_port}"] if self.master_port else [])


_launched: list[str] = []


def launched_here() -> bool:
    """This process started workers (:func:`launch`); rank 0 printed the run's summary."""
    return bool(_launched)


def launch(spec: Launch, nproc: int, nnodes: int, run_dir: Path | None, run_id: str,
           what: str = "training") -> int:
    """Run ``python -m verifily_core.cli COMMAND`` in ``nproc`` worker processes (on each of
    ``nnodes`` machines) through torch's elastic launcher and return the job's exit code
    (``what`` the job does, for its failure line).

    The workers train the run ``run_id`` (``VERIFILY_RUN_ID``), which rank 0 writes at ``run_dir``
    (the resumed run, or ``<output.dir>/<run_id>.partial``). When a worker fails and the run is left
    unsealed, it is marked failed here with the failing rank named (rank 0 may have died before it
    could); one ``Error:`` line says so and the exit code is 3 (a worker's own data or config error
    keeps its code).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if not log.isEnabledFor(logging.DEBUG):
        for name in ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher"):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # the failure is reported in one line below
    saved = os.environ.get(ENV_RUN_ID)
    os.environ[ENV_RUN_ID] = run_id  # for the workers only: restored below
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _launched.append(run_id)
    args = parse_args([*spec.torchrun_args(nproc, nnodes), "--module", "verifily_core.cli"])
    args.training_script_args = list(spec.command)  # not parsed: they are verifily's arguments
    try:
        run(args)
        return 0
    except ChildFailedError as exc:
        return _after_failure(exc.failures, run_dir if spec.node_rank == 0 else None, what)
    finally:
        if saved is None:
            os.environ.pop(ENV_RUN_ID, None)
        else:
            os.environ[ENV_RUN_ID] = saved


def _describe(failure: Any) -> str:
    if failure.exitcode < 0:
        return f"was killed by {failure.signal_name()}"
    return f"exited with code {failure.exitcode}"


def _after_failure(failures: dict[int, Any], run_dir: Path | None, what: str = "training") -> int:
    """Mark the unsealed run failed, print the one error line, return the exit code."""
    from verifily_core.run_writer import mark_failed

    stopped = {EXIT_STOPPED, -signal.SIGTERM}
    causes = {r: f for r, f in sorted(failures.items()) if f.exitcode not in stopped} or dict(sorted(failures.items()))
    recorded = _recorded_error(run_dir)
    if recorded is not None and recorded.startswith(PEER_LOST) and len(causes) > 1:
        causes.pop(0, None)  # rank 0 saw a peer go (before the launcher stopped it): the peer is the cause
    rank, failure = next(iter(causes.items()))
    if recorded is not None and 0 in causes and not recorded.startswith(PEER_LOST):
        # rank 0 failed on its own and said why (its line is printed above); keep its record
        code = failures[0].exitcode
        return code if 1 <= code <= 6 else 3
    message = f"distributed {what} failed: rank {rank} {_describe(failure)}"
    marked = mark_failed(run_dir, message) if run_dir is not None else None
    if marked is not None:
        print(f"Error: {message}; the run is marked failed: {marked}", file=sys.stderr)
        return 3
    if 1 <= failure.exitcode <= 6:
        return failure.exitcode  # a verifily error with no run to mark: that rank printed why
    code = failures[0].exitcode if 0 in failures else 3
    if 0 in failures and 1 <= code <= 6:
        return code  # failed before the run was created; rank 0 printed why
    print(f"Error: {message}", file=sys.stderr)
    return 3


def _recorded_error(run_dir: Path | None) -> str | None:
    """The error in a run's ``run_meta.json`` (``None`` when there is none or no run)."""
    if run_dir is None:
        return None
    from verifily_core.run_writer import unsealed_folder
    from verifily_core.runs import RUN_META

    folder = unsealed_folder(run_dir)
    try:
        return json.loads((folder / RUN_META).read_text(encoding="utf-8")).get("error") if folder else None
    except (OSError, ValueError):
        return None
