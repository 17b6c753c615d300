"""The local backend's parts: devices and precision, loader choice, init kwargs, argument mapping,
config checks, checkpoints, the whole-run loss of a resumed run, error translation."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from verifily_core import hookimpl
from verifily_core.config import TrainConfig
from verifily_core.errors import ConfigError, TrainingError
from verifily_core.modeling import ModelSource, choose_loader, init_kwargs, precision_flags, raise_training_error
from verifily_core.modeling import resolve_device
from verifily_core.plugins import load_registries, make_plugin_manager
from verifily_sft import SFTTask


def config(base: str = "org/model", **sections) -> TrainConfig:
    data = {"task": "sft", "base_model": base, "data_paths": {"train": "train.jsonl"}, **sections}
    return TrainConfig.from_dict(data)


def test_precision_falls_back_to_fp32_on_cpu_with_a_reason():
    assert precision_flags("cpu", bf16=True, fp16=False) == (
        {"bf16": False, "fp16": False}, "fp32 (bf16 mixed precision is used on CUDA only)")
    assert precision_flags("cpu", bf16=False, fp16=True)[1] == "fp32 (fp16 mixed precision is used on CUDA only)"
    assert precision_flags("mps", bf16=False, fp16=False) == ({"bf16": False, "fp16": False}, "fp32")


def test_explicit_devices_must_exist():
    import torch

    assert resolve_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda"
        with pytest.raises(ConfigError, match=r"^\$\.compute\.device: 'cuda:1' is not supported; .*CUDA_VISIBLE_DEVICES"):
            resolve_device("cuda:1")
    else:
        assert resolve_device("auto") in ("cpu", "mps")
        with pytest.raises(ConfigError, match=r"^\$\.compute\.device: 'cuda' requested but CUDA is not available"):
            resolve_device("cuda")


def test_auto_loader_follows_the_model_config(verifily_tiny_llama_dir, verifily_tiny_t5_dir):
    regs = load_registries()
    assert choose_loader(ModelSource(config(str(verifily_tiny_llama_dir)), regs)).name == "causal_lm"
    assert choose_loader(ModelSource(config(str(verifily_tiny_t5_dir)), regs)).name == "seq2seq"
    forced = config(str(verifily_tiny_t5_dir), model={"loader": "causal_lm"})
    assert choose_loader(ModelSource(forced, regs)).name == "causal_lm"


class PickSeq2Seq:
    plugin_name = "picker"

    @hookimpl
    def verifily_select_model_loader(self, task, model_config):
        return "seq2seq"


def test_a_plugin_answer_wins_over_the_builtin_choice(verifily_tiny_llama_dir):
    regs = load_registries(make_plugin_manager(plugins=[PickSeq2Seq()]))
    assert choose_loader(ModelSource(config(str(verifily_tiny_llama_dir)), regs)).name == "seq2seq"


class Kwargs:
    def __init__(self, name, answer):
        self.plugin_name, self.answer = name, answer

    @hookimpl
    def verifily_model_init_kwargs(self, config, device):
        return self.answer


def test_init_kwargs_of_all_plugins_are_merged_and_a_clash_is_an_error():
    regs = load_registries(make_plugin_manager(plugins=[Kwargs("a", {"x": 1}), Kwargs("b", {"y": 2})]))
    assert init_kwargs(ModelSource(config(), regs), "cpu") == {"x": 1, "y": 2}
    regs = load_registries(make_plugin_manager(plugins=[Kwargs("a", {"x": 1}), Kwargs("b", {"x": 2})]))
    with pytest.raises(ConfigError, match="two plugins both set the model loading argument 'x'"):
        init_kwargs(ModelSource(config(), regs), "cpu")


def test_every_training_field_reaches_the_trainer_arguments(tmp_path):
    from transformers import Seq2SeqTrainingArguments

    from verifily_local.arguments import training_arguments

    cfg = config(training={"num_epochs": 2, "batch_size": 3, "gradient_accumulation_steps": 5, "learning_rate": 1e-3,
                           "lr_scheduler": "linear", "warmup_ratio": 0.1, "weight_decay": 0.2, "max_grad_norm": 0.5,
                           "eval_steps": 7, "save_steps": 14, "logging_steps": 2, "max_steps": 30,
                           "early_stopping_patience": 2, "group_by_length": True},
                 eval={"batch_size": 4}, seed=9)
    args = training_arguments(SimpleNamespace(config=cfg), tmp_path, "cpu", True, "causal_lm")
    got = {k: getattr(args, k) for k in (
        "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
        "warmup_steps", "weight_decay", "max_grad_norm", "eval_steps", "save_steps", "logging_steps", "max_steps",
        "per_device_eval_batch_size", "seed", "data_seed", "load_best_model_at_end", "metric_for_best_model",
        "bf16", "fp16", "train_sampling_strategy")}
    assert got == {"num_train_epochs": 2, "per_device_train_batch_size": 3, "gradient_accumulation_steps": 5,
                   "learning_rate": 1e-3, "warmup_steps": 0.1, "weight_decay": 0.2, "max_grad_norm": 0.5,
                   "eval_steps": 7, "save_steps": 14, "logging_steps": 2, "max_steps": 30,
                   "per_device_eval_batch_size": 4, "seed": 9, "data_seed": 9, "load_best_model_at_end": True,
                   "metric_for_best_model": "eval_loss", "bf16": False, "fp16": False,
                   "train_sampling_strategy": "group_by_length"}
    assert args.lr_scheduler_type.value == "linear" and args.get_warmup_steps(100) == 10
    no_val = training_arguments(SimpleNamespace(config=cfg), tmp_path, "cpu", False, "seq2seq")
    assert isinstance(no_val, Seq2SeqTrainingArguments)
    assert training_arguments(SimpleNamespace(config=config()), tmp_path, "cpu", False, "causal_lm") \
        .train_sampling_strategy == "random"
    assert no_val.eval_strategy.value == "no" and not no_val.load_best_model_at_end


def test_local_config_checks():
    regs = load_registries()
    problems = config(training={"early_stopping_patience": 2, "eval_steps": 10, "save_steps": 15}).problems(regs)
    assert any(p.startswith("$.training.save_steps: must be a multiple of training.eval_steps (10)") for p in problems)
    merged = config(lora={"quantization": "4bit"}, output={"save_adapter_only": False}).problems(regs)
    assert any(p.startswith("$.output.save_adapter_only: a merged model cannot be saved") for p in merged)


def test_only_complete_checkpoints_are_resumed(tmp_path):
    from verifily_local.backend import latest_checkpoint

    assert latest_checkpoint(tmp_path / "none") is None
    for step, complete in ((4, True), (8, True), (12, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")


def _checkpoint(folder, step, manifest=True):
    from verifily_local.checkpoints import write_checkpoint_manifest

    path = folder / f"checkpoint-{step}"
    (path / "sub").mkdir(parents=True)
    (path / "optimizer.pt").write_bytes(b"o" * 4096)
    (path / "sub" / "adapter.safetensors").write_bytes(b"a" * 100)
    (path / "trainer_state.json").write_text("{}")
    if manifest:
        write_checkpoint_manifest(path)
    return path


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_naming_the_file(tmp_path, caplog):
    """Issue 13: a truncated optimizer.pt in the newest checkpoint is named, and the one before is used."""
    from verifily_local.backend import latest_checkpoint

    _checkpoint(tmp_path, 4)
    newest = _checkpoint(tmp_path, 8)
    assert latest_checkpoint(tmp_path) == str(newest)
    with open(newest / "optimizer.pt", "r+b") as fh:
        fh.truncate(1000)
    with caplog.at_level("WARNING"):
        assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert "checkpoint-8" in caplog.text and "optimizer.pt" in caplog.text and "4096" in caplog.text
    assert "checkpoint-4" in caplog.text  # says which one it resumes from instead


def test_a_checkpoint_file_changed_in_place_or_missing_is_named(tmp_path, caplog):
    from verifily_local.checkpoints import check_checkpoint

    path = _checkpoint(tmp_path, 4)
    assert check_checkpoint(path) is None
    (path / "sub" / "adapter.safetensors").write_bytes(b"b" * 100)  # same size, other bytes
    assert "sub/adapter.safetensors" in check_checkpoint(path) and "sha256" in check_checkpoint(path)
    (path / "sub" / "adapter.safetensors").unlink()
    assert check_checkpoint(path) == "sub/adapter.safetensors is missing"
    (path / "verifily_checkpoint.json").write_text("{not json")
    assert "verifily_checkpoint.json" in check_checkpoint(path)


def test_no_usable_checkpoint_is_a_training_error_naming_each(tmp_path):
    from verifily_local.backend import latest_checkpoint

    for step in (4, 8):
        (_checkpoint(tmp_path, step) / "optimizer.pt").write_bytes(b"")
    with pytest.raises(TrainingError) as err:
        latest_checkpoint(tmp_path)
    message = str(err.value)
    assert err.value.exit_code == 3 and "\n" not in message
    assert "checkpoint-8: optimizer.pt" in message and "checkpoint-4: optimizer.pt" in message
    assert "without --resume" in message


def test_checkpoints_without_a_manifest_are_complete_with_their_trainer_state(tmp_path):
    """Checkpoints written before manifests existed: trainer_state.json (written last) marks them complete."""
    from verifily_local.backend import latest_checkpoint

    _checkpoint(tmp_path, 4)
    old = _checkpoint(tmp_path, 8, manifest=False)
    assert latest_checkpoint(tmp_path) == str(old)
    (old / "trainer_state.json").unlink()  # cut short by a kill: skipped quietly, as before
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")


def test_whole_run_loss_of_a_resumed_run():
    from verifily_local.callbacks import whole_run_loss

    # steps 1-4 logged as two windows (means 3.0 over 3 steps, 2.0 over 1), resumed at 4; this session
    # trained steps 5-10 with mean 1.0; a line logged after the checkpoint (step 6) belongs to this session.
    history = [{"loss": 3.0, "step": 3}, {"eval_loss": 9.0, "step": 4}, {"loss": 2.0, "step": 4},
               {"loss": 1.0, "step": 6}]
    assert whole_run_loss(history, 4, 10, 1.0) == pytest.approx((9.0 + 2.0 + 6.0) / 10)
    assert whole_run_loss(history, 0, 10, 1.5) == 1.5


def test_out_of_memory_becomes_a_training_error_with_advice():
    import torch

    with pytest.raises(TrainingError) as err:
        raise_training_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert err.value.exit_code == 3
    assert "out of memory" in str(err.value) and "training.batch_size" in str(err.value)
    with pytest.raises(TrainingError, match=r"^training failed: RuntimeError: boom"):
        raise_training_error(RuntimeError("boom\nmore"))


def test_log_lines_after_the_checkpoint_are_dropped(tmp_path):
    from verifily_local.callbacks import JsonlLogCallback

    path = tmp_path / "train_log.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (2, 4, 6)))
    JsonlLogCallback(path).drop_after(4)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [2, 4]


def test_checkpoints_close_the_log_window_and_none_is_written_after_the_last_step():
    from transformers import TrainerControl

    from verifily_local.callbacks import CheckpointCallback

    def decide(step, should_save, load_best=False):
        control = TrainerControl(should_save=should_save)
        args, state = SimpleNamespace(load_best_model_at_end=load_best), SimpleNamespace(global_step=step, max_steps=10)
        CheckpointCallback().on_step_end(args, state, control)
        return control.should_save, control.should_log

    assert decide(4, True) == (True, True)
    assert decide(5, False) == (False, False)
    assert decide(10, True) == (False, False)
    assert decide(10, True, load_best=True) == (True, True)


def test_default_build_trainer_is_the_trainer_of_the_mapped_arguments(tmp_path, verifily_tiny_llama_dir):
    from transformers import AutoModelForCausalLM, Trainer

    from verifily_core.interfaces import Task
    from verifily_local.arguments import argument_values, training_arguments

    job = SimpleNamespace(config=config(training={"max_steps": 3, "learning_rate": 1e-3}, seed=4))
    args_class, values = argument_values(job, tmp_path, "cpu", False, "causal_lm")
    model = AutoModelForCausalLM.from_pretrained(str(verifily_tiny_llama_dir))
    collate, features = (lambda feats: feats), [{"input_ids": [1, 2]}]
    trainer = Task.build_trainer(SimpleNamespace(), Trainer, args_class, values, job=job, model=model, tokenizer=None,
                                 train_dataset=features, eval_dataset=None, data_collator=collate, callbacks=[],
                                 options=None)
    assert type(trainer) is Trainer and trainer.model is model and trainer.data_collator is collate
    assert trainer.train_dataset is features and trainer.eval_dataset is None
    assert trainer.args.to_dict() == training_arguments(job, tmp_path, "cpu", False, "causal_lm").to_dict()


class ProbeTask(SFTTask):
    """The ``sft`` task under another name, recording what the backend hands ``build_trainer``."""

    name = "sft_probe"
    seen: dict = {}

    def build_trainer(self, trainer_class, args_class, args, **pieces):
        self.seen.update(trainer_class=trainer_class, args_class=args_class, args=dict(args), **pieces)
        return super().build_trainer(trainer_class, args_class, args, **pieces)


class ProbePlugin:
    plugin_name = "probe"

    @hookimpl
    def verifily_register_tasks(self, registry):
        registry.add(ProbeTask())


@pytest.mark.slow
def test_the_local_backend_builds_its_trainer_through_the_task(tmp_path, verifily_tiny_llama_dir):
    from transformers import Trainer, TrainingArguments

    from verifily_core import api
    from verifily_core.testing import make_sft_rows, write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", make_sft_rows(6, seed=1))
    cfg = {"task": "sft_probe", "base_model": str(verifily_tiny_llama_dir), "data_paths": {"train": str(train)},
           "training": {"max_steps": 1, "batch_size": 2, "gradient_accumulation_steps": 1, "max_seq_length": 48},
           "lora": {"r": 4, "alpha": 8}, "eval": {"enabled": False}, "output": {"dir": str(tmp_path / "runs")}}
    run = api.train(cfg, registries=load_registries(make_plugin_manager(plugins=[ProbePlugin()])))
    seen = ProbeTask.seen
    assert seen["trainer_class"] is Trainer and seen["args_class"] is TrainingArguments
    assert seen["args"]["max_steps"] == 1 and seen["args"]["output_dir"].startswith(str(tmp_path / "runs"))
    assert seen["job"].config.task == "sft_probe" and seen["job"].job_id == run.run_id
    assert len(seen["train_dataset"]) == 6 and seen["eval_dataset"] is None
    assert seen["tokenizer"].pad_token_id is not None and seen["options"].use_chat_template is False
    assert {"JsonlLogCallback", "ProgressCallback"} <= {type(c).__name__ for c in seen["callbacks"]}
    assert run.status == "completed" and (run.path / "adapter" / "adapter_model.safetensors").is_file()
