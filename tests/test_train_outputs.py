"""End-to-end local training, continued: full fine-tuning, the merged model, the training log,
terminal notes, out-of-memory failures and the run-written hook."""

from __future__ import annotations

import json

import pytest
from test_train_local import losses, make_config, only_run, train

from verifily_core import hookimpl

pytestmark = pytest.mark.slow


def test_full_fine_tuning_saves_the_whole_model_and_learns(tmp_path, verifily_tiny_llama_dir):
    res = train(make_config(tmp_path, verifily_tiny_llama_dir, learning_rate=0.002, num_epochs=2), "lora.enabled=false")
    assert res.exit_code == 0, res.output + res.stderr
    run = only_run(tmp_path)
    trace = losses(run)
    assert trace[-1] < 0.85 * trace[0], trace
    assert (run / "adapter" / "model.safetensors").is_file() and (run / "adapter" / "config.json").is_file()
    assert not (run / "adapter" / "adapter_config.json").exists()


def test_merged_model_equals_base_plus_adapter(tmp_path, verifily_tiny_llama_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    res = train(make_config(tmp_path, verifily_tiny_llama_dir, max_steps=3), "output.save_adapter_only=false")
    assert res.exit_code == 0, res.output + res.stderr
    run = only_run(tmp_path)
    hashes = json.loads((run / "hashes.json").read_text())["artifacts"]
    assert "model/model.safetensors" in hashes and "adapter/adapter_model.safetensors" in hashes
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    merged = AutoModelForCausalLM.from_pretrained(run / "model").eval()
    to_adapt = AutoModelForCausalLM.from_pretrained(verifily_tiny_llama_dir)
    adapted = PeftModel.from_pretrained(to_adapt, run / "adapter").eval()
    base = AutoModelForCausalLM.from_pretrained(verifily_tiny_llama_dir).eval()
    with torch.no_grad():
        m, a, b = (model(ids).logits for model in (merged, adapted, base))
    assert torch.allclose(m, a, atol=1e-4) and not torch.allclose(m, b, atol=1e-3)


def test_training_log_and_terminal_notes(tmp_path, verifily_tiny_llama_dir, caplog):
    res = train(make_config(tmp_path, verifily_tiny_llama_dir, max_steps=4, logging_steps=2, max_seq_length=24))
    assert res.exit_code == 0, res.output + res.stderr
    run = only_run(tmp_path)
    lines = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert [x["step"] for x in steps] == [2, 4]
    for x in steps:
        assert {"epoch", "lr", "grad_norm", "tokens_per_second", "tokens_seen"} <= set(x) and x["tokens_per_second"] > 0
    assert steps[1]["tokens_seen"] > steps[0]["tokens_seen"] > 0
    assert "on cpu, fp32 (bf16 mixed precision is used on CUDA only)" in res.stderr
    assert "step 2/4" in res.stderr and "eta" in res.stderr
    meta = json.loads((run / "run_meta.json").read_text())
    assert meta["metrics"]["truncated_rows"] > 0
    assert f"{meta['metrics']['truncated_rows']} of 48 train row(s) are longer than training.max_seq_length=24" in caplog.text


class OutOfMemory:
    plugin_name = "oom"

    @hookimpl
    def verifily_trainer_callbacks(self):
        import torch
        from transformers import TrainerCallback

        class Boom(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

        return [Boom()]


class Recorder:
    plugin_name = "recorder"

    def __init__(self) -> None:
        self.runs = []

    @hookimpl
    def verifily_run_written(self, run):
        self.runs.append((run, (run.path / "hashes.json").is_file()))


def test_out_of_memory_fails_the_run_with_advice(tmp_path, verifily_tiny_llama_dir):
    from verifily_core import TrainingError
    from verifily_core import train as api_train
    from verifily_core.plugins import load_registries, make_plugin_manager

    recorder = Recorder()
    regs = load_registries(make_plugin_manager(plugins=[OutOfMemory(), recorder]))
    with pytest.raises(TrainingError, match="out of memory .*lower training.batch_size") as err:
        api_train(str(make_config(tmp_path, verifily_tiny_llama_dir)), registries=regs)
    assert err.value.exit_code == 3 and recorder.runs == []
    meta = json.loads((only_run(tmp_path, ".failed") / "run_meta.json").read_text())
    assert meta["status"] == "failed" and "out of memory" in meta["error"]


def test_run_written_hook_sees_the_sealed_run(tmp_path, verifily_tiny_llama_dir):
    from verifily_core import train as api_train
    from verifily_core.plugins import load_registries, make_plugin_manager

    recorder = Recorder()
    regs = load_registries(make_plugin_manager(plugins=[recorder]))
    run = api_train(str(make_config(tmp_path, verifily_tiny_llama_dir, max_steps=1)), registries=regs)
    assert [(r.run_id, r.status, sealed) for r, sealed in recorder.runs] == [(run.run_id, "completed", True)]
    assert recorder.runs[0][0].path == only_run(tmp_path)


def test_lora_target_modules_list_and_unknown_names(tmp_path, verifily_tiny_llama_dir):
    res = train(make_config(tmp_path, verifily_tiny_llama_dir, max_steps=1), "lora.target_modules=[q_proj]")
    assert res.exit_code == 0, res.output + res.stderr
    adapter = json.loads((only_run(tmp_path) / "adapter" / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["q_proj"] and adapter["r"] == 8 and adapter["lora_alpha"] == 16
    res = train(make_config(tmp_path, verifily_tiny_llama_dir, max_steps=1), "lora.target_modules=[no_such_proj]")
    assert res.exit_code == 1 and "Error: $.lora.target_modules: Target modules {'no_such_proj'} not found" in res.stderr
    assert len(list((tmp_path / "runs").glob("*.failed"))) == 1
