"""An example third-party plugin: the ``response_length`` metric, the ``first_letter`` slicer, the
``subprocess`` compute backend and the ``verifily longest`` command."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from verifily_core import hookimpl
from verifily_core.interfaces import ComputeBackend, Metric, Slicer


class ResponseLength(Metric):
    """Mean length of the predictions in characters (any task)."""

    name = "response_length"
    higher_is_better = False

    def compute(self, predictions: Sequence[Any], references: Sequence[Any],
                rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> float:
        """Mean ``len(str(prediction))``; 0.0 for no examples."""
        if not predictions:
            return 0.0
        return sum(len(str(p)) for p in predictions) / len(predictions)


class FirstLetter(Slicer):
    """Slices rows by the first letter of a tag value: ``source^=h``."""

    name = "first_letter"

    def slices(self, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, list[int]]:
        """One slice per (key, first letter of the value)."""
        out: dict[str, list[int]] = {}
        for key in keys:
            for i, row in enumerate(rows):
                value = str((row.get("tags") or {}).get(key, "?"))
                out.setdefault(f"{key}^={value[:1]}", []).append(i)
        return out


@hookimpl
def verifily_register_metrics(registry: Any) -> None:
    """Register ``response_length``."""
    registry.add(ResponseLength())


@hookimpl
def verifily_register_slicers(registry: Any) -> None:
    """Register ``first_letter``."""
    registry.add(FirstLetter())


class SubprocessBackend(ComputeBackend):
    """Runs the job with the ``local`` backend in a child process (isolation, a time limit)."""

    name = "subprocess"
    timeout_s = 3600

    def run(self, job: Any) -> Any:
        """Write the resolved config, train it in a child ``verifily train``, return the run."""
        import json
        import subprocess
        import sys
        import tempfile

        import yaml

        from verifily_core.errors import TrainingError
        from verifily_core.runs import load_run

        config = job.config.to_dict()
        config["compute"]["mode"] = "local"
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            yaml.safe_dump(config, fh)
        child = subprocess.run(
            [sys.executable, "-c", "from verifily_core.cli import main; main()", "train", "--config", fh.name,
             "--format", "json", "eval.enabled=false"],
            capture_output=True, text=True, timeout=self.timeout_s,
        )
        if child.returncode != 0:
            last = (child.stderr.strip().splitlines() or ["no output"])[-1]
            raise TrainingError(f"subprocess backend: child exited with {child.returncode}: {last}")
        return load_run(json.loads(child.stdout)["artifact_path"])


@hookimpl
def verifily_register_backends(registry: Any) -> None:
    """Register ``subprocess``."""
    registry.add(SubprocessBackend())


@hookimpl
def verifily_register_commands(cli: Any) -> None:
    """Add ``verifily longest --run R [-n N]``: the longest predictions of an evaluated run."""
    import click

    @cli.command(name="longest")
    @click.option("--run", "run_path", required=True, type=click.Path(file_okay=False),
                  help="An evaluated run directory.")
    @click.option("-n", "count", default=3, show_default=True, help="How many predictions to show.")
    def longest(run_path: str, count: int) -> None:
        """Show the longest predictions of an evaluated run, with their tags."""
        from pathlib import Path

        from verifily_core.errors import EvalError
        from verifily_core.evaluation import read_jsonl

        path = Path(run_path) / "eval" / "predictions.jsonl"
        if not path.is_file():
            raise EvalError(f"{path}: no predictions; run `verifily eval --run {run_path}` first")
        rows = sorted(read_jsonl(path), key=lambda r: (-len(str(r["prediction"])), r["index"]))
        for row in rows[:count]:
            tags = ", ".join(f"{k}={v}" for k, v in sorted((row.get("tags") or {}).items()))
            click.echo(f"{len(str(row['prediction'])):>5}  row {row['index']}  [{tags}]  {row['prediction']}")
