"""``task_options`` of the ``sft`` task."""

from __future__ import annotations

import string

from attrs import define

from verifily_core.errors import ConfigError

DEFAULT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
DEFAULT_TEMPLATE_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"
PLACEHOLDERS = ("instruction", "input")


TURNS = ("all", "last")
PACKING = ("auto", "on", "off")


@define
class SFTOptions:
    """How rows become prompts.

    Instruction rows: ``prompt_template`` uses ``{instruction}`` and ``{input}``; by default
    the input section is left out for rows without an input. ``use_chat_template`` renders the
    instruction and input as one user message (and the output as the assistant's reply) with
    the chat template instead. ``messages`` rows always use the chat template:
    ``chat_template`` (a Jinja template) replaces the tokenizer's, and ``assistant_turns``
    chooses the turns the loss covers (``all`` assistant messages, or the ``last`` one).
    ``system_prompt`` is the system message of conversations that have none. ``packing``
    (CausalLM training): ``auto`` trains on padding-free batches when the model keeps packed
    rows apart exactly (checked on the model), ``on`` requires that, ``off`` pads.
    """

    prompt_template: str | None = None
    use_chat_template: bool = False
    system_prompt: str | None = None
    chat_template: str | None = None
    assistant_turns: str = "all"
    packing: str = "auto"

    def check(self) -> "SFTOptions":
        """Raise ConfigError (naming ``$.task_options.<field>``) for options that cannot work."""
        if self.use_chat_template and self.prompt_template is not None:
            raise ConfigError("$.task_options.prompt_template: not used with use_chat_template=true; set one of them")
        if self.assistant_turns not in TURNS:
            raise ConfigError(f"$.task_options.assistant_turns: {self.assistant_turns!r} is not one of "
                              f"{', '.join(TURNS)}")
        if self.packing not in PACKING:
            raise ConfigError(f"$.task_options.packing: {self.packing!r} is not one of {', '.join(PACKING)}")
        if self.chat_template is not None and not self.chat_template.strip():
            raise ConfigError("$.task_options.chat_template: empty; give a Jinja chat template or leave it out")
        if self.prompt_template is not None:
            try:
                names = {name for _, name, _, _ in string.Formatter().parse(self.prompt_template) if name is not None}
            except ValueError as exc:
                raise ConfigError(f"$.task_options.prompt_template: {exc} (write literal braces as {{{{ and }}}})") from None
            unknown = sorted(names - set(PLACEHOLDERS))
            if unknown:
                raise ConfigError(f"$.task_options.prompt_template: unknown placeholder {{{unknown[0]}}} "
                                  "(use {instruction} and {input})")
            if "instruction" not in names:
                raise ConfigError("$.task_options.prompt_template: must contain {instruction}")
        return self

    def check_form(self, chat: bool) -> None:
        """Raise ConfigError for options that do not apply to the rows' form (``chat``: ``messages``)."""
        if chat and self.prompt_template is not None:
            raise ConfigError("$.task_options.prompt_template: the dataset's rows are conversations (messages), "
                              "rendered with the chat template; set task_options.chat_template instead")
        if not chat and not self.use_chat_template:
            for name in ("system_prompt", "chat_template"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"$.task_options.{name}: only used with use_chat_template=true or "
                                      "messages rows")

    def render(self, row: dict) -> str:
        """The prompt-template prompt of an instruction row (everything before the output)."""
        instruction, inp = row["instruction"], row.get("input") or ""
        template = self.prompt_template or (DEFAULT_TEMPLATE if inp else DEFAULT_TEMPLATE_NO_INPUT)
        return template.format(instruction=instruction, input=inp)
