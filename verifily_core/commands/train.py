"""``verifily train``: flags, dry-run plan and the success summary."""

from __future__ import annotations

import json
from typing import Any, get_args

import click

from verifily_core.cli import GlobalState, verbose_option
from verifily_core.commands import format_option
from verifily_core.config import Quantization
from verifily_core.console import fmt_duration, note, out, style


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--config", "config_path", default="train.yaml", show_default=True, help="Path to the train.yaml config.")
@click.option("--dataset", help="Dataset version ref, e.g. ds_abc123@v3 (overrides the config).")
@click.option("--base-model", help="HuggingFace model id or local path (overrides the config).")
@click.option("--task", help="A task that an installed plugin registers (see `verifily plugins`; overrides the config).")
@click.option("--output-dir", help="Directory to write run artifacts [config default: runs/].")
@click.option("--device", help="auto, cuda, cuda:0, mps or cpu [config default: auto].")
@click.option("--mode", help="Compute backend that an installed plugin registers (see `verifily plugins`) "
              "[config default: local].")
@click.option("--epochs", type=int, help="Override training.num_epochs.")
@click.option("--batch-size", type=int, help="Override training.batch_size.")
@click.option("--lr", "learning_rate", type=float, help="Override training.learning_rate.")
@click.option("--lora-r", type=int, help="Override lora.r.")
@click.option("--quantization", type=click.Choice(list(get_args(Quantization))), help="Override lora.quantization.")
@click.option("--seed", type=int, help="Random seed [config default: 42].")
@click.option("--report-to", metavar="NAMES", callback=lambda _c, _p, v: _names(v),
              help="Trainer integrations to report to, comma-separated (wandb, tensorboard, ..., or none); "
              "overrides training.report_to. Their credentials come from their own environment variables "
              "and are never written into the run.")
@click.option("--name", help="Human-readable run name.")
@click.option("--dry-run", is_flag=True, help="Validate the config and the data (every row, every slice key) and print "
              "the plan; load no model, do not train.")
@click.option("--no-data-check", is_flag=True, help="With --dry-run: validate the config only (fast; the dataset, its "
              "rows and slice keys are not read).")
@click.option("--check-batch", is_flag=True, help="With --dry-run: tokenize the data (length percentiles, truncation, "
              "padding), load the model and run its largest batch (forward, backward, optimizer step); report peak "
              "memory and time estimates, and exit 1 with advice when it would not fit.")
@click.option("--memory-limit", metavar="SIZE", envvar="VERIFILY_MEMORY_LIMIT",
              help="With --check-batch: the memory the batch may use, e.g. 12GiB or 500MB [env: VERIFILY_MEMORY_LIMIT; "
              "default: the GPU's memory, or the RAM available].")
@click.option("--nproc", type=click.IntRange(min=1), help="Training processes on this machine (data parallel through "
              "torch.distributed: gloo on CPU, nccl on CUDA); sets compute.num_processes and starts them "
              "[config default: 1].")
@click.option("--nnodes", type=click.IntRange(min=1), help="Machines of a multi-node run, each running this command "
              "with its --node-rank; sets compute.num_nodes [config default: 1].")
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True,
              help="This machine's rank in a multi-node run (0 writes the run).")
@click.option("--master-addr", metavar="HOST", help="Address of the node-rank 0 machine (static rendezvous).")
@click.option("--master-port", type=int, help="Port on --master-addr [default: 29500].")
@click.option("--rdzv-endpoint", metavar="HOST:PORT", help="A c10d rendezvous endpoint instead of --master-addr/--master-port.")
@click.option("--resume", "resume", metavar="RUN_PATH", help="Continue an interrupted run from its latest checkpoint.")
@format_option(help="table for people; json prints the plan (--dry-run) or run_meta.json.")
@verbose_option
@click.argument("overrides", nargs=-1, metavar="[SECTION.KEY=VALUE]...")
@click.pass_obj
def train(state: GlobalState, config_path: str, dry_run: bool, no_data_check: bool, check_batch: bool,
          memory_limit: str | None, resume: str | None, fmt: str, overrides: tuple[str, ...], node_rank: int,
          master_addr: str | None, master_port: int | None, rdzv_endpoint: str | None, **flags: Any) -> None:
    """Fine-tune a model with LoRA/QLoRA on a dataset version.

    Extra SECTION.KEY=VALUE arguments override the config file, e.g.
    `training.num_epochs=5 lora.target_modules=[q_proj,v_proj]`. Precedence:
    CLI flags > overrides > config file > defaults.
    """
    from verifily_core.api import train as do_train

    if no_data_check and not dry_run:
        raise click.UsageError("--no-data-check applies only with --dry-run (a real run always checks the data)")
    if check_batch and (not dry_run or no_data_check):
        raise click.UsageError("--check-batch applies only with --dry-run and reads the data (not with --no-data-check)")
    import sys

    from verifily_core.distributed import Launch, launched_here
    from verifily_core.errors import PushError

    # each worker re-runs this very command line; a worker (WORLD_SIZE set) trains instead of launching
    launch = Launch(command=tuple(sys.argv[1:]), node_rank=node_rank, master_addr=master_addr,
                    master_port=master_port, rdzv_endpoint=rdzv_endpoint)

    evals: list[Any] = []
    pushes: list[Any] = []
    try:
        run_or_plan = do_train(config_path, dry_run=dry_run, resume_from=resume, overrides=overrides,
                               hf_token=state.hf_token, registries=state.registries, on_eval=evals.append,
                               check_data=not no_data_check, on_push=pushes.append, check_batch=check_batch,
                               memory_limit=memory_limit if check_batch else None, launch=launch, **flags)
    except PushError as exc:
        if exc.run is not None:  # trained, sealed and evaluated; only the push failed (reported next)
            _print_results(exc.run, evals, fmt)
        raise
    if dry_run:
        _print_plan(run_or_plan.describe(), fmt)
        return
    if run_or_plan is None or launched_here():  # a worker other than rank 0, or rank 0 printed it
        return
    _print_results(run_or_plan, evals, fmt)
    for pushed in pushes:
        line = f"Pushed the adapter to {pushed.repo_url} (commit {pushed.commit_oid})"
        if fmt == "table":
            out("")
            out(line)
        else:
            note(line)


def _names(value: str | None) -> list[str] | None:
    """``--report-to a,b`` as a list (``None`` when not given)."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()] or ["none"]


def _print_results(run: Any, evals: list[Any], fmt: str) -> None:
    """The run's summary and, in a table, the evaluation that followed training."""
    _print_summary(run, fmt)
    if evals and fmt == "table":
        from verifily_core.evaluation import render_eval

        out("")
        out(render_eval(evals[0]))


def _print_plan(plan: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        out(json.dumps(plan, indent=2, sort_keys=True))
        return
    t, lo = plan["training"], plan["lora"]
    dataset = plan["dataset"]
    if isinstance(dataset, dict):
        dataset = ", ".join(f"{k}={v}" for k, v in dataset.items() if v)
    quant = f", quantization {lo['quantization']}" if lo["quantization"] != "none" else ""
    lora = f"r={lo['r']} alpha={lo['alpha']} dropout={lo['dropout']} targets={lo['target_modules']}{quant}"
    lines = [
        style("Plan (dry run, nothing trained)", bold=True),
        f"  Task:         {plan['task']}",
        f"  Base model:   {plan['base_model']} (loader: {plan['model_loader']})",
        f"  Dataset:      {dataset}",
        f"  Compute:      {plan['mode']} on {plan['device']}",
        f"  Epochs:       {t['num_epochs']}" + (f" (max_steps {t['max_steps']})" if t["max_steps"] > 0 else ""),
        f"  Batch size:   {t['batch_size']} x {t['gradient_accumulation_steps']} accumulation",
        f"  LR:           {t['learning_rate']:g} ({t['lr_scheduler']}, warmup {t['warmup_ratio']})",
        f"  Max seq len:  {t['max_seq_length']}",
        f"  LoRA:         {lora}" if lo["enabled"] else "  LoRA:         off (full fine-tuning)",
        f"  Seed:         {plan['seed']}",
        f"  Output:       {plan['output_dir']}" + (f" (name {plan['name']})" if plan["name"] else ""),
        *([f"  Push:         {plan['push']['repo']} ({'private' if plan['push']['private'] else 'public'} when "
           "created), after training"] if plan.get("push") else []),
        f"  Config hash:  {plan['config_hash']}",
        _data_check_line(plan["data_check"]),
        *_batch_check_lines(plan.get("batch_check")),
    ]
    out("\n".join(lines))


def _batch_check_lines(check: dict[str, Any] | None) -> list[str]:
    """The ``--check-batch`` report: token lengths per split, the largest batch's memory and time."""
    if check is None:
        return []
    from verifily_core.memory import fmt_bytes

    lines = [style("Batch check", bold=True)]
    for split, s in (check.get("splits") or {}).items():
        if s:
            lines.append(f"  {split + ':':<7} {s['rows']} rows, tokens p50 {s['p50']} p90 {s['p90']} p99 {s['p99']} "
                         f"max {s['max']}; {s['truncated']} truncated; padding waste {s['padding_waste']:.0%} "
                         "(random order, dynamic padding)")
    if not check.get("checked"):
        return lines + [f"  Not run: {check.get('reason', 'not checked')}."]
    b = check["largest_batch"]
    verdict = "fits" if check["fits"] else "does NOT fit"
    lines += [
        f"  Largest batch: {b['rows']} rows x {b['tokens']} tokens on {check['device']}: peak "
        f"{fmt_bytes(check['peak_memory'])} ({check['memory_kind']}) of {fmt_bytes(check['memory_limit'])} "
        f"({check['memory_limit_source']}): {verdict}" + (", close to the limit" if check["near_limit"] and check["fits"] else ""),
        f"  Time:          {check['seconds_largest_batch']:.2f}s for the largest batch; about "
        f"{check['seconds_per_step']:.2f}s per optimizer step, {fmt_duration(check['estimated_seconds'])} for "
        f"{check['total_steps']} steps (rough: evaluation and saving not included)",
    ]
    lines += [f"  Advice:        {a}" for a in check.get("advice") or []]
    return lines


def _data_check_line(check: dict[str, Any]) -> str:
    """One line saying what the dry run read of the data (or why it read nothing)."""
    if not check.get("checked"):
        reason = check.get("reason", "not checked")
        if reason.startswith("skipped (") and reason.endswith(")"):
            reason = reason[len("skipped ("):-1]
        return f"Data not checked ({reason}): the dataset, its rows and slice keys are read when training starts."
    rows = check["rows"]
    per_split = ", ".join(f"{split} {n}" for split, n in rows.items())
    line = (f"Data checked: {check['dataset']} ({check['content_hash']}), {sum(rows.values())} rows "
            f"({per_split}) hashed and valid")
    if check["slice_keys"]:
        where = check["slice_split"] or "the dataset"
        line += f"; slice keys {', '.join(check['slice_keys'])} found in {where}"
    return line + "."


def _print_summary(run: Any, fmt: str) -> None:
    if fmt == "json":
        out(json.dumps(run.to_meta(), indent=2, sort_keys=True))
        return
    m = run.metrics
    lines = [f"Run completed: {run.run_id}", f"  Duration:    {fmt_duration(run.duration_seconds or 0)}"]
    for key, label in (("train_loss", "Train loss"), ("eval_loss", "Eval loss")):
        if isinstance(m.get(key), (int, float)):
            lines.append(f"  {label + ':':<12} {m[key]:.3f}")
    lines += [
        f"  Artifacts:   {run.artifact_path.rstrip('/')}/",
        f"  Config hash: {run.config_hash}",
        f"  Data hash:   {run.data_hash}",
        f"  Repro hash:  {run.reproducibility_hash}",
        "",
        f"Run `verifily eval --run {run.artifact_path.rstrip('/')}/` for full evaluation"
        " (other slices, metrics or test data).",
    ]
    out("\n".join(lines))
