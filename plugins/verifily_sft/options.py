"""``task_options`` of the ``sft`` task."""

from __future__ import annotations

import string

from attrs import define

from verifily_core.errors import ConfigError

DEFAULT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
DEFAULT_TEMPLATE_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"
PLACEHOLDERS = ("instruction", "input")


@define
class SFTOptions:
    """How rows become prompts.

    ``prompt_template`` uses ``{instruction}`` and ``{input}``; by default the input section is
    left out for rows without an input. ``use_chat_template`` renders the instruction and input
    as one user message with the tokenizer's chat template instead.
    """

    prompt_template: str | None = None
    use_chat_template: bool = False
    system_prompt: str | None = None

    def check(self) -> "SFTOptions":
        """Raise ConfigError (naming ``$.task_options.<field>``) for options that cannot work."""
        if self.use_chat_template and self.prompt_template is not None:
            raise ConfigError("$.task_options.prompt_template: not used with use_chat_template=true; set one of them")
        if self.system_prompt is not None and not self.use_chat_template:
            raise ConfigError("$.task_options.system_prompt: only used with use_chat_template=true")
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

    def render(self, row: dict, tokenizer=None) -> str:
        """The prompt for a row (everything before the output)."""
        instruction, inp = row["instruction"], row.get("input") or ""
        if self.use_chat_template:
            if not getattr(tokenizer, "chat_template", None):
                raise ConfigError("$.task_options.use_chat_template: the base model's tokenizer has no chat "
                                  "template; set use_chat_template=false to use the prompt template")
            user = f"{instruction}\n\n{inp}" if inp else instruction
            messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
            messages.append({"role": "user", "content": user})
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        template = self.prompt_template or (DEFAULT_TEMPLATE if inp else DEFAULT_TEMPLATE_NO_INPUT)
        return template.format(instruction=instruction, input=inp)
