"""Text metrics for SFT outputs: exact match, token F1, format compliance, gold-set exact match.

Answers are normalised as in the SQuAD evaluation script: lowercase, drop ASCII punctuation,
drop the articles ``a``, ``an``, ``the`` (as whole words), collapse whitespace. A reference
that is a list means "any of these": the best score over the references is taken.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from typing import Any, Mapping

from verifily_metrics.base import MeanMetric, references_of

_DROP_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
FORMATS = ("auto", "json", "json_object", "regex")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, remove punctuation, remove articles, fix whitespace."""
    text = str(text).lower().translate(_DROP_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: Any, reference: Any) -> float:
    """1.0 when the normalised prediction equals a normalised reference, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in references_of(reference)))


def token_f1(prediction: Any, reference: Any) -> float:
    """SQuAD token F1 between normalised token bags (max over references).

    Two empty answers score 1.0; one empty answer scores 0.0.
    """
    pred = normalize_answer(prediction).split()
    return max(_f1(pred, normalize_answer(r).split()) for r in references_of(reference))


def _f1(pred: list[str], gold: list[str]) -> float:
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


class ExactMatch(MeanMetric):
    """Share of generated outputs equal to the reference after SQuAD normalisation."""

    name = "exact_match"
    tasks = ("sft",)

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float:
        """1.0 or 0.0."""
        return exact_match(prediction, reference)


class TokenF1(MeanMetric):
    """Mean SQuAD token F1 of generated outputs against the reference."""

    name = "token_f1"
    tasks = ("sft",)

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float:
        """Token F1 in [0, 1]."""
        return token_f1(prediction, reference)


class GoldExactMatch(ExactMatch):
    """Exact match on the gold rows only (``eval.gold_set`` rows, or rows tagged ``gold: true``)."""

    name = "gold_exact_match"
    gold_set = True


class FormatCompliance(MeanMetric):
    """Share of generated outputs in the expected format.

    Options (``format``): ``auto`` (default: where the reference is a JSON object or array,
    the prediction must parse as the same kind, an object holding at least the reference's
    keys; rows with a plain-text reference do not count), ``json`` (parses as JSON),
    ``json_object`` (a JSON object, holding ``required_keys`` if given), ``regex`` (the whole
    stripped output matches ``pattern``).
    """

    name = "format_compliance"
    tasks = ("sft",)

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float | None:
        """1.0 compliant, 0.0 not, ``None`` when the row does not count (``auto``, plain reference)."""
        fmt = kwargs.get("format") or "auto"
        text = str(prediction).strip()
        if fmt == "auto":
            ref = _parse_json(references_of(reference)[0])
            if not isinstance(ref, (dict, list)):
                return None
            pred = _parse_json(text)
            if isinstance(ref, dict):
                return float(isinstance(pred, dict) and set(ref) <= set(pred))
            return float(isinstance(pred, list))
        if fmt == "json":
            return float(_parse_json(text) is not _INVALID)
        if fmt == "json_object":
            pred = _parse_json(text)
            return float(isinstance(pred, dict) and set(kwargs.get("required_keys") or ()) <= set(pred))
        if fmt == "regex":
            return float(_regex(kwargs.get("pattern")).fullmatch(text) is not None)
        from verifily_core.errors import ConfigError

        raise ConfigError(f"format_compliance: unknown format '{fmt}'; use one of {', '.join(FORMATS)}")


_INVALID = object()


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return _INVALID


def _regex(pattern: Any) -> re.Pattern[str]:
    from verifily_core.errors import ConfigError

    if not pattern or not isinstance(pattern, str):
        raise ConfigError("format_compliance: format 'regex' needs a 'pattern' option")
    try:
        return _compiled(pattern)
    except re.error as exc:
        raise ConfigError(f"format_compliance: invalid pattern {pattern!r}: {exc}") from None


_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern not in _CACHE:
        _CACHE[pattern] = re.compile(pattern, re.DOTALL)
    return _CACHE[pattern]
