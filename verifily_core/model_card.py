"""Model cards: ``README.md`` in the Hugging Face model-card format (YAML front matter, then
Markdown) for a run's ``adapter/`` and ``model/`` folders and for ``verifily export``.

The card says what the model is and how it was made: base model, task, LoRA settings, the
dataset version and its content hash with the tag distribution of the training rows, the
training hyperparameters and metrics, the hash chain and the command that reproduces the run.
A run's own card is written before the run is sealed, so test metrics (computed after) are not
in it: ``verifily export`` writes a card that adds them, overall and per slice with intervals.
"""

from __future__ import annotations

from typing import Any, Mapping

import yaml


MAX_TAG_VALUES = 10


def render_card(*, name: str | None, config: Any, dataset: Mapping[str, Any], metrics: Mapping[str, Any],
                hashes: Mapping[str, str], tags: Mapping[str, int], library: str = "peft",
                eval_result: Any = None) -> str:
    """The card's text. It names no run id or time, so identical runs write identical cards.

    :param dataset: the run's dataset record (``ref``, ``content_hash``, ``files``...).
    :param hashes: ``config_hash``, ``data_hash``, ``env_hash``, ``reproducibility_hash``.
    :param tags: rows per ``key=value`` of the training split (see :func:`verifily_core.slices.tag_counts`).
    :param library: ``peft`` for an adapter, ``transformers`` for a merged model.
    :param eval_result: an :class:`~verifily_core.evaluation.result.EvalResult` to report.
    """
    lora, training = config.lora, config.training
    front = {"base_model": config.base_model, "library_name": library,
             "license": config.output.license or "unknown",
             "tags": ["verifily", config.task, *(["lora"] if lora.enabled else []),
                      *([lora.quantization] if lora.quantization != "none" else [])]}
    ref = dataset.get("ref") or "data_paths"
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
             f"# {name or f'{config.task} fine-tune of {config.base_model}'}", "",
             f"`{config.base_model}` fine-tuned for the `{config.task}` task with Verifily Train."
             + (f" LoRA r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}"
                + (f", base quantized to {lora.quantization}" if lora.quantization != "none" else "") + "."
                if lora.enabled else " Full fine-tuning."), "",
             "## Training data", "",
             f"- Dataset version: `{ref}`" + (f", content hash `{dataset['content_hash']}`"
                                              if dataset.get("content_hash") else ""),
             *[f"- {f.get('split')}: {f.get('num_rows')} rows" for f in dataset.get("files") or []
               if isinstance(f, Mapping) and f.get("num_rows") is not None]]
    if tags:
        lines += ["", "Training rows per tag value:", "", "| tag | rows |", "|---|---|"]
        by_key: dict[str, list[tuple[str, int]]] = {}
        for label, n in tags.items():
            by_key.setdefault(label.split("=", 1)[0], []).append((label, n))
        for key in sorted(by_key):
            values = sorted(by_key[key], key=lambda item: (-item[1], item[0]))
            lines += [f"| `{label}` | {n} |" for label, n in values[:MAX_TAG_VALUES]]
            if len(values) > MAX_TAG_VALUES:
                lines.append(f"| ({len(values) - MAX_TAG_VALUES} more {key} values) | |")
    lines += ["", "## Training", "", "| setting | value |", "|---|---|"]
    settings = {"learning rate": training.learning_rate, "epochs": training.num_epochs,
                "max steps": training.max_steps if training.max_steps > 0 else None,
                "batch size": training.batch_size, "gradient accumulation": training.gradient_accumulation_steps,
                "max sequence length": training.max_seq_length, "seed": config.seed,
                "LoRA target modules": lora.target_modules if lora.enabled else None}
    lines += [f"| {k} | {v} |" for k, v in settings.items() if v is not None]
    shown = {k: v for k, v in metrics.items()  # no timings: the card changes only with the model
             if isinstance(v, (int, float)) and not isinstance(v, bool) and "runtime" not in k}
    if shown:
        lines += ["", "| training metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in shown.items()]
    lines += ["", "## Evaluation", ""]
    if eval_result is None:
        lines.append("Test metrics are computed after the run is sealed: `verifily eval --run RUN_DIR` writes "
                     "them to the run's `eval/eval_results.json` (sealed by `eval/eval_hashes.json`).")
    else:
        lines += _eval_lines(eval_result)
    lines += ["", "## Reproducibility", "",
              *[f"- {k}: `{v}`" for k, v in hashes.items() if v],
              "- Verify the run: `verifily reproduce --run RUN_DIR --verify-only`",
              "- Re-create it: `verifily reproduce --run RUN_DIR --mode train` (RUN_DIR: the run's folder)", ""]
    return "\n".join(lines)


def _eval_lines(result: Any) -> list[str]:
    test = result.test_data or {}
    level = round(100 * float((result.confidence or {}).get("level") or 0.95))
    out = [f"On {result.num_examples} test rows" + (f" (`{test.get('dataset')}`, sha256 `{test.get('sha256')}`)"
                                                     if test.get("sha256") else "") + f", with {level}% bootstrap "
           "intervals. Slice metrics show correlation, not causation.", "",
           "| slice | n | " + " | ".join(result.metric_values) + " |",
           "|---|---|" + "---|" * len(result.metric_values)]

    def cells(values: Mapping[str, Any]) -> str:
        shown = []
        for name in result.metric_values:
            v = values.get(name)
            if v is None or v.value is None:
                shown.append("-")
            else:
                shown.append(f"{v.value:.4f}" + (f" [{v.ci_low:.3f}, {v.ci_high:.3f}]" if v.ci_low is not None else ""))
        return " | ".join(shown)

    out.append(f"| overall | {result.num_examples} | {cells(result.metric_values)} |")
    out += [f"| `{name}` | {s.n} | {cells(s.metrics)} |" for name, s in result.slice_results.items()]
    return out


def with_evaluation(card: str, eval_result: Any, library: str | None = None) -> str:
    """A run's card with its Evaluation section holding ``eval_result`` (test metrics overall
    and per slice), and the front matter's ``library_name`` set to ``library`` when given."""
    head, sep, rest = card.partition("## Evaluation\n")
    if not sep:
        return card
    _, sep2, tail = rest.partition("## Reproducibility")
    body = "\n".join(["", *_eval_lines(eval_result), "", ""])
    card = head + sep + body + (sep2 + tail if sep2 else "")
    if library:
        card = card.replace("library_name: peft\n", f"library_name: {library}\n", 1)
    return card

