"""``training.optimizations``: schema, refusals before any model loads (one line naming the field,
exit 1), the mapping onto ``TrainingArguments``, and which settings enter the config hash."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from verifily_core.config import TrainConfig
from verifily_core.errors import ConfigError


def _config(tmp_path: Path, device: str = "cpu", lora: dict | None = None, **optimizations) -> Path:
    data = {"task": "sft", "base_model": "org/model", "data_paths": {"train": "train.jsonl"},
            "compute": {"device": device}, "training": {"optimizations": optimizations},
            "lora": lora or {}, "output": {"dir": str(tmp_path / "runs")}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _refused(verifily_cli, cfg: Path, field: str, *parts: str) -> str:
    res = verifily_cli("train", "--config", cfg, "--dry-run", "--no-data-check")
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith(f"Error: $.training.optimizations.{field}: "), lines[0]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("settings, field, part", [
    ({"use_amp": True, "amp_dtype": "fp16"}, "amp_dtype", "needs a CUDA GPU"),
    ({"enable_tf32": True}, "enable_tf32", "Ampere"),
    ({"attention_implementation": "flash_attention_2"}, "attention_implementation", "flash_attention_2"),
    ({"compile_mode": "max-autotune"}, "compile_mode", "use_compile=true"),
    ({"amp_dtype": "fp16"}, "amp_dtype", "use_amp=true"),
])
def test_a_setting_this_cpu_cannot_run_is_refused_naming_its_field(tmp_path, verifily_cli, settings, field, part):
    _refused(verifily_cli, _config(tmp_path, **settings), field, part)


def test_flash_attention_on_cpu_is_refused_for_the_device_when_flash_attn_is_installed(tmp_path, monkeypatch):
    import verifily_local.optimizations as opt

    real = importlib.util.find_spec
    monkeypatch.setattr(opt.importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else real(name, *a))
    cfg = TrainConfig.from_yaml(_config(tmp_path, attention_implementation="flash_attention_2"))
    problems = opt.optimization_problems(cfg)
    assert problems == ["$.training.optimizations.attention_implementation: flash_attention_2 runs on CUDA GPUs "
                        "from Ampere on; this run trains on cpu; use sdpa"]


def test_bnb_optimizers_without_bitsandbytes_are_refused_with_the_install_command(tmp_path, monkeypatch):
    import verifily_local.optimizations as opt

    real = importlib.util.find_spec
    monkeypatch.setattr(opt.importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    cfg = TrainConfig.from_yaml(_config(tmp_path, optimizer_type="adamw_bnb_8bit"))
    assert opt.optimization_problems(cfg) == [
        "$.training.optimizations.optimizer_type: adamw_bnb_8bit needs bitsandbytes, which is not installed; run: "
        "pip install 'verifily-train[qlora]'"]


def test_an_optimizer_failing_its_probe_step_is_refused(tmp_path, monkeypatch):
    import verifily_local.optimizations as opt

    def broken(name):
        def make(params, lr):
            raise RuntimeError("no kernel for this device\nsecond line")
        return make

    monkeypatch.setattr(opt, "_optimizer_class", broken)
    cfg = TrainConfig.from_yaml(_config(tmp_path, optimizer_type="adamw_torch_fused"))
    assert opt.optimization_problems(cfg) == [
        "$.training.optimizations.optimizer_type: adamw_torch_fused cannot run on cpu (no kernel for this device); "
        "use adamw_torch"]


def test_compile_without_a_cpp_compiler_is_refused(tmp_path, monkeypatch):
    import verifily_local.optimizations as opt

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(opt.shutil, "which", lambda name: None)
    cfg = TrainConfig.from_yaml(_config(tmp_path, use_compile=True))
    assert opt.optimization_problems(cfg)[0].startswith("$.training.optimizations.use_compile: torch.compile on CPU "
                                                         "needs a C++ compiler")


@pytest.mark.parametrize("settings", [
    {"optimizer_type": "adamw_torch_fused"}, {"optimizer_type": "adamw_bnb_8bit"}, {"optimizer_type": "paged_adamw_8bit"},
    {"optimizer_type": "paged_adamw_32bit"}, {"use_amp": True}, {"use_amp": False}, {"attention_implementation": "eager"},
    {"gradient_checkpointing": True}, {"use_compile": True, "compile_mode": "reduce-overhead"},
])
def test_what_this_cpu_runs_passes_the_dry_run(tmp_path, verifily_cli, settings):
    res = verifily_cli("train", "--config", _config(tmp_path, **settings), "--dry-run", "--no-data-check")
    assert res.exit_code == 0, res.output


def test_use_amp_and_compute_fp16_together_are_refused(tmp_path):
    data = yaml.safe_load(_config(tmp_path, use_amp=True).read_text())
    data["compute"]["fp16"], data["compute"]["bf16"] = True, False
    with pytest.raises(ConfigError, match=r"^\$\.compute\.fp16: training\.optimizations\.use_amp is set"):
        TrainConfig.from_dict(data).validate()


def test_an_unknown_value_names_the_field_and_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"\$\.training\.optimizations\.optimizer_type: expected one of adamw_torch, "):
        TrainConfig.from_dict({"task": "sft", "base_model": "o/m",
                               "training": {"optimizations": {"optimizer_type": "sgd"}}})


def test_settings_that_can_change_results_enter_the_config_hash_and_checkpointing_does_not():
    base = {"task": "sft", "base_model": "o/m", "data_paths": {"train": "t.jsonl"}}
    plain = TrainConfig.from_dict(base)
    # a config written before the section existed keeps its hash: defaults are left out
    assert "optimizations" not in plain.hashable_dict()["training"]
    for settings in ({"optimizer_type": "adamw_bnb_8bit"}, {"use_amp": True}, {"enable_tf32": True},
                     {"attention_implementation": "eager"}, {"use_compile": True}):
        changed = TrainConfig.from_dict({**base, "training": {"optimizations": settings}})
        assert changed.to_hash() != plain.to_hash(), settings
    checkpointed = TrainConfig.from_dict({**base, "training": {"optimizations": {"gradient_checkpointing": True}}})
    assert checkpointed.to_hash() == plain.to_hash()


def test_each_setting_reaches_the_trainer_arguments(tmp_path):
    from verifily_core.modeling import training_precision
    from verifily_local.optimizations import argument_values

    cfg = TrainConfig.from_yaml(_config(tmp_path, optimizer_type="paged_adamw_8bit", gradient_checkpointing=True,
                                        use_compile=True, compile_mode="max-autotune", use_amp=True))
    values = argument_values(cfg, "cpu")
    prefix = "activation_checkpointing" if "activation_checkpointing" in values else "gradient_checkpointing"
    assert values == {"optim": "paged_adamw_8bit", prefix: True, f"{prefix}_kwargs": {"use_reentrant": False},
                      "torch_compile": True, "torch_compile_mode": "max-autotune"}
    assert training_precision(cfg, "cpu") == ({"bf16": True, "fp16": False}, "bf16 mixed precision")
    tf32 = TrainConfig.from_yaml(_config(tmp_path, enable_tf32=True))
    assert argument_values(tf32, "cuda") == {"tf32": True}
    compiled = TrainConfig.from_yaml(_config(tmp_path, use_compile=True))
    assert argument_values(compiled, "cuda")["tf32"] is False  # the Trainer would turn tf32 on for compiled runs


def test_use_amp_decides_over_compute_and_unset_keeps_the_old_behaviour(tmp_path):
    from verifily_core.modeling import training_precision

    assert training_precision(TrainConfig.from_yaml(_config(tmp_path)), "cpu")[0] == {"bf16": False, "fp16": False}
    off = TrainConfig.from_yaml(_config(tmp_path, use_amp=False))
    assert training_precision(off, "cuda") == ({"bf16": False, "fp16": False},
                                               "fp32 (training.optimizations.use_amp=false)")


def test_checkpointing_defaults_to_on_for_a_quantized_base_on_a_gpu_only(tmp_path):
    from verifily_core.modeling import uses_gradient_checkpointing

    quantized = TrainConfig.from_yaml(_config(tmp_path, lora={"quantization": "4bit"}))
    assert uses_gradient_checkpointing(quantized, "cuda") and not uses_gradient_checkpointing(quantized, "cpu")
    assert not uses_gradient_checkpointing(TrainConfig.from_yaml(_config(tmp_path)), "cuda")
    off = TrainConfig.from_yaml(_config(tmp_path, lora={"quantization": "4bit"}, gradient_checkpointing=False))
    assert not uses_gradient_checkpointing(off, "cuda")
