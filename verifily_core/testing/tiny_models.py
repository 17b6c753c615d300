"""Tiny, real-architecture HuggingFace models and tokenizers, built offline.

Each model directory holds a randomly initialised (seeded) model saved with
``save_pretrained`` (safetensors) and a tokenizer trained with ``tokenizers`` on a small
built-in corpus, so the normal ``Auto*.from_pretrained(directory)`` code paths load it:

    python -m verifily_core.testing.tiny_models --out models/ --kind llama,t5,bert,deberta-v2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from verifily_core.testing.data import corpus

KINDS = ("llama", "t5", "bert", "deberta-v2")
# Starts with the BOS token (callers tokenize a rendered chat without special tokens, as
# for real Llama templates) and closes each assistant turn with EOS.
LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, kind: str, vocab_size: int = 600):
    """Train a tokenizer for ``kind`` on ``texts`` and save it in ``out_dir``; returns the
    ``PreTrainedTokenizerFast``. Llama: byte-level BPE, ``<s>`` prepended, ``<pad>``, a chat
    template. T5: byte-level BPE, ``<pad>`` = 0, ``</s>`` appended. BERT/DeBERTa-v2: WordPiece,
    ``[CLS] A [SEP] B [SEP]`` with ``token_type_ids``."""
    kind = canonical_kind(kind)
    texts = list(texts)
    fast = _wordpiece_tokenizer(texts, vocab_size) if kind in ("bert", "deberta-v2") else \
        _byte_bpe_tokenizer(texts, vocab_size, t5=kind == "t5")
    fast.model_max_length = 512
    fast.save_pretrained(str(out_dir))
    return fast


def _wordpiece_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(_wordpiece_vocab(texts, special, vocab_size), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _byte_bpe_tokenizer(texts: list[str], vocab_size: int, t5: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "</s>", "<unk>"] if t5 else ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    if t5:
        eos_id = tok.token_to_id("</s>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.chat_template = LLAMA_CHAT_TEMPLATE
    return fast


def _wordpiece_vocab(texts: list[str], special: list[str], vocab_size: int) -> dict[str, int]:
    """A WordPiece vocabulary from a BPE trained on BERT-normalized words: every piece both
    word-initial and as a ``##`` continuation, specials first, the rest sorted.

    (``WordPieceTrainer`` numbers its ``##`` alphabet in hash order, so its vocabulary, and
    even which merges win ties, differ from run to run; plain BPE training is deterministic.)
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.normalizer = normalizers.BertNormalizer(lowercase=True)
    bpe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size // 2, show_progress=False))
    pieces = set(bpe.get_vocab())
    pieces |= {"##" + p for p in pieces}
    return {t: i for i, t in enumerate([*special, *sorted(pieces - set(special))])}


def canonical_kind(kind: str) -> str:
    """``kind`` as one of :data:`KINDS` (``deberta`` means ``deberta-v2``); ValueError if unknown."""
    kind = "deberta-v2" if kind == "deberta" else kind
    if kind not in KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose from {', '.join(KINDS)}")
    return kind


def _config(kind: str, tok):
    from transformers import BertConfig, DebertaV2Config, LlamaConfig, T5Config

    vocab = len(tok)
    if kind == "llama":
        return LlamaConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
            id2label={0: "LABEL_0", 1: "LABEL_1"},
        )
    if kind == "t5":
        return T5Config(
            vocab_size=vocab, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
            feed_forward_proj="relu", relative_attention_num_buckets=8,
        )
    common = dict(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                  type_vocab_size=2)
    if kind == "bert":
        return BertConfig(**common)
    return DebertaV2Config(**common, relative_attention=True, position_buckets=32, max_relative_positions=64,
                           pos_att_type=["p2c", "c2p"])


def _model_class(kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    return {"llama": AutoModelForCausalLM, "t5": AutoModelForSeq2SeqLM}.get(kind, AutoModelForSequenceClassification)


def pretrain(model, tok, kind: str, texts: list[str], steps: int, seed: int = 0) -> None:
    """Briefly train a fresh model on ``texts`` (causal LM for llama, copying for t5) so that
    LoRA has a sensible base to adapt. Deterministic for a given seed."""
    import torch

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(texts), (16,), generator=g).tolist()
        batch = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True, max_length=64)
        if kind == "t5":
            labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
            loss = model(**batch, labels=labels).loss
        else:
            loss = model(**batch, labels=batch.input_ids.masked_fill(batch.attention_mask == 0, -100)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def pretrain_encoder(config, tok, texts: list[str], steps: int, seed: int = 0):
    """Briefly pretrain an encoder with masked language modelling (15% of tokens masked) and
    return its base model, so that LoRA on a classifier has a sensible encoder to adapt."""
    import torch
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(seed)
    mlm = AutoModelForMaskedLM.from_config(config)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(mlm.parameters(), lr=3e-3)
    special = torch.tensor(tok.all_special_ids)
    mlm.train()
    for _ in range(steps):
        idx = torch.randint(len(texts), (16,), generator=g).tolist()
        batch = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True, max_length=64)
        ids = batch.input_ids.clone()
        chosen = (torch.rand(ids.shape, generator=g) < 0.15) & ~torch.isin(ids, special)
        labels = ids.masked_fill(~chosen, -100)
        batch["input_ids"] = ids.masked_fill(chosen, tok.mask_token_id)
        loss = mlm(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return mlm.base_model


def build_tiny_model(kind: str, out_dir: str | Path, seed: int = 0, texts: Iterable[str] | None = None,
                     pretrain_steps: int = 0) -> Path:
    """Build a tiny ``kind`` model (llama, t5, bert, deberta-v2) with its tokenizer in ``out_dir``.

    ``pretrain_steps`` > 0 briefly trains the model first (causal LM for llama, copying for
    t5, masked LM for the encoders) on the built-in corpus plus ``texts``. Deterministic: the same
    arguments give byte-identical files.
    """
    import torch

    kind = canonical_kind(kind)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = [*corpus(), *(texts or [])]
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:  # build beside the target, then move the finished files in: never a half-written model
        tok = train_tokenizer(texts, staging, kind)
        torch.manual_seed(seed)
        model = _model_class(kind).from_config(_config(kind, tok))
        if pretrain_steps and kind in ("llama", "t5"):
            pretrain(model, tok, kind, texts, pretrain_steps, seed)
        elif pretrain_steps:
            encoder = pretrain_encoder(model.config, tok, texts, pretrain_steps, seed)
            model.base_model.load_state_dict(encoder.state_dict(), strict=False)  # the pooler stays fresh
        model.save_pretrained(str(staging), safe_serialization=True)
        for f in sorted(staging.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: build tiny models into a directory and print their paths."""
    parser = argparse.ArgumentParser(prog="python -m verifily_core.testing.tiny_models",
                                     description="Build tiny offline HuggingFace models for examples and tests.")
    parser.add_argument("--out", required=True, help="parent directory; each model goes to OUT/tiny-<kind>")
    parser.add_argument("--kind", default=",".join(KINDS), help=f"comma-separated: {', '.join(KINDS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, default=0,
                        help="briefly train llama/t5 on a generic corpus first (e.g. 150)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        kinds = [canonical_kind(k.strip()) for k in args.kind.split(",") if k.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    for kind in kinds:
        print(build_tiny_model(kind, Path(args.out) / f"tiny-{kind}", seed=args.seed,
                               pretrain_steps=args.pretrain_steps))


if __name__ == "__main__":
    main()
