"""The local training loop: load, (quantize), LoRA, HF Trainer, write the run.

Imported only when a local run starts (it imports torch, transformers and peft).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # optional CPU kernels it cannot find

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import Seq2SeqTrainer, Trainer  # noqa: E402

from verifily_core import distributed
from verifily_core.errors import RunLocked, TrainingError, VerifilyTrainError, is_full_disk
from verifily_core.files import read_json, write_json
from verifily_core.modeling import (
    assemble_model, quiet_libraries, raise_training_error, resolve_device, training_precision,
)
from verifily_core.plugins import describe_plugins
from verifily_core.run_writer import FAILED, RunWriter
from verifily_core.runs import RUN_META, Run
from verifily_local.arguments import argument_values
from verifily_local.callbacks import (
    CheckpointCallback, ExitAtStepForTests, JsonlLogCallback, NonFiniteLossCallback, ProgressCallback,
    SnapshotCallback, eval_metrics, whole_run_loss,
)
from verifily_local.checkpoints import latest_checkpoint
from verifily_local.optimizations import describe as describe_optimizations
from verifily_local.optimizations import prepare_training_model

log = logging.getLogger("verifily.local")


class _Rows(torch.utils.data.Dataset):
    def __init__(self, features: list[dict[str, Any]]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]


def run_local(job: Any, resume_dir: Path | None = None) -> Run | None:
    """Train ``job`` on this machine and return the sealed run.

    Any failure, from creating the run directory to sealing it, marks the run failed
    (``<run_id>.failed``) and raises :class:`TrainingError` (or the project error it was); a
    file system error (a full disk) names the file and what to do. In a distributed run every rank
    trains (the Trainer's DDP) but only rank 0 writes the run directory and returns the run; the
    other ranks return ``None`` and write nothing there but their RNG state in checkpoints.
    """
    main = distributed.world().is_main
    quiet_libraries()
    device = resolve_device(job.config.compute.device)
    _, precision = training_precision(job.config, device)
    writer = RunWriter(job, device, resume_dir=resume_dir)
    # chosen before the run is touched: no usable checkpoint leaves it as it was (exit 3)
    checkpoint = latest_checkpoint(writer.checkpoints) if resume_dir is not None else None
    try:
        if main:
            writer.start(describe_plugins(job.registries))
            verb = "resuming" if resume_dir is not None else "training"
            world = distributed.world()
            procs = f" x {world.world_size} processes ({writer.distributed['backend']})" if world.is_distributed else ""
            print(f"Run {job.job_id}: {verb} {job.base_model} ({job.task}) on {device}{procs}, {precision}",
                  file=sys.stderr)
        distributed.barrier()  # the run directory exists before any rank trains
        metrics = _train(job, writer, device, resume_dir is not None, checkpoint)
        return writer.complete(metrics) if main else None
    except RunLocked:  # another process owns the run: leave it as it is
        raise
    except BaseException as exc:
        if not main:  # rank 0 (or the launcher) records the failure
            raise
        if distributed.world().is_distributed and distributed.peer_lost(exc):
            distributed.hold_stops()
            writer.fail(f"{distributed.PEER_LOST} ({type(exc).__name__})")
            if os.environ.get(distributed.ENV_RUN_ID):  # the --nproc launcher names the rank that ended
                raise distributed.QuietWorkerError(distributed.EXIT_STOPPED) from exc
            raise TrainingError(f"{distributed.PEER_LOST}; the run is marked failed: {writer.path}") from exc
        _fail(writer, exc)
        raise


def _fail(writer: RunWriter, exc: BaseException) -> None:
    """Mark the run failed for ``exc`` (raising the project error it becomes)."""
    try:
        raise exc
    except VerifilyTrainError as exc:
        writer.fail(str(exc))
        raise
    except KeyboardInterrupt:
        writer.fail("interrupted")
        raise
    except Exception as exc:  # device errors, OOM, a full disk, library errors: a failed run, exit 3
        try:
            raise_training_error(exc, writer.path)
        except TrainingError as err:
            writer.fail(str(err))
            resumable = writer.path.name.endswith(FAILED) and (writer.path / RUN_META).is_file()
            if resumable and is_full_disk(exc, writer.path):
                raise TrainingError(f"{err} (the run is kept as {writer.path}; once there is room, continue it "
                                    f"with --resume {writer.path})") from exc
            raise


def _train(job: Any, writer: RunWriter, device: str, resuming: bool, checkpoint: str | None) -> dict[str, Any]:
    cfg, regs = job.config, job.registries
    task = regs.tasks.get(cfg.task)
    options = task.parse_options(cfg.task_options)
    assembled = assemble_model(job, device, options)
    writer.record_model(assembled.describe(), commit=getattr(getattr(assembled.model, "config", None), "_commit_hash", None))
    model, tokenizer, kind = assembled.model, assembled.tokenizer, assembled.kind
    prepare_training_model(model, cfg, device)
    if cfg.training.streaming:
        train_rows, train_feats, stats = _streamed_train(job, task, options, kind, tokenizer, checkpoint)
    else:
        train_rows = job.dataset.read_rows("train")
        train_feats, stats = task.prepare_features(train_rows, tokenizer, kind, cfg, options)
        _report_truncation("train", stats, cfg.training.max_seq_length)
    val_feats = None
    if job.dataset.has_split("val"):
        val_feats, vstats = task.prepare_features(job.dataset.read_rows("val"), tokenizer, kind, cfg, options)
        _report_truncation("val", vstats, cfg.training.max_seq_length)
    trainer, guard, log_file = _trainer(job, writer, device, task, options, kind, model, tokenizer,
                                        train_rows, train_feats, val_feats)
    if resuming and checkpoint is None:
        log.warning("no complete checkpoint in %s; training from the start", writer.checkpoints)
    first_step = int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0
    if resuming and distributed.world().is_main:
        log_file.drop_after(first_step)
    if cfg.training.streaming and checkpoint:
        # the Trainer restores the random state before it starts the data loader, whose seed draw then
        # shifts every dropout mask of the uninterrupted run: restore it again at the first row
        train_feats.on_start = lambda: trainer._load_rng_state(checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    if guard.bad:
        raise TrainingError(f"non-finite training: {guard.bad}; lower training.learning_rate or check the data")
    if cfg.training.streaming:  # rows of the stream trained on, over the whole run; truncation of this session's
        from verifily_local.streaming import rows_trained

        stats = {"rows": rows_trained(trainer.args, result.global_step), "truncated": train_feats.stats["truncated"]}
        _report_truncation("streamed train", train_feats.stats, cfg.training.max_seq_length)
    metrics: dict[str, Any] = {
        "train_loss": whole_run_loss(trainer.state.log_history, first_step, result.global_step, result.training_loss),
        "train_steps": result.global_step, "train_rows": stats["rows"], "truncated_rows": stats["truncated"],
        "train_runtime_s": result.metrics.get("train_runtime"),
    }
    if val_feats is not None:
        metrics.update(_final_eval(trainer))
        metrics["val_truncated_rows"] = vstats["truncated"]
    if distributed.world().is_main:
        _save(trainer, tokenizer, writer.path, task, job)
    return metrics


def _streamed_train(job: Any, task: Any, options: Any, kind: str, tokenizer: Any,
                    checkpoint: str | None) -> tuple[Any, Any, dict[str, Any]]:
    """``training.streaming``: the train split as a re-iterable stream of rows (for the task's
    ``trainer_class``) and as lazily prepared features starting at the checkpoint's row
    (:mod:`verifily_local.streaming`). The first row is prepared here, so that what the task
    sets up on the tokenizer (a chat template) is in place before training and saved with the run."""
    from verifily_core.datasets.stream import SplitRows, stream_for
    from verifily_local.streaming import StreamedFeatures, read_stream_state, world

    cfg = job.config
    rank, size = world()
    stream = stream_for(job.dataset, "train", cfg.seed, cfg.training.shuffle_buffer, rank, size)
    head = job.dataset.iter_rows("train")
    first = next(head, None)
    head.close()
    if first is not None:
        task.prepare_features([first], tokenizer, kind, cfg, options)

    def prepare(rows: list[dict[str, Any]]) -> tuple[list[Any], dict[str, Any]]:
        return task.prepare_features(rows, tokenizer, kind, cfg, options)

    feats = StreamedFeatures(stream, prepare, cfg.training.batch_size, start=read_stream_state(checkpoint))
    return SplitRows(job.dataset, "train"), feats, feats.stats


def _trainer(job: Any, writer: RunWriter, device: str, task: Any, options: Any, kind: str, model: Any,
             tokenizer: Any, train_rows: Any, train_feats: Any,
             val_feats: list[Any] | None) -> tuple[Any, Any, Any]:
    """The Trainer with our callbacks (log file, NaN guard, progress, plugins', early stopping);
    returns it with the NaN guard and the log-file callback."""
    cfg = job.config
    guard = NonFiniteLossCallback()
    log_file = JsonlLogCallback(writer.path / "train_log.jsonl")
    callbacks = [log_file, CheckpointCallback(), guard, ProgressCallback()]
    if cfg.training.streaming:  # before CheckpointCallback: the checkpoint's manifest covers its stream state
        from verifily_local.streaming import StreamStateCallback

        callbacks.insert(0, StreamStateCallback(cfg.seed, cfg.training.shuffle_buffer))
    if cfg.training.attribution_checkpoints:
        callbacks.append(SnapshotCallback(writer.path, cfg.training.attribution_checkpoints))
    if ExitAtStepForTests.requested():
        callbacks.append(ExitAtStepForTests())
    if distributed.world().is_main:  # plugins' callbacks observe the run once, on rank 0
        for extra in job.registries.hook.verifily_trainer_callbacks(config=cfg, run_dir=writer.path):
            callbacks.extend(extra or [])
    if cfg.training.early_stopping_patience:
        if val_feats is None:
            log.warning("training.early_stopping_patience is ignored: the dataset has no val split")
        else:
            callbacks.append(transformers.EarlyStoppingCallback(cfg.training.early_stopping_patience))
    default = Seq2SeqTrainer if kind == "seq2seq" else Trainer
    args_class, args = argument_values(job, writer.checkpoints, device, val_feats is not None, kind)
    trainer = task.build_trainer(
        task.trainer_class(options, train_rows) or default, args_class, args, job=job, model=model, tokenizer=tokenizer,
        train_dataset=train_feats if cfg.training.streaming else _Rows(train_feats), eval_dataset=_Rows(val_feats) if val_feats is not None else None,
        data_collator=task.data_collator(tokenizer, kind, model), callbacks=callbacks, options=options,
    )
    if cfg.training.streaming:
        from verifily_local.streaming import keep_rank_shards

        keep_rank_shards(trainer)
    trainer.remove_callback(transformers.PrinterCallback)  # our ProgressCallback prints instead
    _keep_reports_outside(trainer, Path(cfg.output.dir) / "tensorboard" / job.job_id)
    writer.record_optimizations(describe_optimizations(cfg, device, model=model, trainer_args=trainer.args,
                                                        collator=trainer.data_collator,
                                                        accelerator=getattr(trainer, "accelerator", None)))
    return trainer, guard, log_file


def _keep_reports_outside(trainer: Any, folder: Path) -> None:
    """TensorBoard (``training.report_to``) writes under the Trainer's output folder by default, which
    is the run's checkpoints (removed at sealing); without ``TENSORBOARD_LOGGING_DIR`` its events go
    to ``<output.dir>/tensorboard/<run_id>`` instead, beside the runs."""
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TensorBoardCallback" and getattr(callback, "logging_dir", "") is None:
            callback.logging_dir = str(folder)


def _final_eval(trainer: Any) -> dict[str, Any]:
    """``eval_loss`` and the task's validation metrics of the final model: the Trainer's own
    evaluation after the last step when it made one (and did not reload the best checkpoint),
    otherwise a new evaluation."""
    last = [e for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == trainer.state.global_step]
    if last and not trainer.args.load_best_model_at_end:
        return eval_metrics(last[-1])
    return eval_metrics(trainer.evaluate())


def _report_truncation(split: str, stats: dict[str, Any], max_len: int) -> None:
    if stats["truncated"]:
        log.warning("%d of %d %s row(s) are longer than training.max_seq_length=%d and were truncated",
                    stats["truncated"], stats["rows"], split, max_len)


def canonical_adapter_config(path: Path) -> None:
    """Rewrite PEFT's ``adapter_config.json`` so identical runs write identical bytes: PEFT
    writes ``target_modules`` from a set (its order changes between processes) and can list a
    task head twice in ``modules_to_save``; sort the one, keep the other's first occurrences."""
    if not path.is_file():
        return
    doc = read_json(path)
    if isinstance(doc.get("target_modules"), list):
        doc["target_modules"] = sorted(doc["target_modules"])
    if isinstance(doc.get("modules_to_save"), list):
        doc["modules_to_save"] = list(dict.fromkeys(doc["modules_to_save"]))
    write_json(path, doc, sort_keys=True)


def _save(trainer: Any, tokenizer: Any, path: Path, task: Any, job: Any) -> None:
    """``adapter/`` (the full model without LoRA), ``tokenizer/``, task files, and ``model/``
    (LoRA merged into the base) when ``output.save_adapter_only`` is false."""
    trainer.model.save_pretrained(str(path / "adapter"), safe_serialization=True)
    canonical_adapter_config(path / "adapter" / "adapter_config.json")
    tokenizer.save_pretrained(str(path / "tokenizer"))
    task.save_artifacts(path, trainer.model, job)
    if job.config.lora.enabled and not job.config.output.save_adapter_only:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(path / "model"), safe_serialization=True)
        tokenizer.save_pretrained(str(path / "model"))
