"""``verifily export``: a shareable folder from a completed LoRA run (its adapter, or merged)."""

from __future__ import annotations

import click

from verifily_core.cli import GlobalState, verbose_option
from verifily_core.console import out
from verifily_core.exporting import MERGE_INTO


@click.command()
@click.option("--run", "run_path", required=True, help="Run directory (or run id under runs/).")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="A new folder for the export.")
@click.option("--merge", is_flag=True, help="Merge the LoRA weights into the base: a standalone model folder.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="Weights' dtype of a merged model.")
@click.option("--merge-into", type=click.Choice(list(MERGE_INTO)), default="dequantized", show_default=True,
              help="A QLoRA run's merge: into the dequantized weights it trained on (its own outputs), or the "
                   "base's original weights.")
@click.option("--no-verify", is_flag=True, help="Export without first checking the run's files against hashes.json.")
@verbose_option
@click.pass_obj
def export(state: GlobalState, run_path: str, output: str, merge: bool, dtype: str, merge_into: str,
           no_verify: bool) -> None:
    """Export a run: its adapter and tokenizer, or with --merge a standalone model."""
    from verifily_core.api import export_run

    folder = export_run(run_path, output, merge=merge, dtype=dtype, merge_into=merge_into, hf_token=state.hf_token,
                        registries=state.registries, verify=not no_verify)
    out(f"Exported {'the merged model' if merge else 'the adapter'} of {run_path} to {folder}")
