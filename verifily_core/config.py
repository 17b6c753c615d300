"""The ``train.yaml`` schema: attrs classes with their defaults, the resolved
:class:`TrainConfig`, its canonical forms (YAML with secrets redacted, the config hash).

Building a config from a file, ``section.key=value`` overrides and CLI flags is
:mod:`verifily_core.config_loading`; the rules a config must satisfy beyond its schema are
:mod:`verifily_core.config_validation`. Structuring is strict: unknown keys and wrong types
fail with a path-precise :class:`~verifily_core.errors.ConfigError` such as
``$.training.learning_rate: expected float, got 'fast'``.

Every field is documented in ``docs/config.md``; a test keeps the two in step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Union

import yaml
from attrs import define, field

from verifily_core import config_validation
from verifily_core.errors import ConfigError
from verifily_core.hashing import sha256_json
from verifily_core.structuring import structure, type_name, unstructure

if TYPE_CHECKING:
    from verifily_core.plugins import Registries

LrScheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
Quantization = Literal["none", "4bit", "8bit"]
ComputeDtype = Literal["bfloat16", "float16", "float32"]
LeakagePolicy = Literal["warn", "error", "off"]
OptimizerType = Literal["adamw_torch", "adamw_torch_fused", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit"]
AmpDtype = Literal["bf16", "fp16"]
AttentionImplementation = Literal["eager", "sdpa", "flash_attention_2"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
SECRET_KEY_RE = re.compile(r"(^|_)(token|secret|password|passwd|api_key|apikey)$", re.IGNORECASE)
"""Keys whose values are secrets: redacted in ``config.yaml`` and never hashed."""


@define
class DataPaths:
    """Explicit local JSONL files, one per split."""

    train: str
    val: str | None = None
    test: str | None = None


@define
class ModelParams:
    """How the base model is loaded."""

    loader: str = "auto"
    trust_remote_code: bool = False
    revision: str | None = None


@define
class Optimizations:
    """Speed and memory settings of training (``training.optimizations``).

    Each is checked against this machine's device and installed packages when the config is
    validated (before any model loads); the local backend maps them onto ``TrainingArguments``
    and the model load. ``None`` keeps the behaviour of a config that does not set the field.
    """

    optimizer_type: OptimizerType | None = None
    """``None``: the Trainer's default (``adamw_torch_fused`` with torch >= 2.8, else ``adamw_torch``)."""
    use_amp: bool | None = None
    """Mixed precision in ``amp_dtype`` (``True``) or none (``False``); ``None`` follows ``compute.bf16``/``compute.fp16``."""
    amp_dtype: AmpDtype = "bf16"
    enable_tf32: bool = False
    attention_implementation: AttentionImplementation | None = None
    """``None``: the model's default (``sdpa`` where the architecture supports it)."""
    gradient_checkpointing: bool | None = None
    """``None``: on for a quantized base on a GPU (as PEFT's k-bit preparation does), off otherwise."""
    use_compile: bool = False
    compile_mode: CompileMode = "default"


@define
class TrainingParams:
    """Hyperparameters handed to the HF Trainer."""

    num_epochs: int = 3
    batch_size: int = 8
    gradient_accumulation_steps: int = 4
    learning_rate: float = 2e-4
    lr_scheduler: LrScheduler = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_seq_length: int = 2048
    eval_steps: int = 500
    save_steps: int = 500
    logging_steps: int = 10
    max_steps: int = -1
    early_stopping_patience: int | None = None
    metric_for_best_model: str | None = None
    validation_metrics: list[str] | None = None
    group_by_length: bool = False
    attribution_checkpoints: int = 0
    """Snapshots of the trainable weights kept in the run for ``verifily attribute`` (TracIn)."""
    report_to: list[str] = field(factory=list)
    """Integrations the Trainer reports to (``wandb``, ``tensorboard``, ...); empty: none."""
    optimizations: Optimizations = field(factory=Optimizations)
    dataloader_num_workers: int = 0
    dataloader_pin_memory: bool | None = None
    dataloader_persistent_workers: bool = False
    streaming: bool = False
    """Read and tokenize the train split lazily as training goes (:mod:`verifily_core.datasets.stream`);
    needs ``max_steps``."""
    shuffle_buffer: int = 1000
    """With ``streaming``: rows shuffled together (consecutive windows of this many rows); 0 keeps the file order."""


@define
class LoraParams:
    """LoRA adapter and (Q)LoRA quantization settings."""

    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Union[str, list[str]] = "auto"
    quantization: Quantization = "none"
    bnb_4bit_compute_dtype: ComputeDtype = "bfloat16"


@define
class ComputeParams:
    """Where training runs."""

    mode: str = "local"
    device: str = "auto"
    fp16: bool = False
    bf16: bool = True
    num_processes: int = 1
    """Training processes per machine (data parallel; ``verifily train --nproc``)."""
    num_nodes: int = 1
    """Machines the processes run on (``verifily train --nnodes``)."""


@define
class EvalParams:
    """Evaluation run at the end of training and by ``verifily eval``."""

    enabled: bool = True
    metrics: list[str] | None = None
    gold_set: str | None = None
    slice_by_tags: list[str] = field(factory=list)
    hard_examples: int = 50
    hard_by: str | None = None
    batch_size: int = 16
    max_new_tokens: int = 64
    min_slice_size: int = 30
    bootstrap_resamples: int = 1000
    confidence_level: float = 0.95
    metric_options: dict[str, Any] = field(factory=dict)


@define
class DataChecks:
    """Dataset checks run before training."""

    leakage: LeakagePolicy = "warn"
    group_key: str | None = None


@define
class OutputParams:
    """Where and how the run is written."""

    dir: str = "runs/"
    name: str | None = None
    save_adapter_only: bool = True
    push_to_hub: bool = False
    """Push the completed run's adapter to ``hub_repo`` (:mod:`verifily_core.pushing`)."""
    hub_repo: str | None = None
    """The Hub model repo (``namespace/name``) to push to; required with ``push_to_hub``."""
    hub_private: bool = True
    """Create ``hub_repo`` private when it does not exist yet."""
    license: str | None = None


@define
class TrainConfig:
    """The whole resolved ``train.yaml``.

    ``task_options`` holds the task plugin's own settings (e.g. the SFT prompt template
    or the classification head); the task structures and validates them itself.
    """

    task: str
    base_model: str
    dataset_version: str | None = None
    data_paths: DataPaths | None = None
    dataset_store: str | None = None
    model: ModelParams = field(factory=ModelParams)
    training: TrainingParams = field(factory=TrainingParams)
    lora: LoraParams = field(factory=LoraParams)
    compute: ComputeParams = field(factory=ComputeParams)
    eval: EvalParams = field(factory=EvalParams)
    data_checks: DataChecks = field(factory=DataChecks)
    output: OutputParams = field(factory=OutputParams)
    task_options: dict[str, Any] = field(factory=dict)
    seed: int = 42
    tracking: dict[str, Any] = field(factory=dict)
    """Settings of experiment trackers, one section per tracker (``tracking.<name>``); each
    tracking plugin structures and checks its own section (``verifily_tracking_sections``)."""

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        """Structure and schema-check a plain dict (no plugin validation)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping at the top level, got {type_name(data)}")
        return structure(dict(data), cls, source=source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        """Load and schema-check a YAML file."""
        from verifily_core.config_loading import read_config_file  # builds on this module

        return cls.from_dict(read_config_file(path), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (the shape of ``train.yaml``)."""
        return unstructure(self)

    def merge_overrides(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        """Return a new config with dotted-path overrides (``training.learning_rate``) applied."""
        from verifily_core.config_loading import set_dotted  # builds on this module

        data = self.to_dict()
        for key, value in overrides.items():
            set_dotted(data, key, value)
        return TrainConfig.from_dict(data, source="overrides")

    # -- validation and hashing -----------------------------------------------------------

    def validate(self, registries: Registries | None = None) -> None:
        """Raise one :class:`~verifily_core.errors.ConfigError` naming the first of
        :meth:`problems` and how many more there are."""
        problems = self.problems(registries)
        if problems:
            extra = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise ConfigError(problems[0] + extra)

    def problems(self, registries: Registries | None = None) -> list[str]:
        """All validation problems as ``$.path: message`` lines.

        Without ``registries`` only the rules of the schema itself are checked; with them
        (from :func:`verifily_core.plugins.load_registries`) plugin names are checked too and
        every plugin's ``verifily_validate_config`` hook runs. See
        :func:`verifily_core.config_validation.config_problems`.
        """
        return config_validation.config_problems(self, registries)

    def hashable_dict(self) -> dict[str, Any]:
        """The config data that determines results: output location, run name and
        secrets are left out."""
        data = redact(self.to_dict())
        for path in HASH_EXCLUDED:
            *sections, key = path.split(".")
            parent = data
            for section in sections:
                parent = parent.get(section, {})
            parent.pop(key, None)
        defaults = TrainConfig(task="", base_model="").to_dict()
        for path in HASHED_WHEN_SET:  # at their default they are left out: older runs keep their hash
            *sections, key = path.split(".")
            parent, default = data, defaults
            for section in sections:
                parent, default = parent.get(section, {}), default.get(section, {})
            if key in parent and parent[key] == default.get(key):
                parent.pop(key)
        if not data["training"].get("optimizations", True):
            data["training"].pop("optimizations")
        return data

    def to_hash(self) -> str:
        """``sha256:<hex>`` of the canonical JSON of :meth:`hashable_dict`."""
        return sha256_json(self.hashable_dict())

    def to_yaml(self) -> str:
        """The resolved config as YAML, secrets redacted."""
        return yaml.safe_dump(redact(self.to_dict()), sort_keys=False)


HASH_EXCLUDED = ("output.dir", "output.name", "output.push_to_hub", "output.hub_repo", "output.hub_private",
                 "output.license", "eval.batch_size", "training.attribution_checkpoints", "training.report_to",
                 "tracking", "training.optimizations.gradient_checkpointing", "training.dataloader_num_workers",
                 "training.dataloader_pin_memory")
"""Dotted config paths (or whole sections) that cannot change a run's results and are left out of
``to_hash()``. ``training.report_to`` and ``tracking`` only say where metrics are sent: trackers
observe a run through callbacks and hooks, never change what it computes, and the same run must
hash the same whether or not it was tracked (a tracked run and its untracked rerun compare).
``training.attribution_checkpoints`` changes what the run keeps, not what it learns; gradient
checkpointing recomputes the same activations, with the same dropout masks; data-loader workers
and pinned memory only prepare and copy batches."""
HASHED_WHEN_SET = ("training.group_by_length", "training.dataloader_persistent_workers", "training.streaming",
                   "training.shuffle_buffer", "compute.num_processes", "compute.num_nodes",
                   *(f"training.optimizations.{name}" for name in ("optimizer_type", "use_amp", "amp_dtype",
                                                                   "enable_tf32", "attention_implementation",
                                                                   "use_compile", "compile_mode")))
"""Fields added after runs already existed: they enter ``to_hash()`` only when they differ from
their default, so a run made before a field existed keeps its config hash (and verifies)."""


def redact(data: Any) -> Any:
    """Replace the values of secret-looking keys (token, password, ...) with ``***``."""
    if isinstance(data, dict):
        return {k: ("***" if SECRET_KEY_RE.search(str(k)) and v else redact(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data
