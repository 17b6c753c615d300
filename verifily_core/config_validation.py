"""The rules a resolved config must satisfy beyond its schema (core-spec.md section 8).

Rule 6 (slice keys exist in the dataset's tags) needs the dataset and is checked when it
is resolved. Every problem is a ``$.path: message`` line; the CLI reports the first one
and how many more there are (exit code 1).

Some rules look at this machine without loading anything, so that ``verifily train --dry-run``
and the start of a real run refuse what training would otherwise find out late: a local
``base_model`` folder must hold tokenizer files and ``output.dir`` must be a directory this
process can create or write into (Hub model names are not checked offline).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from verifily_core.config import TrainConfig
    from verifily_core.plugins import Registries

_DATASET_REF_RE = re.compile(r"^[\w.-]+@[\w.:-]+$")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_PART_RE = re.compile(r"[A-Za-z0-9_.-]{1,96}")

RANGE_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("training.num_epochs", lambda v: v > 0, "> 0"),
    ("training.batch_size", lambda v: v >= 1, ">= 1"),
    ("compute.num_processes", lambda v: v >= 1, ">= 1"),
    ("compute.num_nodes", lambda v: v >= 1, ">= 1"),
    ("training.gradient_accumulation_steps", lambda v: v >= 1, ">= 1"),
    ("training.learning_rate", lambda v: 0 < v < 1, "in (0, 1)"),
    ("training.warmup_ratio", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("training.weight_decay", lambda v: v >= 0, ">= 0"),
    ("training.max_grad_norm", lambda v: v > 0, "> 0"),
    ("training.max_seq_length", lambda v: v >= 8, ">= 8"),
    ("training.eval_steps", lambda v: v >= 1, ">= 1"),
    ("training.save_steps", lambda v: v >= 1, ">= 1"),
    ("training.logging_steps", lambda v: v >= 1, ">= 1"),
    ("training.max_steps", lambda v: v == -1 or v >= 1, "-1 (off) or >= 1"),
    ("training.early_stopping_patience", lambda v: v is None or v >= 1, ">= 1 or null"),
    ("training.attribution_checkpoints", lambda v: 0 <= v <= 100, "in [0, 100]"),
    ("training.dataloader_num_workers", lambda v: v >= 0, ">= 0"),
    ("training.shuffle_buffer", lambda v: v >= 0, ">= 0"),
    ("lora.r", lambda v: v >= 1, ">= 1"),
    ("lora.alpha", lambda v: v >= 1, ">= 1"),
    ("lora.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("eval.hard_examples", lambda v: v >= 0, ">= 0"),
    ("eval.batch_size", lambda v: v >= 1, ">= 1"),
    ("eval.max_new_tokens", lambda v: v >= 1, ">= 1"),
    ("eval.bootstrap_resamples", lambda v: v >= 0, ">= 0 (0 turns intervals off)"),
    ("eval.confidence_level", lambda v: 0 < v < 1, "in (0, 1)"),
)
"""``(config path, check of its value, the rule as docs/config.md states it)`` for numeric fields."""

SEED_MAX = 2**32 - 1
"""The largest ``seed``: numpy's and torch's seeding (``transformers.set_seed``) accept 0 to 2**32 - 1."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "merges.txt")
"""Files of which a local model folder must hold at least one (or a sentencepiece model,
:data:`TOKENIZER_SUFFIXES`) for its tokenizer to load."""
TOKENIZER_SUFFIXES = (".model", ".spm")


def config_problems(cfg: TrainConfig, registries: Registries | None = None) -> list[str]:
    """All validation problems of ``cfg`` as ``$.path: message`` lines.

    :param registries: from :func:`verifily_core.plugins.load_registries`. Plugin names
        (``task``, ``compute.mode``, ``model.loader``, ``eval.metrics``) are checked against
        them and every plugin's ``verifily_validate_config`` hook runs; without them only the
        rules of the schema itself are checked.
    """
    out: list[str] = []
    if registries is not None and cfg.task not in registries.tasks:
        out.append(f"$.task: {registries.tasks.unknown_message(cfg.task)}")
    if not cfg.dataset_version and not (cfg.data_paths and cfg.data_paths.train):
        out.append("$.dataset_version: set either dataset_version (id@version) or data_paths.train")
    if cfg.dataset_version and not _DATASET_REF_RE.fullmatch(cfg.dataset_version):
        out.append(
            f"$.dataset_version: expected 'id@version' (e.g. ds_demo@v2 or ds_demo@latest), "
            f"got {cfg.dataset_version!r}"
        )
    if not _DEVICE_RE.fullmatch(cfg.compute.device):
        out.append(f"$.compute.device: expected auto, cpu, mps, cuda or cuda:N, got {cfg.compute.device!r}")
    out.extend(_base_model_problems(cfg.base_model))
    if not 0 <= cfg.seed <= SEED_MAX:
        out.append(f"$.seed: must be in [0, {SEED_MAX}] (what numpy and torch seeding accept), got {cfg.seed}")
    out.extend(_range_problems(cfg))
    out.extend(_streaming_problems(cfg, registries))
    out.extend(_output_dir_problems(cfg.output.dir))
    out.extend(_push_problems(cfg))
    for name, opts in cfg.eval.metric_options.items():
        if not isinstance(opts, dict):
            out.append(f"$.eval.metric_options.{name}: expected a mapping of options")
    if registries is not None:
        out.extend(_tracking_problems(cfg, registries))
        out.extend(_registry_problems(cfg, registries))
        for result in registries.hook.verifily_validate_config(config=cfg):
            out.extend(result or [])
    return out


def _base_model_problems(base_model: str) -> list[str]:
    exists = _exists(base_model)
    if base_model.startswith((".", "/", "~")) or exists:
        if not exists:
            return [f"$.base_model: local path {base_model!r} does not exist"]
        folder = Path(base_model).expanduser()
        if folder.is_dir() and not _has_tokenizer_files(folder):
            return [f"$.base_model: local model folder {base_model!r} has no tokenizer files ("
                    f"{', '.join(TOKENIZER_FILES)} or a sentencepiece *.model); save the tokenizer into it "
                    "(tokenizer.save_pretrained(folder)) or copy those files from the model's source"]
        return []
    if not _HUB_ID_RE.fullmatch(base_model):
        return [f"$.base_model: {base_model!r} is neither an existing local path nor a Hub id like org/name"]
    return []


def _exists(path: str) -> bool:
    """Whether ``path`` exists; ``False`` for one the OS cannot even look up (too long, a NUL byte)."""
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: ~user of no such user
        return False


def _has_tokenizer_files(folder: Path) -> bool:
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.is_file()]
    except OSError:
        return True  # unreadable here: loading it reports the real problem
    return any(n in TOKENIZER_FILES or n.endswith(TOKENIZER_SUFFIXES) for n in names)


def _output_dir_problems(output_dir: str) -> list[str]:
    """``output.dir`` must be a writable directory, or creatable: its nearest existing ancestor is
    a directory this process may write into. Nothing is created here."""
    try:
        target = Path(output_dir).expanduser()
    except RuntimeError:  # ~user of no such user
        return [f"$.output.dir: {output_dir!r}: no such user's home directory; choose another output directory"]
    probe = target
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = f"{output_dir!r}" if probe == target else f"{output_dir!r} cannot be created: '{probe}'"
        return [f"$.output.dir: {where} is not a directory; choose another output directory (--output-dir)"]
    if not os.access(probe, os.W_OK | os.X_OK):
        where = f"{output_dir!r}" if probe == target else f"{output_dir!r} cannot be created: '{probe}'"
        return [f"$.output.dir: {where} is not writable by this user; choose another output directory "
                "(--output-dir) or fix its permissions"]
    return []


def hub_repo_problem(repo_id: str) -> str | None:
    """Why ``repo_id`` is no Hub repo id, or ``None``: the Hub's rules are ``name`` or
    ``namespace/name``, each part 1 to 96 letters, digits, ``-``, ``_`` or ``.``, neither starting
    nor ending with ``-`` or ``.``, no ``--`` or ``..``, not ending in ``.git``."""
    parts = repo_id.split("/")
    if len(parts) <= 2 and all(_HUB_PART_RE.fullmatch(p) and p[0] not in "-." and p[-1] not in "-." for p in parts) \
            and "--" not in repo_id and ".." not in repo_id and not repo_id.endswith(".git"):
        return None
    return (f"{repo_id!r} is no Hub repo id; expected namespace/name (letters, digits, '-', '_' and '.', at most 96 "
            "each, no '--' or '..')")


def _push_problems(cfg: TrainConfig) -> list[str]:
    """``output.push_to_hub`` needs ``output.hub_repo`` (a valid id) and an adapter to push."""
    o, out = cfg.output, []
    if o.hub_repo:
        problem = hub_repo_problem(o.hub_repo)
        if problem:
            out.append(f"$.output.hub_repo: {problem}")
    if o.push_to_hub and not o.hub_repo:
        out.append("$.output.hub_repo: required when output.push_to_hub is true: the Hub model repo to push the run "
                   "to, e.g. your-name/model-name")
    if o.push_to_hub and not cfg.lora.enabled:
        out.append("$.output.push_to_hub: pushing uploads the run's LoRA adapter and lora.enabled is false; set "
                   "output.push_to_hub false")
    return out


def _tracking_problems(cfg: TrainConfig, regs: Registries) -> list[str]:
    """Each ``tracking.<name>`` section is a mapping that an installed plugin reads
    (``verifily_tracking_sections``); ``training.report_to`` names integrations once."""
    known = sorted({n for names in regs.hook.verifily_tracking_sections() for n in (names or [])})
    out = []
    for name, section in cfg.tracking.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            out.append(f"$.tracking.{name}: no installed plugin reads this section{hint}; available: "
                       f"{', '.join(known) or '(no tracking plugin installed)'}")
        elif not isinstance(section, dict):
            out.append(f"$.tracking.{name}: expected a mapping of settings")
    report = cfg.training.report_to
    if "none" in report and len(report) > 1:
        out.append("$.training.report_to: 'none' cannot be combined with other integrations")
    if len(set(report)) != len(report):
        out.append("$.training.report_to: an integration is listed twice")
    return out


def _range_problems(cfg: TrainConfig) -> list[str]:
    lo = cfg.lora
    out = []
    for path, ok, rule in RANGE_RULES:
        section, _, key = path.partition(".")
        if not ok(getattr(getattr(cfg, section), key)):
            out.append(f"$.{path}: must be {rule}")
    if isinstance(lo.target_modules, str) and lo.target_modules not in ("auto", "all-linear"):
        out.append("$.lora.target_modules: expected 'auto', 'all-linear' or a list of module names")
    if cfg.compute.fp16 and cfg.compute.bf16:
        out.append("$.compute.fp16: fp16 and bf16 cannot both be true; set compute.bf16=false to use fp16")
    out.extend(_dataloader_problems(cfg))
    if not cfg.lora.enabled and cfg.lora.quantization != "none":
        out.append("$.lora.quantization: quantized training needs LoRA; set lora.enabled=true or quantization=none")
    return out + _optimization_problems(cfg)


def _optimization_problems(cfg: TrainConfig) -> list[str]:
    """``training.optimizations`` settings that contradict each other or ``compute.*`` (whether the
    device and the installed packages can run them is the compute backend's check)."""
    opts, out = cfg.training.optimizations, []
    where = "$.training.optimizations"
    if opts.amp_dtype != "bf16" and opts.use_amp is not True:
        out.append(f"{where}.amp_dtype: applies only with training.optimizations.use_amp=true")
    if opts.use_amp is not None and cfg.compute.fp16:
        out.append("$.compute.fp16: training.optimizations.use_amp is set and decides the precision; remove "
                   "compute.fp16 (use training.optimizations.amp_dtype=fp16)")
    if opts.compile_mode != "default" and not opts.use_compile:
        out.append(f"{where}.compile_mode: applies only with training.optimizations.use_compile=true")
    return out


def _dataloader_problems(cfg: TrainConfig) -> list[str]:
    """Data-loading settings the device and torch's DataLoader accept (see also
    :func:`verifily_core.modeling.dataloader_flags` once ``compute.device: auto`` is resolved)."""
    t, out = cfg.training, []
    if t.dataloader_persistent_workers and t.dataloader_num_workers < 1:
        out.append("$.training.dataloader_persistent_workers: keeps worker processes alive between epochs and "
                   "needs training.dataloader_num_workers >= 1; set one of them")
    if t.dataloader_pin_memory and not cfg.compute.device.startswith(("cuda", "auto")):
        out.append(f"$.training.dataloader_pin_memory: pinned memory speeds up copies to a CUDA device and "
                   f"compute.device is {cfg.compute.device}; set it to false or null")
    return out


def _registry_problems(cfg: TrainConfig, regs: Registries) -> list[str]:
    out = []
    if cfg.compute.mode not in regs.backends:
        out.append(f"$.compute.mode: {regs.backends.unknown_message(cfg.compute.mode)}")
    if cfg.model.loader != "auto" and cfg.model.loader not in regs.model_loaders:
        out.append(f"$.model.loader: {regs.model_loaders.unknown_message(cfg.model.loader)}")
    for i, name in enumerate(cfg.eval.metrics or []):
        if name not in regs.metrics:
            out.append(f"$.eval.metrics[{i}]: {regs.metrics.unknown_message(name)}")
    out.extend(_validation_metric_problems(cfg, regs))
    out.extend(_slice_spec_problems(cfg, regs))
    if cfg.training.group_by_length and cfg.task in regs.tasks and not regs.tasks.get(cfg.task).groups_by_length:
        out.append(f"$.training.group_by_length: task '{cfg.task}' batches its training rows itself; remove the setting")
    return out


def _validation_metric_problems(cfg: TrainConfig, regs: Registries) -> list[str]:
    """``training.validation_metrics``: installed metrics of the task, and a task that computes any."""
    names = cfg.training.validation_metrics
    if names is None or cfg.task not in regs.tasks:
        return []
    task = regs.tasks.get(cfg.task)
    if names and not task.validation_metrics:
        return [f"$.training.validation_metrics: task '{cfg.task}' computes only the loss on the val split during "
                "training; remove the setting (run `verifily eval` for its metrics)"]
    out = []
    for i, name in enumerate(names):
        if name not in regs.metrics:
            out.append(f"$.training.validation_metrics[{i}]: {regs.metrics.unknown_message(name)}")
        elif regs.metrics.get(name).tasks and cfg.task not in regs.metrics.get(name).tasks:
            out.append(f"$.training.validation_metrics[{i}]: metric '{name}' is not a metric of task '{cfg.task}'")
        elif not regs.metrics.get(name).reads <= task.validation_reads:
            usable = sorted(n for n in regs.metrics.names() if regs.metrics.get(n).reads <= task.validation_reads
                            and (not regs.metrics.get(n).tasks or cfg.task in regs.metrics.get(n).tasks))
            out.append(f"$.training.validation_metrics[{i}]: '{name}' needs {', '.join(sorted(regs.metrics.get(name).reads))}, "
                       f"which task '{cfg.task}' does not compute during training; use one of {', '.join(usable)} "
                       "(or `verifily eval` after training)")
    return out


def _slice_spec_problems(cfg: TrainConfig, regs: Registries) -> list[str]:
    """Each ``eval.slice_by_tags`` spec parses and names an installed slicer (whether the data
    has its tag keys is rule 6, checked when the dataset is resolved)."""
    if not cfg.eval.slice_by_tags:
        return []
    from verifily_core.errors import ConfigError
    from verifily_core.evaluation.slicing import tag_keys

    try:
        tag_keys(list(cfg.eval.slice_by_tags), regs.slicers)
    except ConfigError as exc:
        return [f"$.eval.slice_by_tags: {str(exc).removeprefix('--slice-by: ')}"]
    return []


def _streaming_problems(cfg: TrainConfig, registries: Registries | None) -> list[str]:
    """What ``training.streaming`` cannot do: a schedule without ``max_steps`` (a stream has no
    length), batches grouped by length (that needs every row's length first), loader workers (each
    would read the whole stream), a task or compute backend that does not declare it streams."""
    t = cfg.training
    if not t.streaming:
        return []
    out = []
    if t.max_steps < 1:
        out.append("$.training.max_steps: training.streaming needs max_steps (a streamed split has no length "
                   "to derive the schedule from); set training.max_steps")
    if t.group_by_length:
        out.append("$.training.group_by_length: not with training.streaming (grouping needs every row's length "
                   "first); turn one of them off")
    if t.dataloader_num_workers:
        out.append("$.training.dataloader_num_workers: must be 0 with training.streaming (the stream is read "
                   "and tokenized in the training process)")
    if registries is not None:
        if cfg.task in registries.tasks and not registries.tasks.get(cfg.task).streams:
            out.append(f"$.training.streaming: task '{cfg.task}' does not train on a streamed split; "
                       "set training.streaming: false")
        if cfg.compute.mode in registries.backends and not registries.backends.get(cfg.compute.mode).streams:
            out.append(f"$.training.streaming: compute backend '{cfg.compute.mode}' does not stream training data; "
                       "set training.streaming: false")
    return out
