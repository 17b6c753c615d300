"""``task_options`` of the ``dpo`` task (no heavy imports).

```yaml
task_options:
  beta: 0.1            # > 0: how far the policy may move from the reference
  loss_type: sigmoid   # sigmoid (DPO) | hinge (SLiC) | ipo (IPO)
```
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping

from attrs import define

from verifily_core.errors import ConfigError

ROOT = "$.task_options"
LossType = Literal["sigmoid", "hinge", "ipo"]


@define
class DPOOptions:
    """The dpo task's options, structured from ``config.task_options``.

    ``beta`` scales the implicit rewards and sets how strongly the policy is held to the
    reference; ``loss_type`` picks TRL's preference loss.
    """

    beta: float = 0.1
    loss_type: LossType = "sigmoid"

    def check(self) -> "DPOOptions":
        """Raise ConfigError (naming ``$.task_options.<field>``) for values that cannot work."""
        if not math.isfinite(self.beta) or self.beta <= 0:
            raise ConfigError(f"{ROOT}.beta: must be > 0, got {self.beta}")
        return self


def parse_options(options: Mapping[str, Any]) -> DPOOptions:
    """Structure and check ``task_options``; errors name ``$.task_options.<field>``.

    :raises ConfigError: one line naming the field, what was expected and what was found.
    """
    from verifily_core.structuring import structure

    return structure(dict(options), DPOOptions, root=ROOT).check()


def config_problems(config: Any) -> list[str]:
    """Problems of a dpo config visible without loading anything (for ``--dry-run``)."""
    import importlib.util

    out = []
    try:
        parse_options(config.task_options)
    except ConfigError as exc:
        out.append(str(exc))
    if not config.lora.enabled:
        out.append("$.lora.enabled: the dpo task trains a LoRA adapter (its reference model is the base model "
                   "with the adapter disabled); set lora.enabled: true")
    if importlib.util.find_spec("trl") is None:
        out.append("$.task: the dpo task needs TRL; install it with: pip install 'verifily-train[dpo]'")
    return out
