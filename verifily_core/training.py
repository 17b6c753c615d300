"""Training orchestration: config -> plan (validated, hashed) -> backend -> Run.

``plan_training`` does everything that needs no heavy library and no data (``verifily train
--dry-run --no-data-check``); ``check_plan_data`` adds the dataset check of a run, resolved
through the same function training uses (``verifily train --dry-run``); ``execute_plan``
resolves the dataset, builds the :class:`~verifily_core.jobs.TrainJob` and hands it to the
compute backend.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import attrs

from verifily_core.config import TrainConfig
from verifily_core.config_loading import resolve_config
from verifily_core.errors import ConfigError
from verifily_core.plugins import Registries
from verifily_core.run_lock import lock_run


@attrs.frozen
class TrainPlan:
    """A validated training request: the resolved config, its hash and the plugins chosen."""

    config: TrainConfig
    config_hash: str
    registries: Registries = attrs.field(repr=False, eq=False)
    data_check: dict[str, Any] | None = attrs.field(default=None, eq=False)
    """What :func:`check_plan_data` checked (``DataCheck.describe()``), or ``{"checked": false,
    "reason": ...}``; ``None`` until the data is checked."""
    dataset: Any = attrs.field(default=None, eq=False, repr=False)
    """The dataset version :func:`check_plan_data` resolved (``None`` until then)."""
    batch_check: dict[str, Any] | None = attrs.field(default=None, eq=False)
    """What :func:`check_plan_batch` measured (the compute backend's ``check_batch`` report), or
    ``None`` when it was not asked for."""

    def describe(self) -> dict[str, Any]:
        """The plan as plain data (what ``--dry-run`` prints)."""
        cfg = self.config
        dataset = attrs.asdict(cfg.data_paths) if cfg.data_paths else cfg.dataset_version
        return {
            "task": cfg.task,
            "base_model": cfg.base_model,
            "model_loader": cfg.model.loader,
            "dataset": dataset,
            "mode": cfg.compute.mode,
            "device": cfg.compute.device,
            "training": attrs.asdict(cfg.training),
            "lora": attrs.asdict(cfg.lora),
            "eval": attrs.asdict(cfg.eval),
            "output_dir": cfg.output.dir,
            "name": cfg.output.name,
            "push": {"repo": cfg.output.hub_repo, "private": cfg.output.hub_private} if cfg.output.push_to_hub else None,
            "seed": cfg.seed,
            "config_hash": self.config_hash,
            "data_check": self.data_check or {"checked": False, "reason": "not checked"},
            **({"batch_check": self.batch_check} if self.batch_check is not None else {}),
        }


def plan_training(
    config: str | Path | Mapping[str, Any] | TrainConfig | None,
    overrides: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
    *,
    registries: Registries,
) -> TrainPlan:
    """Resolve and validate a config (file path, dict or TrainConfig) into a plan.

    :param overrides: ``section.key=value`` strings, applied over the file.
    :param flags: dotted config paths to CLI flag values, applied last; ``None`` is ignored.
    :param registries: the installed plugins (resolved once, at the entry).
    """
    if isinstance(config, TrainConfig):
        data: Mapping[str, Any] | None = config.to_dict()
        path = None
    elif isinstance(config, Mapping):
        data, path = config, None
    else:
        data, path = None, config
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"{path}: config file not found; pass --config PATH")
    cfg = resolve_config(path=path, data=data, overrides=overrides, flags=flags)
    cfg = config_for_world(cfg)
    cfg.validate(registries)
    return TrainPlan(config=cfg, config_hash=cfg.to_hash(), registries=registries)


def config_for_world(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``compute.num_processes``/``num_nodes`` as the launcher that started this process
    set them (``LOCAL_WORLD_SIZE``, ``WORLD_SIZE``): the recorded config says how the run was trained."""
    from verifily_core.distributed import world

    w = world()
    if not w.is_distributed or (cfg.compute.num_processes, cfg.compute.num_nodes) == (w.local_world_size, w.num_nodes):
        return cfg
    return attrs.evolve(cfg, compute=attrs.evolve(cfg.compute, num_processes=w.local_world_size, num_nodes=w.num_nodes))


def launch_plan(plan: TrainPlan, launch: Any, resume_from: str | None = None) -> Any:
    """Start the workers of a distributed plan (``launch``: a :class:`~verifily_core.distributed.Launch`)
    and return the run they sealed (loaded from its directory). Without a launch, see
    :func:`train_plan`.

    :raises VerifilyTrainError: a worker failed (the run marked failed; the line already printed).
    """
    from verifily_core import distributed
    from verifily_core.errors import TrainingError
    from verifily_core.jobs import new_run_id
    from verifily_core.runs import load_run

    cfg = plan.config
    backend = plan.registries.backends.get(cfg.compute.mode)
    if not backend.reads_data:
        raise ConfigError(f"compute.num_processes: compute backend '{cfg.compute.mode}' does not train on this "
                          "machine; set compute.num_processes=1")
    if resume_from:
        import json

        from verifily_core.runs import RUN_META

        meta_path = Path(resume_from) / RUN_META
        if not meta_path.is_file():
            raise ConfigError(f"--resume {resume_from}: not a run directory (no {RUN_META})")
        run_id, run_dir = str(json.loads(meta_path.read_text(encoding="utf-8"))["run_id"]), Path(resume_from)
    else:
        run_id = new_run_id()
        run_dir = Path(cfg.output.dir) / f"{run_id}.partial"
    code = distributed.launch(launch, cfg.compute.num_processes, cfg.compute.num_nodes, run_dir, run_id)
    if code:
        err = distributed.QuietWorkerError(code)
        raise err
    if launch.node_rank:
        return None
    final = (run_dir.parent if resume_from else Path(cfg.output.dir)) / run_id
    if not final.is_dir():
        raise TrainingError(f"{final}: the workers finished but the run was not sealed; see the lines above")
    return load_run(final)


def check_plan_data(plan: TrainPlan) -> TrainPlan:
    """The plan with its dataset checked exactly as a run checks it before training: resolved
    (store version or ``data_paths``), every file hashed and every row validated by the task as
    it streams, the task's dataset-level checks, slice keys found in the evaluated split, the
    leakage policy applied (:func:`~verifily_core.datasets.check_dataset`). No model and no
    heavy library is loaded. A backend that does not read the data on this machine
    (``reads_data = False``) is reported as not checked.

    :raises DataError: (exit 2) a missing version or file, a bad row (``file:line``), a hash mismatch.
    :raises ConfigError: (exit 1) a slice key or group key the data lacks, a task mismatch.
    """
    backend = plan.registries.backends.get(plan.config.compute.mode)
    if not backend.reads_data:
        reason = f"compute backend '{plan.config.compute.mode}' does not read the data on this machine"
        return attrs.evolve(plan, data_check={"checked": False, "reason": reason})
    from verifily_core.datasets import check_dataset

    check = check_dataset(plan.config, plan.registries)
    return attrs.evolve(plan, data_check=check.describe(), dataset=check.dataset)


def check_plan_batch(plan: TrainPlan, hf_token: str | None = None, memory_limit: int | None = None) -> TrainPlan:
    """The plan with its largest batch tried (``verifily train --dry-run --check-batch``): the
    compute backend tokenizes the data with the task's features, loads the model as training
    loads it (quantization included), runs one forward and backward pass and an optimizer step on
    the ``training.batch_size`` longest rows, and reports token lengths, padding, peak memory
    and time estimates (:meth:`~verifily_core.interfaces.ComputeBackend.check_batch`).

    :param memory_limit: bytes allowed instead of the device's own (GPU memory, or the RAM
        available on CPU).
    :raises ConfigError: (exit 1) the largest batch does not fit, with what to change.
    """
    from verifily_core.datasets import resolve_dataset
    from verifily_core.jobs import TrainJob, utc_now

    cfg, backend = plan.config, plan.registries.backends.get(plan.config.compute.mode)
    if not backend.reads_data:
        reason = f"compute backend '{cfg.compute.mode}' does not train on this machine"
        return attrs.evolve(plan, batch_check={"checked": False, "reason": reason})
    dataset = plan.dataset if plan.dataset is not None else resolve_dataset(cfg, plan.registries)
    job = TrainJob(job_id="dry-run", config=cfg, dataset=dataset, config_hash=plan.config_hash,
                   data_hash=getattr(dataset, "content_hash", ""), created_at=utc_now(), registries=plan.registries,
                   hf_token=hf_token)
    report = backend.check_batch(job, memory_limit=memory_limit)
    if report.get("checked") and not report.get("fits", True):
        raise ConfigError(batch_advice_line(report))
    return attrs.evolve(plan, batch_check=report)


def batch_advice_line(report: Mapping[str, Any]) -> str:
    """The one error line of a batch that does not fit: what it needs, the limit, what to change."""
    from verifily_core.memory import fmt_bytes

    batch = report["largest_batch"]
    line = (f"the largest batch ({batch['rows']} rows x {batch['tokens']} tokens) needs {fmt_bytes(report['peak_memory'])} "
            f"at its peak, over the memory limit of {fmt_bytes(report['memory_limit'])} ({report['memory_limit_source']})")
    advice = report.get("advice") or []
    return line + ("; to fit, try: " + "; ".join(advice) if advice else "")


def train_plan(plan: TrainPlan, hf_token: str | None = None, resume_from: str | None = None) -> Any:
    """:func:`execute_plan` in this process, or, for a plan of several processes on one machine in
    a process no launcher started (``verifily reproduce`` or ``attribute --leave-out`` of a
    distributed run, the Python API without ``launch``), ``verifily train --config`` (with
    ``--resume``) in a child process, which starts the workers; returns the run sealed either way.

    :raises ConfigError: the plan spans several machines (their rendezvous must be given).
    :raises TrainingError: the child process failed (its error line was printed; the error keeps
        its exit code) or sealed no run.
    """
    from verifily_core.distributed import world

    c = plan.config.compute
    if c.num_processes * c.num_nodes <= 1 or world().is_distributed:
        return execute_plan(plan, resume_from=resume_from, hf_token=hf_token)
    if c.num_nodes > 1:
        raise ConfigError("compute.num_nodes above 1 need the rendezvous: pass launch=Launch(...) with "
                          "master_addr or rdzv_endpoint (verifily_core.distributed.Launch), or run "
                          "`verifily train --nnodes N --node-rank R --master-addr HOST` on every machine")
    import os
    import subprocess
    import sys
    import tempfile

    import yaml

    from verifily_core.errors import TrainingError
    from verifily_core.files import write_text
    from verifily_core.runs import load_run

    out = Path(plan.config.output.dir)
    before = set(out.iterdir()) if out.is_dir() else set()
    env = {**os.environ, **({"HF_TOKEN": hf_token} if hf_token else {})}
    with tempfile.TemporaryDirectory(prefix=".verifily-plan-") as tmp:
        config = write_text(Path(tmp) / "config.yaml", yaml.safe_dump(plan.config.to_dict(), sort_keys=False))
        try:  # its progress and error lines on stderr; its summary too, so a caller's stdout stays its own
            sink: Any = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            sink = subprocess.DEVNULL
        resume = ["--resume", str(resume_from)] if resume_from else []
        code = subprocess.call([sys.executable, "-m", "verifily_core.cli", "train", "--config", str(config), *resume],
                               env=env, stdout=sink)
    made = sorted(p for p in (set(out.iterdir()) if out.is_dir() else set()) - before if (p / "run_meta.json").is_file())
    if code or not made:
        err = TrainingError(f"training in {c.num_processes * c.num_nodes} processes failed (exit {code}); "
                            f"see the error above" + (f" and {made[-1]}" if made else ""))
        err.exit_code = code if 1 <= code <= 6 else TrainingError.exit_code
        raise err
    return load_run(made[-1])


def execute_plan(plan: TrainPlan, resume_from: str | None = None, hf_token: str | None = None,
                 on_eval: Any = None, on_push: Any = None) -> Any:
    """Resolve the dataset, build the job, run it on the configured backend, tell the
    ``verifily_run_written`` hook, and, when ``eval.enabled`` and the dataset has a test
    split, evaluate the finished run (``on_eval(result)`` receives the EvalResult). With
    ``output.push_to_hub`` the sealed (and evaluated) run's adapter is then pushed to
    ``output.hub_repo`` (``on_push(result)`` receives the PushResult).

    :raises RunLocked: ``resume_from`` is being trained by another process.
    :raises PushError: only the push failed; the run stays completed (the error's ``run``).
    """
    from verifily_core import distributed
    from verifily_core.jobs import TrainJob, new_run_id, utc_now

    cfg = plan.config
    backend = plan.registries.backends.get(cfg.compute.mode)
    w = distributed.world()
    if cfg.compute.num_processes * cfg.compute.num_nodes > 1 and not w.is_distributed:
        raise ConfigError("compute.num_processes/num_nodes above 1 need a launcher: run `verifily train --nproc N`, "
                          "or start this under torchrun or accelerate launch")
    if w.is_distributed and backend.reads_data:
        distributed.init(cfg.compute.device)
    # a resumed run is locked before it is read, so two resumes (or a resume of a run still
    # training) cannot both write it: the second gets RunLocked (exit 1); rank 0 holds it for all
    with lock_run(resume_from) if resume_from and w.is_main else contextlib.nullcontext():
        dataset = _resolve_dataset(plan, backend)
        distributed.check_same_data(getattr(dataset, "content_hash", ""))
        job_id = distributed.agree_run_id(new_run_id())
        if resume_from:
            job_id = check_resumable(resume_from, plan, getattr(dataset, "content_hash", ""))
            cfg = resumed_config(cfg, Path(resume_from))
        job = TrainJob(
            job_id=job_id,
            config=cfg,
            dataset=dataset,
            config_hash=plan.config_hash,
            data_hash=getattr(dataset, "content_hash", ""),
            created_at=utc_now(),
            registries=plan.registries,
            hf_token=hf_token,
            resume_from=resume_from,
        )
        run = backend.run(job)
    if not w.is_main:  # rank 0 evaluates and pushes; the others wait for it, then leave
        distributed.barrier()
        distributed.finish()
        return None
    plan.registries.hook.verifily_run_written(run=run)
    if cfg.eval.enabled and dataset is not None and dataset.has_split("test"):
        from verifily_core.evaluator import evaluate

        result = evaluate(run.path, registries=plan.registries, hf_token=hf_token, shard=False)  # rank 0 alone
        if on_eval is not None:
            on_eval(result)
    if cfg.output.push_to_hub:
        from verifily_core.pushing import push_trained_run

        pushed = push_trained_run(run, cfg, plan.registries, hf_token)
        if on_push is not None:
            on_push(pushed)
    distributed.barrier()
    distributed.finish()
    return run


def check_resumable(run_path: str, plan: TrainPlan, data_hash: str) -> str:
    """Check an interrupted run can be continued with this plan; return its run id.

    :raises ConfigError: the run's config differs (the differing keys are named).
    :raises DataError: the dataset changed since the run started.
    """
    import json

    from verifily_core.errors import DataError
    from verifily_core.runs import FAILED_SUFFIX, PARTIAL_SUFFIX, RUN_META, STATUS_COMPLETED

    path = Path(run_path)
    meta_path = path / RUN_META
    if not meta_path.is_file():
        raise ConfigError(f"--resume {run_path}: not a run directory (no {RUN_META})")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("status") == STATUS_COMPLETED and not path.resolve().name.endswith((PARTIAL_SUFFIX, FAILED_SUFFIX)):
        raise ConfigError(f"--resume {run_path}: this run already completed; nothing to resume")
    hashes = meta.get("hashes", {})
    if hashes.get("config_hash") != plan.config_hash:
        old = TrainConfig.from_yaml(path / "config.yaml").hashable_dict()
        new = plan.config.hashable_dict()
        diffs = [f"{k}" for k in _diff_keys(old, new)]
        raise ConfigError(f"--resume {run_path}: the config differs from the run's ({', '.join(diffs[:5]) or 'hash'}); "
                          "resume with the same config")
    if hashes.get("data_hash") != data_hash:
        raise DataError(f"--resume {run_path}: the dataset changed since the run started "
                        f"({hashes.get('data_hash')} vs {data_hash})")
    return str(meta["run_id"])


def resumed_config(cfg: TrainConfig, run_dir: Path) -> TrainConfig:
    """The config of a resumed run: the plan's, with the run's own name and the folder it sits in
    as ``output.dir`` (neither is in the config hash; both belong to the run, not the command)."""
    recorded = TrainConfig.from_yaml(run_dir / "config.yaml").output.name
    return attrs.evolve(cfg, output=attrs.evolve(cfg.output, dir=str(run_dir.parent), name=recorded))


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b)) for k in _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if a != b else []


def _resolve_dataset(plan: TrainPlan, backend: Any) -> Any:
    """The verified dataset version, or ``None`` for a backend that does not read data here."""
    if not backend.reads_data:
        return None
    from verifily_core.datasets import resolve_dataset

    return resolve_dataset(plan.config, plan.registries)
