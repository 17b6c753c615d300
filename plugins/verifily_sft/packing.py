"""Padding-free training for CausalLM models (``task_options.packing``).

With dynamic padding a batch of rows of uneven length spends much of its compute on padding
(40-50% on real data in random order). Packed, the rows of a batch are concatenated into one
sequence (:class:`~verifily_sft.data.FlatCollator`): the same rows per step and the same loss,
with no padding. It is exact only when the model keeps the packed rows apart, which
transformers' attention masks do from the restarting position ids for most decoder models;
``auto`` checks that on the model itself before training (:func:`~verifily_sft.data.packs_exactly`)
and pads when it does not hold.
"""

from __future__ import annotations

import logging
from typing import Any

from verifily_core.errors import ConfigError
from verifily_sft.data import FlatCollator, packs_exactly

log = logging.getLogger(__name__)


def training_collator(model: Any, tokenizer: Any, model_kind: str, padded: Any, options: Any) -> Any:
    """The collator to train with: :class:`FlatCollator` when packing is on or ``auto`` and the
    model packs exactly, else ``padded``.

    :raises ConfigError: ``packing: on`` for a Seq2Seq model or a model that does not keep
        packed rows apart.
    """
    if options.packing == "off":
        return padded
    if model_kind == "seq2seq":
        if options.packing == "on":
            raise ConfigError("$.task_options.packing: on needs a CausalLM model; a Seq2Seq model's target is "
                              "a sequence of its own (use packing: auto or off)")
        return padded
    vocab = getattr(model.config, "vocab_size", None) or len(tokenizer)
    if packs_exactly(model, vocab):
        log.info("packing: padding-free training batches (rows concatenated, positions restarting per row)")
        return FlatCollator(tokenizer.pad_token_id, model)
    if options.packing == "on":
        raise ConfigError("$.task_options.packing: on, but this model mixes rows packed into one sequence (its "
                          "attention does not follow the restarting position ids); use packing: auto or off")
    log.info("packing: off (this model does not keep packed rows apart); training batches are padded")
    return padded
