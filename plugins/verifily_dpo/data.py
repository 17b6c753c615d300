"""Preference rows: validation, the form TRL trains on, and their tokenization.

A row is ``{"prompt", "chosen", "rejected", "tags"?, "id"?}`` in one of two forms:

* text: all three are non-empty strings; the end-of-sequence token is appended to each
  response when it does not end with it already;
* chat: ``prompt`` is a list of ``{"role", "content"}`` messages (its last one not from the
  assistant) and ``chosen``/``rejected`` are an assistant message or a list of them; the base
  model's chat template renders them.

The token ids are those of TRL's ``DPOTrainer`` (the response starts where the tokenized prompt
and the tokenized prompt + response part), so evaluation scores exactly what training saw.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from verifily_core.chat import message_problem
from verifily_core.errors import ConfigError, DataError

FIELDS = ("prompt", "chosen", "rejected")
RESPONSES = ("chosen", "rejected")
ALLOWED = (*FIELDS, "tags", "id")


def _chat_problem(row: Mapping[str, Any]) -> str | None:
    prompt = row["prompt"]
    if not prompt:
        return "field 'prompt' is an empty list of messages"
    for i, message in enumerate(prompt):
        problem = message_problem(message, f"field 'prompt' message {i}")
        if problem:
            return problem
    if prompt[-1]["role"] == "assistant":
        return "field 'prompt' must not end with an assistant message (the responses are the assistant's turn)"
    for name in RESPONSES:
        value = row[name]
        messages = [value] if isinstance(value, dict) else value
        if not isinstance(messages, list) or not messages:
            return (f"field '{name}' must be an assistant message or a non-empty list of them when 'prompt' "
                    "is a list of messages")
        for i, message in enumerate(messages):
            problem = message_problem(message, f"field '{name}'" + (f" message {i}" if isinstance(value, list) else ""))
            if problem:
                return problem
            if message["role"] != "assistant":
                return f"field '{name}' must hold assistant messages, got role '{message['role']}'"
    return None


def row_problem(row: Mapping[str, Any]) -> str | None:
    """The first problem with one preference row as a short phrase, or ``None``."""
    for name in FIELDS:
        if name not in row:
            return f"missing required field '{name}'"
    unknown = sorted(set(row) - set(ALLOWED))
    if unknown:
        return f"unknown field '{unknown[0]}' (allowed: {', '.join(sorted(ALLOWED))})"
    prompt = row["prompt"]
    if isinstance(prompt, list):
        problem = _chat_problem(row)
    elif isinstance(prompt, str):
        problem = next((f"field '{name}' must be a non-empty string when 'prompt' is a string"
                        for name in FIELDS if not isinstance(row[name], str) or not row[name].strip()), None)
    else:
        problem = "field 'prompt' must be a non-empty string or a list of chat messages"
    if problem:
        return problem
    if responses(row, "chosen") == responses(row, "rejected"):
        return "fields 'chosen' and 'rejected' are identical; a preference pair needs two different responses"
    return None


def is_chat(row: Mapping[str, Any]) -> bool:
    """Whether a (valid) row is in the chat form."""
    return isinstance(row["prompt"], list)


def responses(row: Mapping[str, Any], name: str) -> Any:
    """A response in the form TRL trains on: a string, or a list of messages."""
    value = row[name]
    return [value] if isinstance(value, dict) else value


def trl_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``prompt``/``chosen``/``rejected`` columns of a row for TRL (tags and id left out)."""
    return {"prompt": row["prompt"], "chosen": responses(row, "chosen"), "rejected": responses(row, "rejected")}


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        add_generation_prompt=generation_prompt)["input_ids"]
    return list(ids)


def tokenize(tokenizer: Any, row: Mapping[str, Any]) -> dict[str, list[int]]:
    """``prompt_ids``, ``chosen_ids`` and ``rejected_ids`` of a row, as ``DPOTrainer`` makes them."""
    if is_chat(row):
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("task dpo: chat-form rows need a base model whose tokenizer has a chat template; "
                              "this one has none (write the rows as plain strings instead)")
        prompt = list(row["prompt"])
        prompt_ids = _chat_ids(tokenizer, prompt, True)
        full = {name: _chat_ids(tokenizer, prompt + responses(row, name), False) for name in RESPONSES}
    else:
        eos = tokenizer.eos_token or ""
        prompt_ids = list(tokenizer(text=row["prompt"])["input_ids"])
        full = {name: list(tokenizer(text=row["prompt"] + _with_eos(row[name], eos))["input_ids"])
                for name in RESPONSES}
    cut = min(_common_prefix(prompt_ids, full[name]) for name in RESPONSES)
    return {"prompt_ids": prompt_ids[:cut], **{f"{name}_ids": full[name][cut:] for name in RESPONSES}}


def _with_eos(text: str, eos: str) -> str:
    return text if not eos or text.endswith(eos) else text + eos


def check_lengths(rows: Sequence[Mapping[str, Any]], tokenizer: Any, max_length: int) -> tuple[list[dict], int]:
    """Tokenize rows; return the token ids and how many rows are cut to ``max_length``.

    :raises DataError: for a row whose prompt alone fills ``max_length`` (nothing of its
        responses would be trained on, and TRL would drop it silently).
    """
    out, truncated = [], 0
    for i, row in enumerate(rows, 1):
        ids = tokenize(tokenizer, row)
        n_prompt = len(ids["prompt_ids"])
        if n_prompt >= max_length:
            raise DataError(f"preference row {i}: the prompt alone is {n_prompt} tokens, which fills "
                            f"training.max_seq_length={max_length}; shorten the prompt or raise training.max_seq_length")
        truncated += n_prompt + max(len(ids["chosen_ids"]), len(ids["rejected_ids"])) > max_length
        out.append(ids)
    return out, truncated


def check_form(rows: Iterable[Mapping[str, Any]], where: str = "preference rows") -> None:
    """:raises DataError: when rows mix the text and the chat form (TRL trains on one form);
    ``where`` names them in the message (stops at the first row of the second form)."""
    first: dict[bool, int] = {}
    for i, row in enumerate(rows, 1):
        first.setdefault(is_chat(row), i)
        if len(first) > 1:
            raise DataError(f"{where} mix the text form (row {first[False]}) and the chat form "
                            f"(row {first[True]}); write every row of a dataset in one form")
