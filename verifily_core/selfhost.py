"""The self-host runner interface (core-spec 6.3; see ``docs/self-host.md``): a training job as
plain data, and running such a job on the machine that holds the data.

:func:`serialize_job` turns a config into a job document: the resolved config (secrets redacted),
its config hash, the dataset's reference and content hash, and the plugins it needs. No data
row is in it. :func:`run_serialized_job` runs a job document on a runner: it checks the plugins
are installed, the config hashes as recorded and the local dataset has the recorded content
hash, then trains through the configured compute backend and returns the sealed run (which
``verifily reproduce --verify-only`` accepts).
"""

from __future__ import annotations

from typing import Any, Mapping

from verifily_core.errors import ConfigError, DataError
from verifily_core.plugins import Registries

JOB_FORMAT_VERSION = 1


def serialize_job(config: Any, overrides: tuple[str, ...] | list[str] = (),
                  registries: Registries | None = None) -> dict[str, Any]:
    """The job document of ``config`` (a path, dict or TrainConfig, with ``overrides``): JSON-ready.

    The dataset is resolved and hashed here, so the document pins its content.

    :raises ConfigError: the config is invalid.
    :raises DataError: the dataset is missing or fails its checks.
    """
    from verifily_core.api import plugins_or_installed
    from verifily_core.config import redact
    from verifily_core.datasets import resolve_dataset
    from verifily_core.training import plan_training

    regs = plugins_or_installed(registries)
    plan = plan_training(config, overrides=overrides, registries=regs)
    dataset = resolve_dataset(plan.config, regs)
    ref = dataset.to_ref_dict()
    return {
        "format_version": JOB_FORMAT_VERSION,
        "config": redact(plan.config.to_dict()),
        "config_hash": plan.config_hash,
        "dataset": {"ref": ref["ref"], "content_hash": dataset.content_hash},
        "plugins": sorted(_needed_plugins(plan.config, regs)),
    }


def _needed_plugins(cfg: Any, regs: Registries) -> set[str]:
    """The plugins registering the config's task and compute backend."""
    return {regs.tasks.owner(cfg.task), regs.backends.owner(cfg.compute.mode)}


def run_serialized_job(job: Mapping[str, Any], registries: Registries | None = None,
                       hf_token: str | None = None) -> Any:
    """Train the job document ``job`` (:func:`serialize_job`) here and return the sealed run.

    :raises ConfigError: an unknown format, a plugin that is not installed, or a config that no
        longer hashes as recorded (a different verifily version or a tampered job).
    :raises DataError: the dataset here does not have the job's content hash.
    """
    from verifily_core.api import plugins_or_installed
    from verifily_core.datasets import resolve_dataset
    from verifily_core.training import execute_plan, plan_training

    if job.get("format_version") != JOB_FORMAT_VERSION:
        raise ConfigError(f"job: format_version {job.get('format_version')!r} is not supported "
                          f"(this verifily runs {JOB_FORMAT_VERSION})")
    regs = plugins_or_installed(registries)
    installed = {name for name, plugin in regs.pm.list_name_plugin() if plugin is not None}
    missing = [p for p in job.get("plugins", []) if p not in installed]
    if missing:
        raise ConfigError(f"job: plugin(s) {', '.join(missing)} not installed on this runner; install them")
    plan = plan_training(dict(job["config"]), registries=regs)
    if plan.config_hash != job.get("config_hash"):
        raise ConfigError(f"job: the config hashes to {plan.config_hash} here, not {job.get('config_hash')}; "
                          "serialize the job with the runner's verifily version")
    dataset = resolve_dataset(plan.config, regs)
    want = job.get("dataset", {}).get("content_hash")
    if dataset.content_hash != want:
        raise DataError(f"job: the dataset {dataset.ref} here has content hash {dataset.content_hash}, the job "
                        f"was made for {want}")
    return execute_plan(plan, hf_token=hf_token)
