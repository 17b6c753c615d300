"""The qlora plugin's loading decisions: BitsAndBytesConfig, compute dtype on CPU, placement,
the device check, and the hooks (no training here; see test_qlora_training.py)."""

from __future__ import annotations

import logging

import pytest

from verifily_core.config_loading import resolve_config
from verifily_core.errors import ConfigError


def _config(tmp_path, quantization="4bit", dtype="bfloat16", **extra):
    data = {"task": "sft", "base_model": str(tmp_path), "data_paths": {"train": "x"},
            "lora": {"quantization": quantization, "bnb_4bit_compute_dtype": dtype}, **extra}
    return resolve_config(data=data)


def test_4bit_is_nf4_with_double_quantization_on_the_training_device(tmp_path):
    import torch

    from verifily_qlora.loading import init_kwargs

    kwargs = init_kwargs(_config(tmp_path, dtype="float32"), "cpu")
    qc = kwargs["quantization_config"]
    assert (qc.load_in_4bit, qc.load_in_8bit) == (True, False)
    assert (qc.bnb_4bit_quant_type, qc.bnb_4bit_use_double_quant) == ("nf4", True)
    assert qc.bnb_4bit_compute_dtype == torch.float32
    assert qc.llm_int8_skip_modules is None  # transformers' defaults keep lm_head unquantized
    assert kwargs["device_map"] == {"": "cpu"}


def test_8bit_is_llm_int8(tmp_path):
    from verifily_qlora.loading import init_kwargs

    qc = init_kwargs(_config(tmp_path, quantization="8bit"), "cpu")["quantization_config"]
    assert (qc.load_in_8bit, qc.load_in_4bit) == (True, False)


def test_classification_heads_stay_unquantized(tmp_path):
    from verifily_qlora.loading import quantization_config

    assert quantization_config(_config(tmp_path, task="classification"), "cpu").llm_int8_skip_modules == \
        ["classifier", "score", "pooler"]
    by_loader = _config(tmp_path, quantization="8bit", model={"loader": "sequence_classification"})
    assert quantization_config(by_loader, "cpu").llm_int8_skip_modules == ["classifier", "score", "pooler"]


def test_cpu_compute_dtype_policy(monkeypatch, caplog):
    import torch

    from verifily_qlora import loading

    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: True)
    assert loading.compute_dtype("bfloat16", "cpu") == torch.bfloat16
    assert loading.compute_dtype("float32", "cpu") == torch.float32
    with caplog.at_level(logging.WARNING, logger="verifily.qlora"):
        assert loading.compute_dtype("float16", "cpu") == torch.float32
    assert "float16 is very slow on CPU" in caplog.text
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: False)
    assert loading.compute_dtype("bfloat16", "cpu") == torch.float32


def test_device_map_names_one_device():
    from verifily_qlora.loading import device_map

    assert device_map("cpu") == {"": "cpu"}
    assert device_map("cuda:1") == {"": 1}
    assert device_map("mps") == {"": "mps"}


def test_device_check_passes_here_and_leaves_the_rng_alone():
    import torch

    from verifily_qlora.loading import check_device

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    check_device("4bit", "cpu")
    check_device("8bit", "cpu")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_a_build_that_cannot_run_on_the_device_is_a_one_line_config_error(monkeypatch, tmp_path, bits):
    import bitsandbytes as bnb

    from verifily_qlora.loading import init_kwargs

    def no_kernel(*args, **kwargs):
        raise NotImplementedError("Could not run 'bitsandbytes::gemm_4bit' with arguments from the 'CPU' backend.\nmore")

    monkeypatch.setattr(bnb.nn.Linear4bit if bits == "4bit" else bnb.nn.Linear8bitLt, "forward", no_kernel)
    with pytest.raises(ConfigError) as err:
        init_kwargs(_config(tmp_path, quantization=bits), "cpu")
    msg = str(err.value)
    assert msg.startswith(f"$.lora.quantization: bitsandbytes {bnb.__version__} cannot run {bits} layers on cpu")
    assert "from the 'CPU' backend" in msg and "\n" not in msg and "lora.quantization=none" in msg


def test_hooks_do_nothing_without_quantization(tmp_path):
    import verifily_qlora

    cfg = _config(tmp_path, quantization="none")
    assert verifily_qlora.verifily_model_init_kwargs(config=cfg, device="cpu") is None
    assert verifily_qlora.verifily_prepare_model(model=object(), config=cfg) is None


def test_the_bitsandbytes_check_is_the_plugins_validate_hook(monkeypatch, tmp_path):
    import importlib.util

    import verifily_qlora
    from verifily_core.plugins import make_plugin_manager

    hook = make_plugin_manager(entrypoints=False, plugins=[verifily_qlora]).hook.verifily_validate_config
    assert hook(config=_config(tmp_path, quantization="8bit")) == []  # bitsandbytes is installed here
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    assert hook(config=_config(tmp_path, quantization="8bit")) == [[
        "$.lora.quantization: '8bit' needs bitsandbytes, which is not installed; run: pip install 'verifily-train[qlora]'"
    ]]
    assert hook(config=_config(tmp_path, quantization="none")) == []


def test_hooks_are_registered_and_discovery_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys; from verifily_core.plugins import load_registries; regs = load_registries(); "
            "names = [i.plugin_name for i in regs.hook.verifily_prepare_model.get_hookimpls()]; "
            "assert 'qlora' in names, names; "
            "heavy = {'torch', 'transformers', 'peft', 'bitsandbytes'} & set(sys.modules); "
            "assert not heavy, heavy")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_prepare_refuses_a_model_that_was_not_quantized(verifily_tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    import verifily_qlora

    model = AutoModelForCausalLM.from_pretrained(verifily_tiny_llama_dir)
    with pytest.raises(ConfigError, match=r"^\$\.lora\.quantization: 4bit was requested but the model loader"):
        verifily_qlora.verifily_prepare_model(model=model, config=_config(tmp_path))
