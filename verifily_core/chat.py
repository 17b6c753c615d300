"""Chat messages in data rows: ``{"role": ..., "content": ...}`` objects, as the OpenAI format
writes them and chat templates read them. Tasks with a chat form share these checks, so every
task words a bad message the same way."""

from __future__ import annotations

from typing import Any, Collection, Sequence

ROLES = ("system", "user", "assistant")
"""The roles of a conversation: an optional leading system message, then user and assistant turns."""


def message_problem(message: Any, where: str, roles: Collection[str] | None = None) -> str | None:
    """The first problem with one message as a short phrase naming it by ``where``, or ``None``.

    A message is an object with a string ``role`` and a string ``content`` and nothing else;
    with ``roles`` the role must be one of them."""
    if not isinstance(message, dict):
        return f"{where} must be a message object {{\"role\": ..., \"content\": ...}}"
    if "from" in message and "value" in message and "role" not in message:
        return (f"{where} uses the keys 'from'/'value'; write messages as {{\"role\", \"content\"}} "
                "(roles user and assistant for human and gpt)")
    for key in ("role", "content"):
        if not isinstance(message.get(key), str):
            return f"{where} needs a string '{key}'"
    if not message["role"].strip():
        return f"{where} has an empty 'role'"
    if roles is not None and message["role"] not in roles:
        return f"{where} has the unknown role '{message['role']}' (roles: {', '.join(roles)})"
    unknown = sorted(set(message) - {"role", "content"})
    if unknown:
        return f"{where} has an unknown key '{unknown[0]}' (messages have 'role' and 'content')"
    return None


def conversation_problem(messages: Any, field: str = "messages") -> str | None:
    """The first problem with a conversation (the list in ``field``), or ``None``.

    A conversation is a non-empty list of messages with roles :data:`ROLES`, a system message
    only first, at least one assistant turn, and an assistant turn last (the reference that
    evaluation scores), whose content is not empty."""
    if isinstance(messages, str):
        return (f"field '{field}' must be a list of messages, not text (a CSV or TSV cell holds text; "
                "write conversations as JSONL, a JSON array or Parquet)")
    if not isinstance(messages, list):
        return f"field '{field}' must be a list of messages"
    if not messages:
        return f"field '{field}' is an empty conversation"
    for i, message in enumerate(messages):
        problem = message_problem(message, f"field '{field}' message {i}", ROLES)
        if problem:
            return problem
        if message["role"] == "system" and i:
            return f"field '{field}' message {i}: a system message may only come first"
    if not any(m["role"] == "assistant" for m in messages):
        return f"field '{field}' has no assistant turn (the model learns the assistant's messages)"
    if messages[-1]["role"] != "assistant":
        return (f"field '{field}' must end with an assistant message (the reference evaluation scores), "
                f"not a {messages[-1]['role']} message")
    if not messages[-1]["content"].strip():
        return f"field '{field}': the last assistant message is empty"
    return None


def assistant_turns(messages: Sequence[dict[str, str]]) -> list[int]:
    """The positions of the assistant messages of a conversation."""
    return [i for i, m in enumerate(messages) if m["role"] == "assistant"]
