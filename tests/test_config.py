"""Config schema: defaults, strict structuring, path-precise errors, overrides, hashing."""

from __future__ import annotations

from typing import Literal

import attrs
import pytest

from verifily_core.config import TrainConfig, redact
from verifily_core.config_loading import parse_override, resolve_config
from verifily_core.errors import ConfigError
from verifily_core.plugins import load_registries, make_plugin_manager

BASE = {"task": "sft", "base_model": "org/model", "data_paths": {"train": "train.jsonl"}}


def with_(**sections):
    data = dict(BASE)
    data.update(sections)
    return data


def test_defaults_match_core_spec_section_8():
    cfg = TrainConfig.from_dict(BASE)
    t, lo, c, o = cfg.training, cfg.lora, cfg.compute, cfg.output
    assert (t.num_epochs, t.batch_size, t.gradient_accumulation_steps) == (3, 8, 4)
    assert (t.learning_rate, t.lr_scheduler, t.warmup_ratio, t.weight_decay) == (2e-4, "cosine", 0.03, 0.01)
    assert (t.max_grad_norm, t.max_seq_length, t.eval_steps, t.save_steps, t.logging_steps) == (1.0, 2048, 500, 500, 10)
    assert (lo.enabled, lo.r, lo.alpha, lo.dropout, lo.target_modules) == (True, 16, 32, 0.05, "auto")
    assert (lo.quantization, lo.bnb_4bit_compute_dtype) == ("none", "bfloat16")
    assert (c.mode, c.device, c.fp16, c.bf16) == ("local", "auto", False, True)
    assert cfg.eval.enabled is True and cfg.eval.gold_set is None
    assert (o.dir, o.save_adapter_only, o.push_to_hub, o.hub_repo, o.hub_private) == ("runs/", True, False, None, True)
    assert cfg.seed == 42


@pytest.mark.parametrize(
    "data, message",
    [
        (with_(training={"learning_rate": "fast"}), "$.training.learning_rate: expected float, got string 'fast'"),
        (with_(training={"epocs": 3}), "$.training.epocs: unknown key (did you mean 'num_epochs'?)"),
        (with_(training={"batch_size": 2.5}), "$.training.batch_size: expected int"),
        (with_(training={"num_epochs": True}), "$.training.num_epochs: expected int, got boolean True"),
        (with_(lora={"quantization": "3bit"}), "$.lora.quantization: expected one of none, 4bit, 8bit, got '3bit'"),
        (with_(eval={"slice_by_tags": ["source", 3]}), "$.eval.slice_by_tags[1]: expected string, got int 3"),
        (with_(training=5), "$.training: expected mapping, got int 5"),
        (with_(data_paths={"val": "v.jsonl"}), "$.data_paths.train: required field is missing"),
        (with_(lora={"target_modules": ["q_proj", 1]}), "$.lora.target_modules: expected string or list of strings"),
        (with_(seeed=1), "$.seeed: unknown key (did you mean 'seed'?)"),
    ],
)
def test_schema_errors_name_the_field(data, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_required_top_level_field():
    with pytest.raises(ConfigError, match=r"\$\.base_model: required field is missing"):
        resolve_config(data={"task": "sft"})


@pytest.mark.parametrize(
    "data, message",
    [
        (with_(task="regression"), "$.task: unknown task 'regression'"),
        ({"task": "sft", "base_model": "org/model"}, "$.dataset_version: set either dataset_version"),
        (with_(dataset_version="nover"), "$.dataset_version: expected 'id@version'"),
        (with_(compute={"device": "gpu"}), "$.compute.device: expected auto, cpu, mps, cuda or cuda:N"),
        (with_(base_model="./no/such/dir"), "$.base_model: local path './no/such/dir' does not exist"),
        (with_(lora={"dropout": 1.5}), "$.lora.dropout: must be in [0, 1)"),
        (with_(compute={"fp16": True}), "$.compute.fp16: fp16 and bf16 cannot both be true"),
        (with_(lora={"enabled": False, "quantization": "8bit"}), "$.lora.quantization: quantized training needs LoRA"),
    ],
)
def test_validation_rules(data, message):
    cfg = TrainConfig.from_dict(data)
    with pytest.raises(ConfigError) as err:
        cfg.validate(load_registries())
    assert message in str(err.value)


def test_task_names_come_from_the_registries():
    from verifily_core import hookimpl
    from verifily_core.interfaces import Task

    class Regression(Task):
        name = "regression"

    class RegressionPlugin:
        plugin_name = "regression-plugin"

        @hookimpl
        def verifily_register_tasks(self, registry):
            registry.add(Regression())

    cfg = TrainConfig.from_dict(with_(task="regression"))
    assert cfg.problems(load_registries(make_plugin_manager(plugins=[RegressionPlugin()]))) == []
    only_regression = load_registries(make_plugin_manager(entrypoints=False, plugins=[RegressionPlugin()]))
    assert "$.task: unknown task 'sft'; available: regression" in TrainConfig.from_dict(BASE).problems(only_regression)


def test_quantization_requires_bitsandbytes(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    cfg = TrainConfig.from_dict(with_(lora={"quantization": "4bit"}))
    with pytest.raises(ConfigError, match=r"\$\.lora\.quantization: '4bit' needs bitsandbytes"):
        cfg.validate(load_registries())


def test_precedence_flags_over_overrides_over_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: sft\nbase_model: org/model\ndata_paths: {train: t.jsonl}\n"
                    "training: {learning_rate: 0.001, num_epochs: 2, batch_size: 4}\n")
    cfg = resolve_config(
        path=path,
        overrides=["training.learning_rate=5e-4", "training.num_epochs=5", "lora.target_modules=[q_proj,v_proj]"],
        flags={"training.learning_rate": 1e-4, "training.batch_size": None},
    )
    assert cfg.training.learning_rate == 1e-4  # flag beats override and file
    assert cfg.training.num_epochs == 5  # override beats file
    assert cfg.training.batch_size == 4  # file beats default; a None flag is ignored
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]


def test_dataset_flag_replaces_data_paths():
    cfg = resolve_config(data=BASE, flags={"dataset_version": "ds_x@v2"})
    assert cfg.dataset_version == "ds_x@v2" and cfg.data_paths is None


@pytest.mark.parametrize("text, expected", [
    ("training.learning_rate=1e-4", ("training.learning_rate", 1e-4)),
    ("eval.enabled=false", ("eval.enabled", False)),
    ("model.head=[512, 256]", ("model.head", [512, 256])),
    ("base_model=org/name", ("base_model", "org/name")),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["no_equals", "=3", "a..b=1", "1abc=2"])
def test_bad_override(text):
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override(text)


def test_unknown_override_key_is_rejected():
    with pytest.raises(ConfigError, match=r"\$\.training\.lerning_rate: unknown key \(did you mean 'learning_rate'\?\)"):
        resolve_config(data=BASE, overrides=["training.lerning_rate=0.1"])


def test_hash_ignores_output_location_and_name_but_not_hyperparameters():
    base = TrainConfig.from_dict(BASE)
    moved = resolve_config(data=BASE, flags={"output.dir": "elsewhere/", "output.name": "nice"})
    changed = resolve_config(data=BASE, flags={"training.learning_rate": 1e-3})
    assert base.to_hash() == moved.to_hash()
    assert base.to_hash() != changed.to_hash()
    assert base.to_hash().startswith("sha256:") and len(base.to_hash()) == 71


def test_hash_ignores_where_and_whether_the_run_is_pushed():
    base = TrainConfig.from_dict(BASE)
    pushed = TrainConfig.from_dict(with_(output={"push_to_hub": True, "hub_repo": "me/model", "hub_private": False}))
    assert base.to_hash() == pushed.to_hash() and pushed.problems() == []


@pytest.mark.parametrize("output, problem", [
    ({"push_to_hub": True}, "$.output.hub_repo: required when output.push_to_hub is true"),
    ({"push_to_hub": True, "hub_repo": ""}, "$.output.hub_repo: required when output.push_to_hub is true"),
    ({"hub_repo": "me/two/parts"}, "$.output.hub_repo: 'me/two/parts' is no Hub repo id"),
    ({"hub_repo": "me/-dash"}, "$.output.hub_repo: 'me/-dash' is no Hub repo id"),
    ({"hub_repo": "me/a..b"}, "$.output.hub_repo: 'me/a..b' is no Hub repo id"),
    ({"hub_repo": "me/model.git"}, "$.output.hub_repo: 'me/model.git' is no Hub repo id"),
])
def test_push_settings_are_validated(output, problem):
    problems = TrainConfig.from_dict(with_(output=output)).problems()
    assert any(p.startswith(problem) for p in problems), problems


def test_pushing_needs_a_lora_adapter():
    cfg = TrainConfig.from_dict(with_(output={"push_to_hub": True, "hub_repo": "me/m"}, lora={"enabled": False}))
    assert any(p.startswith("$.output.push_to_hub: pushing uploads the run's LoRA adapter") for p in cfg.problems())


def test_hash_is_independent_of_key_order():
    a = TrainConfig.from_dict({"task": "sft", "base_model": "m", "data_paths": {"train": "t"}, "seed": 1})
    b = TrainConfig.from_dict({"seed": 1, "data_paths": {"train": "t"}, "base_model": "m", "task": "sft"})
    assert a.to_hash() == b.to_hash()


def test_secrets_are_redacted_and_never_hashed():
    a = TrainConfig.from_dict(with_(task_options={"hub_token": "hf_secret1"}))
    b = TrainConfig.from_dict(with_(task_options={"hub_token": "hf_secret2"}))
    assert "hf_secret1" not in a.to_yaml()
    assert a.to_hash() == b.to_hash()
    assert redact({"x": {"api_key": "k", "n": 1}}) == {"x": {"api_key": "***", "n": 1}}


def test_round_trip_through_yaml(tmp_path):
    cfg = resolve_config(data=BASE, overrides=["lora.target_modules=[q_proj]", "training.max_steps=7"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    again = TrainConfig.from_yaml(path)
    assert attrs.asdict(again) == attrs.asdict(cfg)
    assert again.to_hash() == cfg.to_hash()


def test_yaml_errors_are_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: sft\n  base_model: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        resolve_config(path=path)
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config(path=tmp_path / "missing.yaml")


@attrs.define
class Head:
    num_layers: int = 1
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    hidden_dims: list[int] = attrs.field(factory=list)


@attrs.define
class Options:
    head: Head = attrs.field(factory=Head)


def test_plugins_structure_their_options_with_paths():
    from verifily_core.structuring import structure

    assert structure({"head": {"num_layers": 2, "hidden_dims": [8, 4]}}, Options).head.hidden_dims == [8, 4]
    with pytest.raises(ConfigError, match=r"^\$\.task_options\.head\.activation: expected one of relu, gelu, tanh, got 'swish'$"):
        structure({"head": {"activation": "swish"}}, Options, root="$.task_options")
    with pytest.raises(ConfigError, match=r"^\$\.task_options\.head\.hidden_dims\[1\]: expected int"):
        structure({"head": {"hidden_dims": [8, "x"]}}, Options, root="$.task_options")
    with pytest.raises(ConfigError, match=r"^\$\.task_options\.hed: unknown key \(did you mean 'head'\?\)$"):
        structure({"hed": {}}, Options, root="$.task_options")


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    from verifily_core.config_loading import read_config_file

    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: sft\ntraining:\n  num_epochs: 1\nseed: 1\ntraining:\n  batch_size: 2\n")
    with pytest.raises(ConfigError, match=r"c.yaml: line 5 invalid YAML: duplicate key 'training' \(lines 2 and 5\)"):
        read_config_file(cfg)
    cfg.write_text("task: sft\ntraining: {num_epochs: 1, num_epochs: 2}\n")
    with pytest.raises(ConfigError, match="duplicate key 'num_epochs'"):
        read_config_file(cfg)
    # a merge key followed by an own key is an intended override, not a duplicate
    cfg.write_text("base: &b {num_epochs: 1, batch_size: 2}\ntraining:\n  <<: *b\n  num_epochs: 3\n")
    assert read_config_file(cfg)["training"] == {"num_epochs": 3, "batch_size": 2}


def test_an_alias_bomb_and_a_huge_file_are_refused_in_one_line(tmp_path):
    from verifily_core.config_loading import read_config_file

    lines = ["task: sft", "eval:", "  metric_options:", '    a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"    a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(9))}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")  # 9**9 values once expanded
    with pytest.raises(ConfigError, match=r"bomb.yaml: more than 100000 values once YAML aliases are expanded"):
        read_config_file(bomb)
    huge = tmp_path / "huge.yaml"
    huge.write_text("task: sft\nnote: " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match=r"huge.yaml: larger than 1 MiB"):
        read_config_file(huge)


def test_validation_metrics_are_checked_against_the_task(tmp_path):
    from click.testing import CliRunner

    from verifily_core.cli import cli

    cfg = tmp_path / "c.yaml"
    base = "task: {task}\nbase_model: org/model\ndata_paths: {{train: t.jsonl}}\ntraining: {{validation_metrics: [{m}]}}\n"
    cfg.write_text(base.format(task="dpo", m="reward_accuracy"))
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--dry-run", "--no-data-check"])
    assert res.exit_code == 1 and "$.training.validation_metrics: task 'dpo' computes only the loss" in res.output
    cfg.write_text(base.format(task="sft", m="token_f1"))
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--dry-run", "--no-data-check"])
    assert res.exit_code == 1 and "'token_f1' needs prediction, which task 'sft' does not compute during training; " \
        "use one of sequence_accuracy, token_accuracy" in res.output
    cfg.write_text(base.format(task="classification", m="accuracyy"))
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--dry-run", "--no-data-check"])
    assert res.exit_code == 1 and "$.training.validation_metrics[0]: unknown metric 'accuracyy'" in res.output
    cfg.write_text(base.format(task="classification", m="token_f1"))
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--dry-run", "--no-data-check"])
    assert res.exit_code == 1 and "metric 'token_f1' is not a metric of task 'classification'" in res.output

# Concrete inputs the property tests (test_properties_config.py) found; each once ended in
# "unexpected <Error>" or a message of several lines.
NEST = "[" * 40 + "]" * 40


@pytest.mark.parametrize("body, message", [
    ("seed: 1" + "0" * 5000, r"line 4 invalid YAML: cannot read the value \(Exceeds the limit \(4300 digits\)"),
    ("seed: 0x" + "F" * 4000, r"line 4 invalid YAML: cannot read the value \(Exceeds the limit"),
    ("seed: 2001-02-30", r"line 4 invalid YAML: cannot read the value \(day is out of range for month\); quote it"),
    ("seed: !!int abc", r"line 4 invalid YAML: cannot read the value \(invalid literal for int"),
    ("seed: !!float abc", r"line 4 invalid YAML: cannot read the value \(could not convert string to float"),
    ("seed: !!int", r"line 4 invalid YAML: cannot read the value"),
    ("task_options: {x: " + "[" * 600 + "]" * 600 + "}", r"line 4 invalid YAML: nested more than 64 levels deep"),
    (f"eval:\n  metric_options:\n    a0: &a0 {NEST}\n    a1: {NEST[:40]}*a0{NEST[40:]}",
     r"nested more than 64 levels deep once YAML aliases are expanded"),
    ('task_options: {x: "\\ud800"}', r"line 4 invalid YAML: a string holds a lone surrogate escape"),
    ("\x08", r"line 4 invalid YAML: unacceptable character #x0008"),
    ("task_options: {d: 2001-01-01}", r"\$\.task_options\.d: expected a string, number, boolean, null, list or "
                                      r"mapping, got date datetime\.date\(2001, 1, 1\); quote it"),
    ("task_options: {s: !!set {a, b}}", r"\$\.task_options\.s: expected a string, .* got set"),
    ("task_options: {b: !!binary aGVsbG8=}", r"\$\.task_options\.b: expected a string, .* got bytes b'hello'"),
    ("task_options: {1: x, a: y}", r"\$\.task_options: key 1 \(int\) must be a string; quote it"),
    ("eval: {metric_options: {1: {}, a: {}}}", r"\$\.eval\.metric_options: key 1 \(int\) must be a string"),
    ("1: x", r"\$\.1: unknown key"),
    ("1: x\nz: y", r"\$\.z: unknown key; .* \(and 1 more problem\(s\)\)"),
    ("'a\\nb': 1", r"\$\.'a\\\\nb': unknown key"),
    ("seed: 1" + "0" * 100 + "\ntask_options: {t: " + "[" * 70 + "]" * 70 + "}", r"nested more than 64"),
])
def test_hostile_yaml_is_one_config_error_line(tmp_path, body, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: sft\nbase_model: org/m\ndata_paths: {train: t.jsonl}\n" + body + "\n")
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig.from_yaml(cfg).to_hash()
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("field, value, message", [
    ("base_model", "./" + "a" * 300, r"\$\.base_model: local path '\./a{300}' does not exist"),
    ("base_model", "a" * 300 + "/\0", r"\$\.base_model: 'a{300}/\\x00' is neither"),
    ("base_model", "~nosuchuser-verifily/m", r"\$\.base_model: local path '~nosuchuser-verifily/m' does not exist"),
    ("base_model", "org/model\n", r"\$\.base_model: 'org/model\\n' is neither"),
    ("compute", {"device": "cpu\n"}, r"\$\.compute\.device: expected auto, cpu, mps, cuda or cuda:N, got 'cpu\\n'$"),
    ("dataset_version", "ds@v1\n", r"\$\.dataset_version: expected 'id@version' .* got 'ds@v1\\n'$"),
    ("task", "sf\nt", r"\$\.task: unknown task 'sf\\nt'"),
    ("output", {"dir": "~nosuchuser-verifily/runs"}, r"\$\.output\.dir: '~nosuchuser-verifily/runs': no such user"),
])
def test_validation_messages_stay_one_line(field, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig.from_dict(with_(**{field: value})).validate(load_registries())
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("text, message", [
    ("seed=\udcff", r"\$\.seed: expected int, got string '\\udcff'"),  # an argv byte that is not UTF-8
    ("a\nb=1", r"^override 'a\\nb=1': expected section\.key=value"),
    ("task_options." + ".".join(["a"] * 70) + "=1", r"\$\.task_options(\.a)+: nested more than 64 levels deep"),
    ("training.num_epochs=" + "9" * 5000, r"\$\.training\.num_epochs: expected int, got string '9+\.\.\.$"),
])
def test_hostile_overrides_are_one_config_error_line(text, message):
    with pytest.raises(ConfigError, match=message) as err:
        resolve_config(data=BASE, overrides=[text]).to_hash()
    assert len(str(err.value).splitlines()) == 1


def test_fields_added_later_leave_the_hash_of_older_configs_alone():
    """Configs hash as they did before `group_by_length`, `dataloader_*`, `optimizations`,
    `report_to`, `attribution_checkpoints` and `tracking` existed (hashes pinned from that
    code), so older runs still verify; a field set away from its default does change the hash."""
    plain = {"task": "sft", "base_model": "m", "data_paths": {"train": "t.jsonl"}}
    tuned = {**plain, "training": {"learning_rate": 0.001, "batch_size": 4}, "lora": {"r": 4}}
    assert TrainConfig.from_dict(plain).to_hash() == \
        "sha256:8623f0ff69f183898c1ff169ba20c484043c297911606869dac8eaf9a253b75b"
    assert TrainConfig.from_dict(tuned).to_hash() == \
        "sha256:e3aa1d18820af3839b9b9ea7c21566bd0e6065988e9b8e946b3e69e41b51a6fe"
    for training in ({"group_by_length": True}, {"dataloader_persistent_workers": True},
                     {"optimizations": {"optimizer_type": "adamw_torch"}}):
        assert TrainConfig.from_dict({**plain, "training": training}).to_hash() != TrainConfig.from_dict(plain).to_hash()
    for training in ({"attribution_checkpoints": 3}, {"report_to": ["tensorboard"]}, {"dataloader_num_workers": 2},
                     {"optimizations": {"gradient_checkpointing": True}}):
        assert TrainConfig.from_dict({**plain, "training": training}).to_hash() == TrainConfig.from_dict(plain).to_hash()
