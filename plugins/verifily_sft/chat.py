"""Conversations (``messages`` rows, and instruction rows with ``use_chat_template``) as token ids.

A conversation is rendered with a chat template: ``task_options.chat_template``, else the
tokenizer's, else (for ``messages`` rows only) :data:`FALLBACK_TEMPLATE`. The ids are built turn
by turn: the text before each assistant message (rendered with the generation prompt) and the
assistant message itself (what the template adds for it, end-of-turn marker included) are
tokenized as separate pieces, so the assistant's tokens are known exactly and a generation
prompt tokenizes as it did in training. A template that rewrites earlier turns when a later one
is added cannot be split this way and is refused.
"""

from __future__ import annotations

from typing import Any, Mapping

from verifily_core.errors import ConfigError

FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ '### ' + m['role'] | capitalize + ':\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}"
)
"""The template for ``messages`` rows when neither the options nor the tokenizer give one:
``### System:`` / ``### User:`` / ``### Assistant:`` headers, each message followed by a blank
line, an assistant message closed by the end-of-sequence token."""


def is_chat(row: Mapping[str, Any]) -> bool:
    """Whether a row is in the ``messages`` form."""
    return "messages" in row


def template(tokenizer: Any, options: Any, chat_rows: bool) -> str | None:
    """The chat template to render with (``None``: the tokenizer's own).

    :raises ConfigError: ``use_chat_template`` on instruction rows with a tokenizer that has no
        template and no ``task_options.chat_template``.
    """
    if options.chat_template:
        return options.chat_template
    if getattr(tokenizer, "chat_template", None):
        return None
    if chat_rows:
        return FALLBACK_TEMPLATE
    raise ConfigError("$.task_options.use_chat_template: the base model's tokenizer has no chat template; set "
                      "task_options.chat_template or use_chat_template=false to use the prompt template")


def conversation(row: Mapping[str, Any], options: Any) -> list[dict[str, str]]:
    """The row as messages: a ``messages`` row's own (``system_prompt`` first when it has no
    system message), or an instruction row as [system, user, assistant]."""
    if is_chat(row):
        messages = [dict(m) for m in row["messages"]]
    else:
        inp = row.get("input") or ""
        messages = [{"role": "user", "content": f"{row['instruction']}\n\n{inp}" if inp else row["instruction"]},
                    {"role": "assistant", "content": row["output"]}]
    if options.system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": options.system_prompt})
    return messages


def render(tokenizer: Any, messages: list[dict[str, str]], chat_template: str | None, generation_prompt: bool) -> str:
    """The text of ``messages`` under the template (``None``: the tokenizer's)."""
    return tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def causal_pieces(tokenizer: Any, messages: list[dict[str, str]], chat_template: str | None,
                  all_turns: bool) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, their labels, output ids) of a conversation that ends with an assistant
    message: the output is that last message; earlier assistant messages are labelled (learned)
    when ``all_turns``, every other prompt token is -100.

    :raises ConfigError: the template changes earlier text when a turn is added.
    """
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    ids: list[int] = []
    labels: list[int] = []
    done, out = "", []
    for k in turns:
        before = render(tokenizer, messages[:k], chat_template, True)
        after = render(tokenizer, messages[:k + 1], chat_template, False)
        for text, learn in ((before, False), (after, True)):
            if not text.startswith(done):
                raise ConfigError(f"$.task_options.chat_template: the chat template renders the turns before message "
                                  f"{k} differently once it is added, so the assistant's tokens cannot be told apart; "
                                  "use a template that only appends (task_options.chat_template)")
            piece = _ids(tokenizer, text[len(done):], first=not done)
            done = text
            if learn and k == turns[-1]:
                out = piece
            else:
                ids += piece
                labels += piece if learn and all_turns else [-100] * len(piece)
    return ids, labels, out


def _ids(tokenizer: Any, text: str, first: bool) -> list[int]:
    """Token ids of a piece; the first piece gets the tokenizer's special tokens unless the
    template already wrote the beginning-of-sequence token."""
    bos = getattr(tokenizer, "bos_token", None)
    special = first and not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])
