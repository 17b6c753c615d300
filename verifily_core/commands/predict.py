"""``verifily predict`` and ``verifily generate``: try a trained run on rows or a prompt, with the
prompt rendering and prediction code of evaluation (nothing is scored or written)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from verifily_core.cli import GlobalState, verbose_option
from verifily_core.commands import format_option
from verifily_core.console import out

run_option = click.option("--run", "run_path", required=True, help="Run directory (or run id under runs/).")
device_option = click.option("--device", default="auto", show_default=True, help="auto, cuda, cuda:0, mps or cpu.")
no_verify_option = click.option("--no-verify", is_flag=True,
                                help="Load the run without first checking its files against hashes.json.")


def _read_rows(path: str) -> list[dict[str, Any]]:
    from verifily_core.datasets.rows import iter_jsonl

    return [row for _, row in iter_jsonl(path)]


def _fields(items: tuple[str, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--set {item!r}: write FIELD=VALUE (e.g. --set text='a fine film')")
        row[key] = value
    return row


def _print(results: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "json":
        out(json.dumps([{"index": i, **r} for i, r in enumerate(results)], indent=2, ensure_ascii=False))
        return
    for r in results:
        shown = {k: v for k, v in r["scores"].items() if k.startswith("p_") and isinstance(v, (int, float))}
        extra = "  " + "  ".join(f"{k}={v:.4f}" for k, v in shown.items()) if shown else ""
        for k, v in r["scores"].items():  # per-label values (a multi-label classifier's probabilities)
            if isinstance(v, dict) and v:
                extra += f"  {k}: " + " ".join(f"{name}={p:.4f}" for name, p in v.items())
        prediction = r["prediction"]
        if isinstance(prediction, list):  # a label set
            prediction = ", ".join(str(x) for x in prediction) if prediction else "(none)"
        out(f"{prediction}{extra}")


@click.command()
@run_option
@click.option("--input", "input_file", type=click.Path(dir_okay=False), help="JSONL rows to predict.")
@click.option("--set", "fields", multiple=True, metavar="FIELD=VALUE",
              help="One row given field by field (repeatable), e.g. --set text='a fine film'.")
@device_option
@no_verify_option
@format_option(help="table: one prediction per line (with its probability); json: predictions and scores.")
@verbose_option
@click.pass_obj
def predict(state: GlobalState, run_path: str, input_file: str | None, fields: tuple[str, ...], device: str,
            no_verify: bool, fmt: str) -> None:
    """Predict rows with a trained run (a classification run prints the label and its probability;
    a multi-label run the label set, its probability and every label's)."""
    from verifily_core.api import predict as do_predict

    if bool(input_file) == bool(fields):
        raise click.UsageError("give either --input FILE or --set FIELD=VALUE")
    rows = _read_rows(input_file) if input_file else [_fields(fields)]
    _print(do_predict(run_path, rows, device=device, hf_token=state.hf_token, registries=state.registries,
                      verify=not no_verify), fmt)


@click.command()
@run_option
@click.option("--prompt", help="The prompt: a row's instruction, or the user message for a run trained on conversations.")
@click.option("--context", help="The row's input field, for a run trained on instruction rows.")
@click.option("--input", "input_file", type=click.Path(dir_okay=False),
              help="JSONL rows (instruction rows, or {\"messages\"} ending with a user message) to generate for.")
@device_option
@no_verify_option
@format_option(help="table: one output per line; json: outputs with their rows' index.")
@verbose_option
@click.pass_obj
def generate(state: GlobalState, run_path: str, prompt: str | None, context: str | None, input_file: str | None,
             device: str, no_verify: bool, fmt: str) -> None:
    """Generate with a trained SFT run: --prompt, a JSONL file, one prompt per line piped in, or a
    chat on a terminal (a run trained on conversations remembers the turns; /reset forgets them)."""
    from verifily_core.api import predictor

    model = predictor(run_path, device=device, hf_token=state.hf_token, registries=state.registries,
                      verify=not no_verify)
    if prompt is not None or input_file or not sys.stdin.isatty():  # piped: one prompt per line
        rows = _read_rows(input_file) if input_file else [model.text_row(prompt, context)] if prompt is not None \
            else [model.text_row(line.strip(), context) for line in sys.stdin if line.strip()]
        _print(model(rows), fmt)
        return
    history: list[dict[str, str]] = []
    while True:  # on a terminal: until an empty line or end of input
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        if line == "/reset":
            history.clear()
            continue
        row = model.text_row(line, context)
        if "messages" in row and history:  # the conversation goes on: the turns so far, then this one
            row = {"messages": [*history, row["messages"][-1]]}
        result = model([row])
        _print(result, fmt)
        if "messages" in row:
            history = [*row["messages"], {"role": "assistant", "content": result[0]["prediction"]}]
