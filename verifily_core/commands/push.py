"""``verifily push``: a completed LoRA run (its adapter, or merged) uploaded to a Hugging Face Hub model repo."""

from __future__ import annotations

import json

import click

from verifily_core.cli import GlobalState, verbose_option
from verifily_core.commands import format_option
from verifily_core.console import out
from verifily_core.exporting import DTYPES, MERGE_INTO


@click.command()
@click.option("--run", "run_path", required=True, help="Run directory (or run id under runs/).")
@click.option("--repo", "repo_id", required=True, metavar="NAMESPACE/NAME",
              help="Hub model repo to push to; created when missing.")
@click.option("--merge", is_flag=True, help="Push the merged standalone model instead of the adapter.")
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="float32", show_default=True,
              help="Weights' dtype of a merged model.")
@click.option("--merge-into", type=click.Choice(list(MERGE_INTO)), default="dequantized", show_default=True,
              help="A QLoRA run's merge: into the dequantized weights it trained on, or the base's original weights.")
@click.option("--public", is_flag=True, help="Create the repo public (default: private; an existing repo keeps its "
              "visibility).")
@click.option("--revision", metavar="BRANCH", help="Branch to commit to, created from main when missing [default: main].")
@click.option("--no-verify", is_flag=True, help="Push without first checking the run's files against hashes.json.")
@format_option(help="table for people; json prints the repo, commit and files pushed.")
@verbose_option
@click.pass_obj
def push(state: GlobalState, run_path: str, repo_id: str, merge: bool, dtype: str, merge_into: str, public: bool,
         revision: str | None, no_verify: bool, fmt: str) -> None:
    """Push a run's adapter (or, with --merge, the merged model) to a Hugging Face Hub model repo.

    The token is --hf-token or $HF_TOKEN, else the saved login (`hf auth login`). What is uploaded
    is the folder `verifily export` writes: with the model card and verifily_export.json.
    """
    from verifily_core.api import push_run

    result = push_run(run_path, repo_id, merge=merge, dtype=dtype, merge_into=merge_into, public=public,
                      revision=revision,
                      hf_token=state.hf_token, registries=state.registries, verify=not no_verify)
    if fmt == "json":
        out(json.dumps({"repo_id": result.repo_id, "repo_url": result.repo_url, "revision": result.revision,
                        "commit": result.commit_oid, "commit_url": result.commit_url, "files": list(result.files),
                        "run_id": result.run_id, "merged": result.merged}, indent=2))
        return
    out(f"Pushed {'the merged model' if result.merged else 'the adapter'} of run {result.run_id} to "
        f"{result.repo_url} ({len(result.files)} files)")
    out(f"  Commit: {result.commit_oid} on {result.revision} ({result.commit_url})")
