"""The Seq2Seq training loss, averaged over every target token of an optimizer step.

A CausalLM in transformers computes its loss with the Trainer's ``num_items_in_batch`` (the
target tokens of all micro-batches of a step, on all processes), so a step's loss is the mean
over its tokens however the step is split into gradient-accumulation micro-batches and
processes. Encoder-decoder models such as T5 and BART accept that argument but ignore it and
return each micro-batch's mean, while the Trainer, believing it honoured, neither divides by the
accumulation steps nor undoes its own multiplication by the number of processes: their logged
loss and gradients would grow with ``gradient_accumulation_steps`` x processes. Here the
Trainer's ``compute_loss_func`` computes that loss instead, from the model's logits, with
transformers' own unshifted token cross-entropy, and the collator supplies the decoder inputs
the model would otherwise derive from the labels."""

from __future__ import annotations

from typing import Any, Callable


class DecoderInputsCollator:
    """Wraps a collator, adding ``decoder_input_ids`` (the labels shifted right, by the model's
    own ``prepare_decoder_input_ids_from_labels``) to every batch that has labels."""

    def __init__(self, collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
                 shift: Callable[[Any], Any]) -> None:
        self.collate = collate
        self.shift = shift

    @property
    def batch_form(self) -> str:
        """The wrapped collator's (recorded in the run's ``optimizations``)."""
        return getattr(self.collate, "batch_form", "padded")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate(features)
        if "labels" in batch and "decoder_input_ids" not in batch:
            batch["decoder_input_ids"] = self.shift(batch["labels"])
        return batch


def token_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """The sum of the target tokens' cross-entropy over ``num_items_in_batch`` (the step's
    target tokens; the batch's own when ``None``, as in evaluation)."""
    from transformers.loss.loss_utils import ForMaskedLMLoss

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    return ForMaskedLMLoss(logits, labels, vocab_size=logits.shape[-1], num_items_in_batch=num_items_in_batch)


def weigh_by_step_tokens(trainer: Any, model: Any) -> Any:
    """Makes ``trainer`` train the Seq2Seq ``model`` on :func:`token_loss`; returns the trainer.

    A model without ``prepare_decoder_input_ids_from_labels`` keeps its own loss, and the
    Trainer is told so (``model_accepts_loss_kwargs = False``): each micro-batch's mean, divided
    by the accumulation steps, as before transformers weighed steps by tokens."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    shift = getattr(base, "prepare_decoder_input_ids_from_labels", None)
    if shift is None:
        trainer.model_accepts_loss_kwargs = False
        return trainer
    trainer.data_collator = DecoderInputsCollator(trainer.data_collator, shift)
    trainer.compute_loss_func = token_loss
    return trainer
