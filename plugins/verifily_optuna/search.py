"""The search file of ``verifily hpo`` (``hpo:`` section): study settings and the search space over
any config path. Structured strictly; errors name ``$.hpo.<field>``. Imports no Optuna."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal, Mapping

from attrs import define, field

from verifily_core.errors import ConfigError
from verifily_core.structuring import brief, structure, type_name

Direction = Literal["maximize", "minimize"]
PARAM_FIELDS = ("low", "high", "log", "step", "choices", "type")


@define
class SamplerOptions:
    type: Literal["tpe", "random"] = "tpe"
    seed: int = 42


@define
class PrunerOptions:
    type: Literal["median", "none"] = "median"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0


@define
class Param:
    """One dimension: ``{low, high, log?, step?}`` (int when both bounds are ints, else float) or
    ``{choices: [...]}``; ``type`` (``int``, ``float``, ``categorical``) overrides the inference."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    type: Literal["int", "float", "categorical"] | None = None


@define
class HpoOptions:
    study_name: str = "verifily-hpo"
    n_trials: int = 30
    metric: str | None = None
    """The validation metric to optimise (``eval_macro_f1``, ``eval_loss``; ``eval_`` may be left out);
    default the task's main metric when it is computed during training, else ``eval_loss``."""
    direction: Direction | None = None
    output_dir: str = "hpo"
    storage: str | None = None
    evaluate_trials: bool = False
    sampler: SamplerOptions = field(factory=SamplerOptions)
    pruner: PrunerOptions = field(factory=PrunerOptions)
    search_space: dict[str, Any] = field(factory=dict)

    @property
    def study_dir(self) -> Path:
        """``<output_dir>/<study_name>``: the study's database, trial runs and outputs."""
        return (Path(self.output_dir).expanduser() / self.study_name).resolve()

    @property
    def storage_url(self) -> str:
        """``storage``, or ``sqlite:///<study_dir>/study.db``."""
        return self.storage or f"sqlite:///{(self.study_dir.resolve() / 'study.db').as_posix()}"


def split_overrides(overrides: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``(hpo.* overrides, the others)``: the first change the search, the rest the training config."""
    search = [o for o in overrides if o.strip().startswith("hpo.")]
    return search, [o for o in overrides if o not in search]


def load_search(path: str | Path | None, overrides: list[str]) -> HpoOptions:
    """The search file's ``hpo`` section with ``hpo.*`` overrides applied. A search-space override
    names the config path then the field: ``hpo.search_space.training.learning_rate.low=1e-5``."""
    from verifily_core.config_loading import parse_override, read_config_file, set_dotted

    raw: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: search file not found; pass --search PATH")
        doc = read_config_file(path)
        unknown = sorted(set(doc) - {"hpo"})
        if unknown:
            raise ConfigError(f"{path}: $.{unknown[0]}: unknown key; the search file holds one section, hpo")
        raw = copy.deepcopy(doc.get("hpo") or {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: $.hpo: expected a mapping, got {type_name(raw)}")
    for text in overrides:
        key, value = parse_override(text)
        rest = key.removeprefix("hpo.")
        if rest.startswith("search_space."):
            name, _, part = rest.removeprefix("search_space.").rpartition(".")
            if part not in PARAM_FIELDS or not name:
                raise ConfigError(f"override {text!r}: expected hpo.search_space.<config path>.<{'|'.join(PARAM_FIELDS)}>")
            space = raw.setdefault("search_space", {})
            if not isinstance(space, dict):
                raise ConfigError("$.hpo.search_space: expected a mapping")
            space.setdefault(name, {})[part] = value
        else:
            set_dotted(raw, rest, value)
    opts = structure(raw, HpoOptions, root="$.hpo", source=str(path) if path else None)
    if opts.n_trials < 1:
        raise ConfigError("$.hpo.n_trials: must be >= 1")
    if opts.pruner.n_startup_trials < 0 or opts.pruner.n_warmup_steps < 0:
        raise ConfigError("$.hpo.pruner: n_startup_trials and n_warmup_steps must be >= 0")
    if not opts.search_space:
        raise ConfigError("$.hpo.search_space: name at least one config path to search, e.g. "
                          "training.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}")
    for name in opts.search_space:
        param(opts, name)
    return opts


def param(opts: HpoOptions, name: str) -> tuple[str, Param]:
    """``(kind, spec)`` of one search-space entry, checked: kind is ``int``, ``float`` or ``categorical``."""
    where = f"$.hpo.search_space.{name}"
    spec = structure(opts.search_space[name], Param, root=where)
    if spec.choices is not None or spec.type == "categorical":
        if not spec.choices:
            raise ConfigError(f"{where}.choices: give at least one choice")
        return "categorical", spec
    if spec.low is None or spec.high is None:
        raise ConfigError(f"{where}: give low and high (a range) or choices (a list)")
    raw = opts.search_space[name]
    kind = spec.type or ("int" if all(isinstance(raw.get(k), int) and not isinstance(raw.get(k), bool)
                                      for k in ("low", "high")) else "float")
    if spec.low > spec.high:
        raise ConfigError(f"{where}: low ({spec.low:g}) is above high ({spec.high:g})")
    if spec.log and spec.low <= 0:
        raise ConfigError(f"{where}.low: a log scale needs low > 0, got {spec.low:g}")
    if spec.log and spec.step is not None:
        raise ConfigError(f"{where}.step: a log scale takes no step")
    return kind, spec


def choice_key(value: Any) -> Any:
    """A categorical choice as Optuna stores it: plain values as they are, lists and mappings as JSON."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value, sort_keys=True)


def suggest(trial: Any, opts: HpoOptions) -> dict[str, Any]:
    """One value per search-space entry from the Optuna ``trial``, by config path."""
    out: dict[str, Any] = {}
    for name in opts.search_space:
        kind, spec = param(opts, name)
        if kind == "categorical":
            keys = [choice_key(c) for c in spec.choices or []]
            picked = trial.suggest_categorical(name, keys)
            out[name] = spec.choices[keys.index(picked)] if spec.choices else picked
        elif kind == "int":
            out[name] = trial.suggest_int(name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
        else:
            out[name] = trial.suggest_float(name, float(spec.low), float(spec.high), step=spec.step, log=spec.log)
    return out


def decoded(opts: HpoOptions, params: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's stored params back as config values (a JSON choice as its list or mapping)."""
    out = {}
    for name, value in params.items():
        kind, spec = param(opts, name) if name in opts.search_space else ("", None)
        if kind == "categorical" and spec is not None and spec.choices:
            keys = [choice_key(c) for c in spec.choices]
            out[name] = spec.choices[keys.index(value)] if value in keys else value
        else:
            out[name] = value
    return out


def apply(config: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of plain config data with each ``path: value`` set."""
    from verifily_core.config_loading import set_dotted

    data = copy.deepcopy(dict(config))
    for name, value in values.items():
        set_dotted(data, name, value)
    return data


def check_paths(config: Mapping[str, Any], opts: HpoOptions) -> None:
    """Every search-space path must be a field of the training config: each is set to its low value
    (or first choice) and the config structured; a path that is not a field is named."""
    from verifily_core.config import TrainConfig

    for name in opts.search_space:
        kind, spec = param(opts, name)
        value = spec.choices[0] if kind == "categorical" and spec.choices else (
            int(spec.low) if kind == "int" else spec.low)
        try:
            TrainConfig.from_dict(apply(config, {name: value}))
        except ConfigError as exc:
            if "unknown key" in str(exc) or "is not a section" in str(exc):
                raise ConfigError(f"$.hpo.search_space.{name}: not a field of the training config ({exc})") from None
            raise ConfigError(f"$.hpo.search_space.{name}: {brief(value)} is not a valid value ({exc})") from None
