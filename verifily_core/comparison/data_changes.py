"""What changed in the training data between two runs' dataset versions, per tag value.

Both versions are looked up in the dataset store the runs were trained from (``dataset_store``
of their ``config.yaml``, or ``$VERIFILY_DATASETS_DIR``/the default store) and diffed with
:func:`verifily_core.datasets.diff_versions`; only the ``train`` split is reported.
"""

from __future__ import annotations

from typing import Any

from verifily_core.comparison.evaluated import RunEval
from verifily_core.errors import VerifilyTrainError

KINDS = ("added", "removed", "changed", "retagged")


def training_data_changes(base: RunEval, other: RunEval, registries: Any) -> tuple[dict[str, Any] | None, str | None]:
    """``({"from", "to", "train": {kind: n}, "by_tag": {"source=human": {kind: n}}}, None)``,
    or ``(None, warning)`` when a version cannot be read.

    Runs on the same dataset version (or trained from ``data_paths``) give ``(None, None)``.
    """
    refs = (base.run.dataset.get("ref"), other.run.dataset.get("ref"))
    if None in refs or refs[0] == refs[1]:
        return None, None
    try:
        from verifily_core.datasets import DatasetStore, diff_versions

        a = DatasetStore(_store_of(base)).get(refs[0])
        b = DatasetStore(_store_of(other)).get(refs[1])
        diff = diff_versions(a, b, registries.tasks.get(base.task).row_input)
    except (VerifilyTrainError, OSError, ValueError) as exc:
        return None, f"training-data changes {refs[0]} -> {refs[1]} unavailable ({exc})"
    empty = dict.fromkeys(KINDS, 0)
    return {"from": refs[0], "to": refs[1], "train": diff["splits"].get("train", empty),
            "by_tag": diff["by_tag"].get("train", {})}, None


def _store_of(run: RunEval) -> Any:
    from verifily_core.config import TrainConfig
    from verifily_core.datasets import store_path

    try:
        configured = TrainConfig.from_yaml(run.path / "config.yaml").dataset_store
    except VerifilyTrainError:
        configured = None
    return store_path(None, configured)
