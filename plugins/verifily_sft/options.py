"""``task_options`` of the ``sft`` task."""

from __future__ import annotations

from attrs import define

DEFAULT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
DEFAULT_TEMPLATE_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"


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

    def render(self, row: dict, tokenizer=None) -> str:
        """The prompt for a row (everything before the output)."""
        instruction, inp = row["instruction"], row.get("input") or ""
        if self.use_chat_template:
            user = f"{instruction}\n\n{inp}" if inp else instruction
            messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
            messages.append({"role": "user", "content": user})
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        template = self.prompt_template or (DEFAULT_TEMPLATE if inp else DEFAULT_TEMPLATE_NO_INPUT)
        return template.format(instruction=instruction, input=inp)
