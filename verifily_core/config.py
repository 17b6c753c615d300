"""The ``train.yaml`` schema: attrs classes, strict structuring, overrides and hashing.

Precedence, highest first: CLI flags > ``section.key=value`` overrides > the config
file > the defaults below. Structuring is strict: unknown keys and wrong types fail
with a path-precise :class:`~verifily_core.errors.ConfigError` such as
``$.training.learning_rate: expected float, got 'fast'``.

Every field is documented in ``docs/config.md``; a test keeps the two in step.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Union

import yaml
from attrs import define, field

from verifily_core.errors import ConfigError
from verifily_core.hashing import sha256_json
from verifily_core.structuring import structure, type_name, unstructure

TASKS_BUILTIN = ("sft", "classification")
LrScheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
Quantization = Literal["none", "4bit", "8bit"]
ComputeDtype = Literal["bfloat16", "float16", "float32"]
LeakagePolicy = Literal["warn", "error", "off"]
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
SECRET_KEY_RE = re.compile(r"(^|_)(token|secret|password|passwd|api_key|apikey)$", re.IGNORECASE)


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


@define
class EvalParams:
    """Evaluation run at the end of training and by ``verifily eval``."""

    enabled: bool = True
    metrics: list[str] | None = None
    gold_set: str | None = None
    slice_by_tags: list[str] = field(factory=list)
    hard_examples: int = 50
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
        return cls.from_dict(read_config_file(path), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (the shape of ``train.yaml``)."""
        return unstructure(self)

    def merge_overrides(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        """Return a new config with dotted-path overrides (``training.learning_rate``) applied."""
        data = self.to_dict()
        for key, value in overrides.items():
            set_dotted(data, key, value)
        return TrainConfig.from_dict(data, source="overrides")

    # -- validation and hashing -----------------------------------------------------------

    def validate(self, registries: Any = None) -> None:
        """Apply the validation rules of core-spec.md section 8 (rule 6 needs the dataset
        and is checked when it is resolved). With ``registries`` (from
        :func:`verifily_core.plugins.load_registries`) plugin names are checked too and
        the ``verifily_validate_config`` hook runs."""
        problems = self.problems(registries)
        if problems:
            extra = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise ConfigError(problems[0] + extra)

    def problems(self, registries: Any = None) -> list[str]:
        """All validation problems as ``$.path: message`` lines."""
        out: list[str] = []
        tasks = registries.tasks if registries is not None else None
        if tasks is not None and self.task not in tasks:
            out.append(f"$.task: {tasks.unknown_message(self.task)}")
        elif tasks is None and self.task not in TASKS_BUILTIN:
            out.append(f"$.task: unknown task '{self.task}'; built-in tasks: {', '.join(TASKS_BUILTIN)}")
        if not self.dataset_version and not (self.data_paths and self.data_paths.train):
            out.append("$.dataset_version: set either dataset_version (id@version) or data_paths.train")
        if self.dataset_version and not re.match(r"^[\w.-]+@[\w.:-]+$", self.dataset_version):
            out.append(
                f"$.dataset_version: expected 'id@version' (e.g. ds_demo@v2 or ds_demo@latest), "
                f"got '{self.dataset_version}'"
            )
        if self.lora.quantization != "none" and importlib.util.find_spec("bitsandbytes") is None:
            out.append(
                f"$.lora.quantization: '{self.lora.quantization}' needs bitsandbytes, which is not "
                "installed; run: pip install 'verifily-train[qlora]'"
            )
        if not _DEVICE_RE.match(self.compute.device):
            out.append(f"$.compute.device: expected auto, cpu, mps, cuda or cuda:N, got '{self.compute.device}'")
        out.extend(_base_model_problems(self.base_model))
        out.extend(_range_problems(self))
        for name, opts in self.eval.metric_options.items():
            if not isinstance(opts, dict):
                out.append(f"$.eval.metric_options.{name}: expected a mapping of options")
        if registries is not None:
            out.extend(_registry_problems(self, registries))
            for result in registries.hook.verifily_validate_config(config=self):
                out.extend(result or [])
        return out

    def hashable_dict(self) -> dict[str, Any]:
        """The config data that determines results: output location, run name and
        secrets are left out."""
        data = redact(self.to_dict())
        for path in HASH_EXCLUDED:
            section, _, key = path.partition(".")
            data.get(section, {}).pop(key, None)
        return data

    def to_hash(self) -> str:
        """``sha256:<hex>`` of the canonical JSON of :meth:`hashable_dict`."""
        return sha256_json(self.hashable_dict())

    def to_yaml(self) -> str:
        """The resolved config as YAML, secrets redacted."""
        return yaml.safe_dump(redact(self.to_dict()), sort_keys=False)


HASH_EXCLUDED = ("output.dir", "output.name", "output.push_to_hub", "eval.batch_size")
"""Dotted config paths that cannot change a run's results and are left out of ``to_hash()``."""


# -- loading and overrides ----------------------------------------------------------------------


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with one-line errors for missing or bad files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found; pass --config PATH")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type_name(data)}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value``; the value is read as YAML (``[512,256]``, ``true``, ``1e-4``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$", key):
        raise ConfigError(f"override '{text}': expected section.key=value, e.g. training.num_epochs=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and re.match(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$", value):
        value = float(value)  # YAML 1.1 reads 1e-4 as a string
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for key ``a.b``, creating sections as needed."""
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override '{key}': $.{'.'.join(parts[: i + 1])} is not a section")
        node = nxt
    node[parts[-1]] = value


def resolve_config(
    path: str | Path | None = None,
    data: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Build the resolved config: defaults < file (or ``data``) < overrides < CLI flags.

    :param path: YAML file to read (ignored when ``data`` is given).
    :param overrides: ``section.key=value`` strings.
    :param flags: dotted paths to values from CLI flags; ``None`` values are ignored.
    """
    raw: dict[str, Any] = copy.deepcopy(dict(data)) if data is not None else (read_config_file(path) if path else {})
    source = str(path) if path and data is None else "config"
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(raw, key, value)
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key == "dataset_version":
            raw.pop("data_paths", None)  # an explicit --dataset wins over files in the config
        set_dotted(raw, key, value)
    for required in ("task", "base_model"):
        if required not in raw:
            raise ConfigError(f"{source}: $.{required}: required field is missing")
    return TrainConfig.from_dict(raw, source=source)


def redact(data: Any) -> Any:
    """Replace the values of secret-looking keys (token, password, ...) with ``***``."""
    if isinstance(data, dict):
        return {k: ("***" if SECRET_KEY_RE.search(str(k)) and v else redact(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


# -- validation helpers -------------------------------------------------------------------------


def _base_model_problems(base_model: str) -> list[str]:
    looks_local = base_model.startswith((".", "/", "~")) or Path(base_model).expanduser().exists()
    if looks_local:
        if not Path(base_model).expanduser().exists():
            return [f"$.base_model: local path '{base_model}' does not exist"]
        return []
    if not _HUB_ID_RE.match(base_model):
        return [f"$.base_model: '{base_model}' is neither an existing local path nor a Hub id like org/name"]
    return []


RANGE_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("training.num_epochs", lambda v: v > 0, "> 0"),
    ("training.batch_size", lambda v: v >= 1, ">= 1"),
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
    if not cfg.lora.enabled and cfg.lora.quantization != "none":
        out.append("$.lora.quantization: quantized training needs LoRA; set lora.enabled=true or quantization=none")
    return out


def _registry_problems(cfg: TrainConfig, regs: Any) -> list[str]:
    out = []
    if cfg.compute.mode not in regs.backends:
        out.append(f"$.compute.mode: {regs.backends.unknown_message(cfg.compute.mode)}")
    if cfg.model.loader != "auto" and cfg.model.loader not in regs.model_loaders:
        out.append(f"$.model.loader: {regs.model_loaders.unknown_message(cfg.model.loader)}")
    for i, name in enumerate(cfg.eval.metrics or []):
        if name not in regs.metrics:
            out.append(f"$.eval.metrics[{i}]: {regs.metrics.unknown_message(name)}")
    return out
