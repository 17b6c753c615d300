"""``verifily export``: a shareable folder from a completed LoRA run.

Without ``--merge`` the folder holds the run's adapter (PEFT layout) and tokenizer. With
``--merge`` it holds a standalone model: the run's model is assembled as evaluation does (base
model, the run's adapter and tokenizer; the run verified first), the LoRA weights are merged
into the base and the result is saved with ``save_pretrained`` (safetensors) beside the run's
tokenizer, into a staging folder renamed into place at the end. The merge is computed in
float32 whatever the base's stored dtype (a bfloat16 or float16 base is upcast, which is
exact), then the model is cast to ``--dtype`` (default float32), so its weights are rounded once.

A quantized (QLoRA) run is merged, by default (``--merge-into dequantized``), into the weights
it was trained and evaluated with: its quantized base is loaded as evaluation loads it, every
quantized layer is dequantized to float32 and the adapter's weight deltas are added, so a 4-bit
run's merged model gives the run's own logits (up to floating point rounding; an 8-bit run
differs by the int8 rounding of activations its layers make at run time). ``--merge-into
original`` merges into the base's original, unquantized weights instead (what most tools do;
its logits differ from the run's by the quantization error of the base).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import attrs

from verifily_core.errors import ConfigError
from verifily_core.files import write_json

DTYPES = ("float32", "bfloat16", "float16")
MERGE_INTO = ("dequantized", "original")
"""What a quantized run's adapter is merged into: the dequantized weights the run trained on, or
the base's original weights."""


def export_run(run_path: str | Path, output: str | Path, *, registries: Any, merge: bool = False,
               dtype: str = "float32", hf_token: str | None = None, verify: bool = True,
               purpose: str = "export it", merge_into: str = "dequantized") -> Path:
    """Write the run at ``run_path`` to ``output`` (a new folder): its adapter and tokenizer, or
    with ``merge`` the merged standalone model and tokenizer; returns the folder. ``merge_into``
    (:data:`MERGE_INTO`) applies to quantized runs. ``purpose`` completes the messages refusing
    a run ("a run must be completed to export it").

    :raises ConfigError: ``output`` exists and is not empty, an unknown ``dtype`` or
        ``merge_into``, a run trained without LoRA, or a merged model that is no standard
        ``transformers`` model (a custom head).
    :raises EvalError: the run is not completed or does not verify.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype}: use one of {', '.join(DTYPES)}")
    if merge_into not in MERGE_INTO:
        raise ConfigError(f"--merge-into {merge_into}: use one of {', '.join(MERGE_INTO)}")
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"{output}: already exists; export into a new folder")
    from verifily_core.evaluator import load_verified_run

    run, cfg = load_verified_run(run_path, purpose, verify)
    if not cfg.lora.enabled:
        raise ConfigError(f"{run.path}: trained without LoRA, its adapter/ folder already holds the whole model")
    output.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        if merge:
            _save_merged(run, cfg, registries, dtype, hf_token, stage, merge_into)
        else:
            shutil.copytree(run.path / "adapter", stage, dirs_exist_ok=True)
            shutil.copytree(run.path / "tokenizer", stage, dirs_exist_ok=True)
            for p in [stage, *stage.rglob("*")]:  # the run is read-only; its copy need not be
                p.chmod(p.stat().st_mode | 0o200)
        _write_card(run, stage, merge)
        write_json(stage / "verifily_export.json", {
            "run_id": run.run_id, "base_model": run.base_model, "task": run.task, "merged": merge,
            "dtype": dtype if merge else None, "reproducibility_hash": run.reproducibility_hash,
            "dataset": run.dataset.get("ref"), "run_quantization": cfg.lora.quantization,
            "merged_into": (merge_into if _quantized(cfg) else "original") if merge else None,
        })
        if output.exists():
            output.rmdir()
        stage.rename(output)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return output


def _quantized(cfg: Any) -> bool:
    return cfg.lora.quantization not in (None, "none")


def _save_merged(run: Any, cfg: Any, registries: Any, dtype: str, hf_token: str | None, stage: Path,
                 merge_into: str) -> None:
    """Merge the run's LoRA weights into its base in float32 (a quantized run: into its
    dequantized or its original weights) and save model (in ``dtype``) and tokenizer."""
    import torch
    import transformers

    from verifily_core.evaluator import load_run_model
    from verifily_core.modeling import quiet_libraries

    quiet_libraries()
    options = registries.tasks.get(cfg.task).parse_options(cfg.task_options)
    if _quantized(cfg) and merge_into == "dequantized":
        built = load_run_model(run, cfg, registries, "cpu", hf_token, options)
        merged = _merge_dequantized(built.model)
    else:
        plain = attrs.evolve(cfg, lora=attrs.evolve(cfg.lora, quantization="none"))  # the original weights
        built = load_run_model(run, plain, registries, "cpu", hf_token, options)
        merged = built.model.to(torch.float32).merge_and_unload()  # exact; the base may be stored in 16 bits
    if not isinstance(merged, transformers.PreTrainedModel):
        raise ConfigError(f"{run.path}: its model ({type(merged).__name__}, a custom head?) is no standard "
                          "transformers model to save merged; export the adapter without --merge")
    merged.to(getattr(torch, dtype)).save_pretrained(str(stage), safe_serialization=True)
    built.tokenizer.save_pretrained(str(stage))


def _merge_dequantized(model: Any) -> Any:
    """A PEFT model on a quantized base as a plain float32 model: the LoRA weight deltas are
    taken, the LoRA layers removed, every quantized layer dequantized (``dequantize()`` of
    transformers) and the deltas added to the dequantized weights."""
    import torch

    deltas = {name: layer.get_delta_weight(layer.active_adapters[0]).float()
              for name, layer in model.base_model.model.named_modules()
              if hasattr(layer, "get_delta_weight") and layer.active_adapters[0] in getattr(layer, "lora_A", {})}
    base = model.unload().dequantize().to(torch.float32)
    modules = dict(base.named_modules())
    with torch.no_grad():
        for name, delta in deltas.items():
            modules[name].weight += delta
    return base


def _write_card(run: Any, stage: Path, merged: bool) -> None:
    """``README.md``: the run's card, with the test metrics of its evaluation when its eval files
    verify (the run's own card, written before evaluation, points at them instead)."""
    from verifily_core.evaluation.seal import check_eval
    from verifily_core.files import write_text
    from verifily_core.model_card import with_evaluation

    source = run.path / ("model" if merged and (run.path / "model" / "README.md").is_file() else "adapter") / "README.md"
    if not source.is_file():
        return
    card = source.read_text(encoding="utf-8")
    count, problems = check_eval(run.path / "eval", run.path)
    if count and not problems and (run.path / "eval" / "eval_results.json").is_file():
        from verifily_core.evaluation.result import load_eval_result

        card = with_evaluation(card, load_eval_result(run.path / "eval"), "transformers" if merged else None)
    elif merged:
        card = card.replace("library_name: peft\n", "library_name: transformers\n", 1)
    write_text(stage / "README.md", card)

