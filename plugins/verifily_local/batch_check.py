"""``verifily train --dry-run --check-batch`` on the local backend: will the run fit, and how long
will it take?

The data is tokenized with the task's ``prepare_features``; the model is assembled as training
assembles it (:func:`~verifily_core.modeling.assemble_model`, quantization and LoRA included,
then :func:`~verifily_local.optimizations.prepare_training_model`); the trainer is built from the
same arguments a run gets, and its ``training_step`` plus one optimizer step run on the
``training.batch_size`` longest rows, padded by the task's collator. Peak memory is CUDA's
``max_memory_allocated`` or, on CPU, the growth of this process's resident memory from before
the model loaded (the kernel's high-water mark, reset at the start, on Linux).

Imports torch, transformers and peft; imported only by a batch check.
"""

from __future__ import annotations

import importlib
import math
import os
import random
import tempfile
import threading
import time
from typing import Any

import torch

from verifily_core.console import progress_bar
from verifily_core.memory import MEMORY_LIMIT_ENV
from verifily_core.modeling import assemble_model, quiet_libraries, resolve_device, uses_gradient_checkpointing
from verifily_local.arguments import argument_values
from verifily_local.optimizations import BNB_OPTIMIZERS, prepare_training_model

PERCENTILES = (50, 90, 99)
NEAR_LIMIT = 0.9
"""Share of the limit above which a batch that fits is reported as tight."""


def check_batch(job: Any, memory_limit: int | None = None) -> dict[str, Any]:
    """The report of :meth:`verifily_core.interfaces.ComputeBackend.check_batch` for this machine."""
    cfg, regs = job.config, job.registries
    if cfg.training.streaming:
        return {"checked": False, "reason": "training.streaming: the train split is never tokenized whole, so its "
                                            "longest batch is not known before training"}
    quiet_libraries()
    device = resolve_device(cfg.compute.device)
    task = regs.tasks.get(cfg.task)
    options = task.parse_options(cfg.task_options)
    for module in ("accelerate", "peft", "transformers.trainer"):  # imported before the meter starts: code is no
        importlib.import_module(module)                             # batch memory

    stages = progress_bar(4, "Checking the batch", unit="stages")
    meter = _Meter(device)
    try:
        assembled = assemble_model(job, device, options)
        model, tokenizer, kind = assembled.model, assembled.tokenizer, assembled.kind
        prepare_training_model(model, cfg, device)
        stages.update(1)
        features: dict[str, list[dict[str, Any]]] = {}
        splits: dict[str, Any] = {}
        train_rows = job.dataset.read_rows("train")
        for split in ("train", "val"):
            if split == "train" or job.dataset.has_split(split):
                rows = train_rows if split == "train" else job.dataset.read_rows(split)
                feats, stats = task.prepare_features(rows, tokenizer, kind, cfg, options)
                features[split] = feats
                size = cfg.training.batch_size if split == "train" else cfg.eval.batch_size
                splits[split] = _length_stats(feats, stats, size, cfg.seed)
        stages.update(1)
        collator = task.data_collator(tokenizer, kind, model)
        if collator is None or splits["train"] is None:
            return {"checked": False, "splits": splits,
                    "reason": f"task '{cfg.task}' pads its batches inside its trainer; its batch cannot be run here"}
        train = features["train"]
        longest = sorted(range(len(train)), key=lambda i: -len(train[i]["input_ids"]))[:cfg.training.batch_size]
        batch = collator([train[i] for i in longest])
        seconds = _run_batch(job, task, options, kind, model, tokenizer, train_rows, train, batch, device, meter,
                             stages)
    finally:
        meter.stop()
        stages.close()
    limit, source = _limit(device, memory_limit, meter)
    tokens = int(batch["input_ids"].shape[-1])
    report = {
        "checked": True, "device": device, "splits": splits,
        "largest_batch": {"rows": len(longest), "tokens": tokens},
        "peak_memory": meter.peak, "memory_kind": meter.kind, "memory_limit": limit, "memory_limit_source": source,
        "fits": meter.peak <= limit, "near_limit": meter.peak > NEAR_LIMIT * limit,
        **_estimate(cfg, splits["train"], seconds, len(longest) * tokens),
        "gradient_checkpointing": uses_gradient_checkpointing(cfg, device),
        "compiled": False,
    }
    report["advice"] = [] if report["fits"] and not report["near_limit"] else advice(cfg, splits["train"], device)
    return report


def _length_stats(feats: list[dict[str, Any]], stats: dict[str, Any], batch_size: int, seed: int) -> dict[str, Any] | None:
    """Token length percentiles, truncation and the padding of random-order dynamic padding."""
    if not feats or "input_ids" not in feats[0]:
        return None
    lengths = sorted(len(f["input_ids"]) for f in feats)
    out: dict[str, Any] = {"rows": len(lengths), "truncated": int(stats.get("truncated", 0))}
    for p in PERCENTILES:
        out[f"p{p}"] = lengths[min(len(lengths) - 1, math.ceil(p / 100 * len(lengths)) - 1)]
    out["max"] = lengths[-1]
    out["mean"] = round(sum(lengths) / len(lengths), 1)
    order = list(lengths)
    random.Random(seed).shuffle(order)
    padded = sum(max(order[i:i + batch_size]) * len(order[i:i + batch_size]) for i in range(0, len(order), batch_size))
    out["padding_waste"] = round(1 - sum(lengths) / padded, 4) if padded else 0.0
    out["mean_padded_batch_tokens"] = round(padded / math.ceil(len(order) / batch_size), 1)
    return out


def _run_batch(job: Any, task: Any, options: Any, kind: str, model: Any, tokenizer: Any, rows: list[Any],
               train: list[Any], batch: dict[str, Any], device: str, meter: "_Meter", stages: Any) -> float:
    """Build the trainer as a run does, then two training steps (forward, backward, optimizer) on
    ``batch``: the first warms up, the second is timed. Returns its seconds."""
    from transformers import Seq2SeqTrainer, Trainer

    from verifily_local.backend import _Rows

    with tempfile.TemporaryDirectory(prefix="verifily-check-") as tmp:
        args_class, args = argument_values(job, tmp, device, False, kind)
        args.update(torch_compile=False, save_strategy="no")  # the check measures eager mode
        default = Seq2SeqTrainer if kind == "seq2seq" else Trainer
        trainer = task.build_trainer(
            task.trainer_class(options, rows) or default, args_class, args, job=job, model=model, tokenizer=tokenizer,
            train_dataset=_Rows(train), eval_dataset=None, data_collator=task.data_collator(tokenizer, kind, model),
            callbacks=[], options=options)
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which does not run here
        model.train()
        seconds = 0.0
        for attempt in range(2):
            start = time.perf_counter()
            inputs = trainer._prepare_inputs(dict(batch))
            trainer.training_step(trainer.model, inputs)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=False)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            meter.sample()
            stages.update(1)
        del trainer
    return seconds


def _estimate(cfg: Any, train: dict[str, Any], seconds: float, batch_tokens: int) -> dict[str, Any]:
    """Seconds per optimizer step (the timed largest batch scaled to the mean padded batch, times the
    accumulation steps) and for the whole run (``max_steps``, or the epochs' steps)."""
    t = cfg.training
    scale = min(1.0, train["mean_padded_batch_tokens"] / max(batch_tokens, 1))
    per_step = seconds * scale * t.gradient_accumulation_steps
    batches = math.ceil(train["rows"] / t.batch_size)
    steps = t.max_steps if t.max_steps > 0 else math.ceil(batches / t.gradient_accumulation_steps) * t.num_epochs
    return {"seconds_largest_batch": round(seconds, 4), "seconds_per_step": round(per_step, 4),
            "total_steps": steps, "estimated_seconds": round(per_step * steps, 1)}


def advice(cfg: Any, train: dict[str, Any], device: str) -> list[str]:
    """What to change so that a batch takes less memory, most effective first, as config overrides."""
    t, opts, out = cfg.training, cfg.training.optimizations, []
    if t.batch_size > 1:
        half = max(1, t.batch_size // 2)
        out.append(f"training.batch_size={half} training.gradient_accumulation_steps="
                   f"{t.gradient_accumulation_steps * t.batch_size // half} (the same effective batch)")
    if not uses_gradient_checkpointing(cfg, device):
        out.append("training.optimizations.gradient_checkpointing=true")
    if opts.optimizer_type not in BNB_OPTIMIZERS:
        out.append("training.optimizations.optimizer_type=adamw_bnb_8bit (8-bit optimizer state)")
    if cfg.lora.enabled and cfg.lora.quantization == "none":
        out.append("lora.quantization=4bit (QLoRA)")
    if train["max"] > train["p99"]:
        out.append(f"training.max_seq_length={train['p99']} (the 99th percentile of the train rows; longer ones "
                   "are truncated)")
    return out


def _limit(device: str, memory_limit: int | None, meter: "_Meter") -> tuple[int, str]:
    if memory_limit is not None:
        return memory_limit, f"--memory-limit or ${MEMORY_LIMIT_ENV}"
    if device.startswith("cuda"):
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory), "the GPU's memory"
    return meter.available, "the RAM available before loading"


class _Meter:
    """Peak memory from now on: CUDA ``max_memory_allocated``, or on CPU the growth of the resident
    set over its size now. On Linux the kernel's high-water mark (``VmHWM``) is reset to the current
    size first (``/proc/self/clear_refs``), so it is exact; elsewhere the resident size is sampled
    every 10 ms (a shorter peak can be missed)."""

    def __init__(self, device: str) -> None:
        import psutil

        self.cuda = device.startswith("cuda")
        self.kind = "cuda max_memory_allocated" if self.cuda else "growth of resident memory"
        self._process = psutil.Process(os.getpid())
        self.available = int(psutil.virtual_memory().available)
        self._base = self._process.memory_info().rss
        self._peak_rss = self._base
        self._stop = threading.Event()
        self._thread = None
        self._hwm = False
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            fd = os.open("/proc/self/clear_refs", os.O_WRONLY)  # a kernel control, not a file
            try:
                os.write(fd, b"5")  # reset the peak resident set size to the current one
            finally:
                os.close(fd)
            self._hwm = _high_water_mark() is not None
        except OSError:
            self._hwm = False
        if not self._hwm:
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.sample()

    def sample(self) -> None:
        """Record the resident size now."""
        if not self.cuda:
            self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    @property
    def peak(self) -> int:
        """Peak bytes since the meter started."""
        if self.cuda:
            return int(torch.cuda.max_memory_allocated())
        peak = max(self._peak_rss, _high_water_mark() or 0) if self._hwm else self._peak_rss
        return max(0, peak - self._base)


def _high_water_mark() -> int | None:
    """``VmHWM`` of ``/proc/self/status`` in bytes (Linux), else ``None``."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
