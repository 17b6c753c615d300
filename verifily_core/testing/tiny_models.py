"""Tiny, real-architecture HuggingFace models and tokenizers, built offline.

Each model directory holds a randomly initialised (seeded) model saved with
``save_pretrained`` (safetensors) and a tokenizer trained with ``tokenizers`` on a small
built-in corpus, so the normal ``Auto*.from_pretrained(directory)`` code paths load it:

    python -m verifily_core.testing.tiny_models --out models/ --kind llama,t5,bert,deberta-v2
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

from verifily_core.testing.data import corpus

KINDS = ("llama", "t5", "bert", "deberta-v2")
LLAMA_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, kind: str, vocab_size: int = 600):
    """Train a tokenizer for ``kind`` and save it as a ``PreTrainedTokenizerFast`` in ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    if kind in ("bert", "deberta-v2"):
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
            sep_token="[SEP]", mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
    else:
        special = ["<pad>", "</s>", "<unk>"] if kind == "t5" else ["<unk>", "<s>", "</s>", "<pad>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        if kind == "t5":
            eos_id = tok.token_to_id("</s>")
            tok.post_processor = processors.TemplateProcessing(
                single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)])
            fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
        else:
            bos_id = tok.token_to_id("<s>")
            tok.post_processor = processors.TemplateProcessing(
                single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)])
            fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                           eos_token="</s>", pad_token="<pad>")
            fast.chat_template = LLAMA_CHAT_TEMPLATE
    fast.model_max_length = 512
    fast.save_pretrained(str(out_dir))
    return fast


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


def build_tiny_model(kind: str, out_dir: str | Path, seed: int = 0, texts: Iterable[str] | None = None,
                     pretrain_steps: int = 0) -> Path:
    """Build a tiny ``kind`` model (llama, t5, bert, deberta-v2) with its tokenizer in ``out_dir``.

    ``pretrain_steps`` > 0 briefly trains llama/t5 on the corpus first (a generic language
    objective). Deterministic: the same arguments give byte-identical files.
    """
    import torch

    kind = "deberta-v2" if kind == "deberta" else kind
    if kind not in KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose from {', '.join(KINDS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer([*corpus(), *(texts or [])], out, kind)
    torch.manual_seed(seed)
    model = _model_class(kind).from_config(_config(kind, tok))
    if pretrain_steps and kind in ("llama", "t5"):
        pretrain(model, tok, kind, [*corpus(), *(texts or [])], pretrain_steps, seed)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: build tiny models into a directory and print their paths."""
    parser = argparse.ArgumentParser(description="Build tiny offline HuggingFace models for examples and tests.")
    parser.add_argument("--out", required=True, help="parent directory; each model goes to OUT/tiny-<kind>")
    parser.add_argument("--kind", default=",".join(KINDS), help=f"comma-separated: {', '.join(KINDS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, default=0,
                        help="briefly train llama/t5 on a generic corpus first (e.g. 150)")
    args = parser.parse_args(argv)
    for kind in [k.strip() for k in args.kind.split(",") if k.strip()]:
        print(build_tiny_model(kind, Path(args.out) / f"tiny-{kind}", seed=args.seed,
                               pretrain_steps=args.pretrain_steps))


if __name__ == "__main__":
    main()
