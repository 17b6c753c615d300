"""The ``dpo`` task's parts: row validation, options, metrics, and agreement with TRL on the
token ids it trains on and the rewards it logs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from verifily_core.config import TrainConfig
from verifily_core.errors import ConfigError, DataError
from verifily_dpo import DPOTask, preferred
from verifily_dpo.metrics import RewardAccuracy, RewardMargin
from verifily_dpo.testing import make_preference_rows

TASK = DPOTask()
USER = {"role": "user", "content": "Name a colour."}
GREEN = {"role": "assistant", "content": "green"}
STONE = {"role": "assistant", "content": "stone"}


def text(**fields):
    return {"prompt": "Name a colour.\n", "chosen": "green", "rejected": "stone", **fields}


def chat(**fields):
    return {"prompt": [USER], "chosen": GREEN, "rejected": STONE, **fields}


@pytest.mark.parametrize("row", [
    text(), text(tags={"source": "human"}, id="r1"), chat(), chat(chosen=[GREEN], rejected=[STONE]),
    chat(prompt=[{"role": "system", "content": "Be brief."}, USER]),
    chat(prompt=[USER, GREEN, {"role": "user", "content": "Another."}]),
])
def test_valid_rows(row):
    assert TASK.validate_row(row) is None


@pytest.mark.parametrize("row, problem", [
    ({"prompt": "p", "chosen": "a"}, "missing required field 'rejected'"),
    (text(score=1), "unknown field 'score' (allowed: chosen, id, prompt, rejected, tags)"),
    (text(prompt=3), "field 'prompt' must be a non-empty string or a list of chat messages"),
    (text(chosen="  "), "field 'chosen' must be a non-empty string when 'prompt' is a string"),
    (text(rejected=GREEN), "field 'rejected' must be a non-empty string when 'prompt' is a string"),
    (text(rejected="green"), "fields 'chosen' and 'rejected' are identical; a preference pair needs two different responses"),
    (chat(prompt=[]), "field 'prompt' is an empty list of messages"),
    (chat(prompt=["hi"]), "field 'prompt' message 0 must be a message object {\"role\": ..., \"content\": ...}"),
    (chat(prompt=[{"role": "user"}]), "field 'prompt' message 0 needs a string 'content'"),
    (chat(prompt=[{"role": "user", "content": "x", "name": "a"}]),
     "field 'prompt' message 0 has an unknown key 'name' (messages have 'role' and 'content')"),
    (chat(prompt=[USER, GREEN]),
     "field 'prompt' must not end with an assistant message (the responses are the assistant's turn)"),
    (chat(chosen="green"),
     "field 'chosen' must be an assistant message or a non-empty list of them when 'prompt' is a list of messages"),
    (chat(rejected=[]),
     "field 'rejected' must be an assistant message or a non-empty list of them when 'prompt' is a list of messages"),
    (chat(rejected=[STONE, USER]), "field 'rejected' must hold assistant messages, got role 'user'"),
    (chat(chosen={"role": "assistant", "content": 5}), "field 'chosen' needs a string 'content'"),
    (chat(rejected=[GREEN]), "fields 'chosen' and 'rejected' are identical; a preference pair needs two different responses"),
])
def test_row_problems_are_one_line_naming_the_field(row, problem):
    assert TASK.validate_row(row) == problem


def test_the_store_reports_row_problems_with_file_and_line(tmp_path):
    from verifily_core.datasets.rows import scan_file
    from verifily_core.testing import write_jsonl

    path = write_jsonl(tmp_path / "pairs.jsonl", [text(), text(), text(chosen="stone")])
    with pytest.raises(DataError) as err:
        scan_file(path, TASK.validate_row).raise_if_invalid()
    assert str(err.value).startswith(f"{path}:3: fields 'chosen' and 'rejected' are identical")
    assert err.value.exit_code == 2


def test_options_defaults_and_errors_name_the_field():
    opts = TASK.parse_options({})
    assert (opts.beta, opts.loss_type) == (0.1, "sigmoid")
    assert TASK.parse_options({"beta": 0.5, "loss_type": "ipo"}).beta == 0.5
    for options, message in (
        ({"beta": 0}, "$.task_options.beta: must be > 0, got 0.0"),
        ({"beta": "high"}, "$.task_options.beta: expected float, got string 'high'"),
        ({"loss_type": "kto"}, "$.task_options.loss_type: expected one of sigmoid, hinge, ipo, got 'kto'"),
        ({"betta": 0.2}, "$.task_options.betta: unknown key (did you mean 'beta'?)"),
    ):
        with pytest.raises(ConfigError) as err:
            TASK.parse_options(options)
        assert str(err.value) == message


def config(**sections) -> TrainConfig:
    return TrainConfig.from_dict({"task": "dpo", "base_model": "org/m", "data_paths": {"train": "t.jsonl"}, **sections})


def test_config_problems_at_plan_time():
    from verifily_core.plugins import load_registries

    regs = load_registries()
    assert config().problems(regs) == []
    problems = config(task_options={"beta": -1}, lora={"enabled": False}).problems(regs)
    assert "$.task_options.beta: must be > 0, got -1.0" in problems
    assert any(p.startswith("$.lora.enabled: the dpo task trains a LoRA adapter") for p in problems)


def test_only_causal_lms():
    assert TASK.model_auto_class("causal_lm") == "AutoModelForCausalLM"
    with pytest.raises(ConfigError, match=r"^\$\.model\.loader: task dpo trains causal language models"):
        TASK.model_auto_class("seq2seq")


def test_the_task_declares_what_the_core_reports():
    assert TASK.main_metrics[0] == "reward_accuracy" and TASK.resolve_metric_alias("main") == "reward_accuracy"
    assert TASK.resolve_metric_alias("margin") == "reward_margin"
    assert TASK.hard_example_scores == ("reward_margin",) and RewardMargin.higher_is_better
    assert TASK.input_fields() == ("prompt",) and TASK.reference(text()) == "chosen"


def records(margins, sources):
    return [{"prediction": preferred(m), "reference": "chosen", "tags": {"source": s},
             "scores": {"reward_margin": m, "chosen_reward": m / 2, "rejected_reward": -m / 2}}
            for m, s in zip(margins, sources)]


MARGINS = [0.5, -0.25, 0.0, 1.0, -2.0, 0.125]
SOURCES = ["human", "human", "human", "synthetic", "synthetic", "synthetic"]


def test_metrics_by_hand():
    recs = records(MARGINS, SOURCES)
    scores = [r["scores"] for r in recs]
    preds = [r["prediction"] for r in recs]
    assert preds == ["chosen", "rejected", "tie", "chosen", "rejected", "chosen"]
    assert RewardAccuracy().compute(preds, ["chosen"] * 6, [], scores=scores) == pytest.approx(3 / 6)  # a tie is wrong
    assert RewardMargin().compute(preds, ["chosen"] * 6, [], scores=scores) == pytest.approx(sum(MARGINS) / 6)
    with pytest.raises(Exception, match="needs the per-example score 'reward_margin'"):
        RewardAccuracy().compute(["chosen"], ["chosen"], [], scores=[{"loss": 1.0}])


def test_slices_intervals_and_hard_examples_in_the_evaluation_core():
    import verifily_dpo
    import verifily_slicers
    from verifily_core.evaluation import build_eval_result
    from verifily_core.plugins import load_registries, make_plugin_manager

    regs = load_registries(make_plugin_manager(entrypoints=False, plugins=[verifily_slicers, verifily_dpo]))
    metrics = {name: regs.metrics.get(name) for name in TASK.default_metrics}
    result = build_eval_result(records(MARGINS, SOURCES), TASK, metrics, slicers=regs.slicers, slice_by=["source"],
                               min_slice_size=1, hard_examples=2, resamples=200)
    assert result.metric_values["reward_accuracy"].value == pytest.approx(0.5)
    assert result.metric_values["reward_accuracy"].interval is not None
    assert result.slices["source=human"]["reward_accuracy"] == pytest.approx(1 / 3)
    assert result.slices["source=synthetic"]["reward_margin"] == pytest.approx((1.0 - 2.0 + 0.125) / 3)
    # The hardest pairs are the ones ranked wrong by the largest margin.
    assert [h["score"] for h in result.hard_examples] == [-2.0, -0.25]


def test_plugin_listing_and_dry_run_import_no_trl(tmp_path, verifily_subprocess):
    import subprocess
    import sys

    res = verifily_subprocess("plugins", "--format", "json")
    assert res.returncode == 0, res.stderr
    dpo = next(r for r in json.loads(res.stdout) if r["name"] == "dpo")
    assert dpo["registers"] == {"task": ["dpo"], "metric": ["reward_accuracy", "reward_margin"]}
    (tmp_path / "train.jsonl").write_text(json.dumps(text()) + "\n")
    (tmp_path / "c.yaml").write_text("task: dpo\nbase_model: org/m\ndata_paths: {train: train.jsonl}\n")
    probe = ("import sys\nfrom verifily_core.cli import cli\n"
             "try:\n    cli.main(args=['train', '--config', 'c.yaml', '--dry-run'], prog_name='verifily')\n"
             "except SystemExit as e:\n    code = e.code\n"
             "print(sorted(m for m in ('trl', 'datasets', 'torch', 'transformers') if m in sys.modules))\n"
             "sys.exit(code or 0)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- agreement with TRL on a tiny Llama --------------------------------------------------------


def peft_llama(verifily_tiny_llama_dir):
    """The tiny Llama with a fresh LoRA adapter, assembled as training assembles it."""
    from verifily_core.modeling import ModelSource, assemble_model
    from verifily_core.plugins import load_registries

    cfg = config(base_model=str(verifily_tiny_llama_dir), lora={"r": 4, "alpha": 8, "dropout": 0.0})
    built = assemble_model(ModelSource(cfg, load_registries()), "cpu", TASK.parse_options({}))
    return built.model, built.tokenizer


def trainer(tmp_path, verifily_tiny_llama_dir, rows, max_seq_length=48, **training):
    """A DPOTrainer built by the task from the local backend's own argument mapping."""
    from verifily_local.arguments import argument_values

    cfg = config(base_model=str(verifily_tiny_llama_dir), task_options={"beta": 0.2},
                 training={"max_seq_length": max_seq_length, "batch_size": 4, "gradient_accumulation_steps": 1,
                           "learning_rate": 0.01, "logging_steps": 1, **training}, eval={"batch_size": 64})
    job = SimpleNamespace(config=cfg)
    model, tokenizer = peft_llama(verifily_tiny_llama_dir)
    options = TASK.parse_options(cfg.task_options)
    feats, stats = TASK.prepare_features(rows, tokenizer, "causal_lm", cfg, options)
    args_class, args = argument_values(job, tmp_path, "cpu", True, "causal_lm")
    built = TASK.build_trainer(TASK.trainer_class(options, rows), args_class, args, job=job, model=model,
                               tokenizer=tokenizer, train_dataset=feats, eval_dataset=feats,
                               data_collator=TASK.data_collator(tokenizer, "causal_lm", model), callbacks=[],
                               options=options)
    return built, tokenizer, cfg, options, stats


@pytest.mark.parametrize("chat_form", [False, True], ids=["text", "chat"])
def test_token_ids_are_the_ones_trl_trains_on(tmp_path, verifily_tiny_llama_dir, chat_form):
    from trl import DPOConfig

    from verifily_dpo.data import tokenize

    rows = make_preference_rows(6, seed=2, chat=chat_form)
    built, tokenizer, _, _, stats = trainer(tmp_path, verifily_tiny_llama_dir, rows)
    assert isinstance(built.args, DPOConfig) and built.args.beta == 0.2 and built.args.max_length == 48
    assert built.args.learning_rate == 0.01 and not built.args.gradient_checkpointing and not built.args.bf16
    assert stats == {"rows": 6, "truncated": 0}
    for row, prepared in zip(rows, built.train_dataset):
        ours = tokenize(tokenizer, row)
        assert tokenizer.eos_token_id in ours["chosen_ids"]  # the response is closed, as in generation
        assert {k: prepared[k] for k in ours} == ours


def test_rewards_are_the_ones_trl_logs(tmp_path, verifily_tiny_llama_dir):
    """After two DPO steps, the evaluator's mean margin and accuracy equal TRL's own eval metrics."""
    rows = make_preference_rows(8, seed=2)
    built, tokenizer, cfg, options, _ = trainer(tmp_path, verifily_tiny_llama_dir, rows, max_steps=2)
    built.train()
    trl = built.evaluate()
    model = built.model.eval()
    preds = TASK.predict(model, tokenizer, rows, "causal_lm", cfg, options, batch_size=3, device="cpu")
    margins = [p["scores"]["reward_margin"] for p in preds]
    assert any(m != 0 for m in margins)
    assert sum(margins) / len(margins) == pytest.approx(trl["eval_rewards/margins"], abs=1e-5)
    assert sum(m > 0 for m in margins) / len(margins) == pytest.approx(trl["eval_rewards/accuracies"])
    chosen = [p["scores"]["chosen_reward"] for p in preds]
    assert sum(chosen) / len(chosen) == pytest.approx(trl["eval_rewards/chosen"], abs=1e-5)


def test_at_step_zero_the_policy_is_the_reference(verifily_tiny_llama_dir):
    model, tokenizer = peft_llama(verifily_tiny_llama_dir)
    rows = make_preference_rows(6, seed=2)
    preds = TASK.predict(model.eval(), tokenizer, rows, "causal_lm", config(), TASK.parse_options({}), 4, "cpu")
    assert [p["scores"]["reward_margin"] for p in preds] == [0.0] * 6
    assert {p["prediction"] for p in preds} == {"tie"}


def test_length_problems_are_counted_or_named(verifily_tiny_llama_dir):
    from verifily_core.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(verifily_tiny_llama_dir), config(base_model=str(verifily_tiny_llama_dir)))
    rows = make_preference_rows(4, seed=2)
    prompt_len = len(tokenizer(rows[0]["prompt"])["input_ids"])
    _, stats = TASK.prepare_features(rows, tokenizer, "causal_lm", config(training={"max_seq_length": prompt_len + 2}),
                                     TASK.parse_options({}))
    assert stats["truncated"] >= 1
    with pytest.raises(DataError, match=r"^preference row 1: the prompt alone is \d+ tokens, which fills "
                                        r"training\.max_seq_length=8"):
        TASK.prepare_features(rows, tokenizer, "causal_lm", config(training={"max_seq_length": 8}),
                              TASK.parse_options({}))
    mixed = [rows[0], make_preference_rows(1, chat=True)[0]]
    with pytest.raises(DataError, match=r"mix the text form \(row 1\) and the chat form \(row 2\)"):
        TASK.prepare_features(mixed, tokenizer, "causal_lm", config(), TASK.parse_options({}))


def test_length_grouping_is_refused_for_preference_pairs():
    from verifily_core.config_loading import resolve_config
    from verifily_core.plugins import load_registries

    cfg = resolve_config(data={"task": "dpo", "base_model": "m", "data_paths": {"train": "t"},
                               "training": {"group_by_length": True}})
    problems = cfg.problems(load_registries())
    assert any(p.startswith("$.training.group_by_length: task 'dpo' batches its training rows itself") for p in problems)
