"""Text metrics for SFT outputs: exact match, token F1, format compliance, gold-set exact match.

Exact match and token F1 compare answers after a normalisation chosen with the ``normalize``
option (see :data:`NORMALIZATIONS`); the default, ``text``, is SQuAD's rule with numbers kept
intact, because SQuAD's own rule drops signs and decimal points ("-3" would match "3"). A
reference that is a list means "any of these": the best score over the references is taken.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from verifily_metrics.base import MeanMetric, references_of

_DROP_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
FORMATS = ("auto", "json", "json_object", "regex")


NORMALIZATIONS = {
    "text": "casefold, Unicode NFKC, drop punctuation and the articles a/an/the, collapse whitespace; "
            "numbers are kept intact (sign, decimal point, digit grouping)",
    "strict": "the answers as written, only leading and trailing whitespace removed",
    "squad": "the SQuAD script's rule: lowercase, drop all ASCII punctuation (signs and decimal points too), "
             "drop articles, collapse whitespace",
    "numeric": "like text, and numbers compared as numbers: 1,000 = 1000, 3.50 = 3.5, -0 = 0",
}
"""The ``normalize`` modes of ``exact_match``, ``token_f1`` and ``gold_exact_match``."""
DEFAULT_NORMALIZATION = "text"

_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d+)*|\.\d+)%?")
_GROUPED = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_EDGE_PUNCT = "".join(c for c in string.punctuation if c not in "+-.%") + "\u201c\u201d\u2018\u2019"


def normalize_answer(text: Any, mode: str = "squad") -> str:
    """``text`` normalised by ``mode`` (one of :data:`NORMALIZATIONS`; SQuAD's rule by default)."""
    text = str(text)
    if mode == "strict":
        return unicodedata.normalize("NFC", text).strip()
    if mode == "squad":
        return " ".join(_ARTICLES.sub(" ", text.lower().translate(_DROP_PUNCT)).split())
    text = unicodedata.normalize("NFKC", text).replace("\u2212", "-").casefold()
    words = []
    for token in text.split():
        core = token.strip(_EDGE_PUNCT).rstrip(".")
        if core and _NUMBER.fullmatch(core):
            words.append(_canonical_number(core) if mode == "numeric" else core)
            continue
        word = "".join(c for c in token if not unicodedata.category(c).startswith("P") and c not in string.punctuation)
        if word and word not in ("a", "an", "the"):
            words.append(word)
    return " ".join(words)


def _canonical_number(text: str) -> str:
    """``-1,000.50`` -> ``-1000.5``; a number that does not parse stays as written."""
    percent = text.endswith("%")
    body = text.rstrip("%")
    if _GROUPED.fullmatch(body):
        body = body.replace(",", "")
    try:
        value = Decimal(body)
    except InvalidOperation:
        return text
    canonical = format(value.normalize() if value else Decimal(0), "f")
    return canonical + ("%" if percent else "")


def normalization(options: Mapping[str, Any]) -> str:
    """The ``normalize`` option, checked (default :data:`DEFAULT_NORMALIZATION`).

    :raises ConfigError: an unknown mode; the modes are listed.
    """
    mode = options.get("normalize") or DEFAULT_NORMALIZATION
    if mode not in NORMALIZATIONS:
        from verifily_core.errors import ConfigError

        raise ConfigError(f"normalize: unknown mode {mode!r}; use one of {', '.join(NORMALIZATIONS)}")
    return str(mode)


def exact_match(prediction: Any, reference: Any, normalize: str = DEFAULT_NORMALIZATION) -> float:
    """1.0 when the normalised prediction equals a normalised reference, else 0.0."""
    pred = normalize_answer(prediction, normalize)
    return float(any(pred == normalize_answer(r, normalize) for r in references_of(reference)))


def token_f1(prediction: Any, reference: Any, normalize: str = DEFAULT_NORMALIZATION) -> float:
    """Token F1 between the bags of normalised tokens (max over references).

    Two empty answers score 1.0; one empty answer scores 0.0.
    """
    pred = normalize_answer(prediction, normalize).split()
    return max(_f1(pred, normalize_answer(r, normalize).split()) for r in references_of(reference))


def _f1(pred: list[str], gold: list[str]) -> float:
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


class _Normalized(MeanMetric):
    """A text metric with the ``normalize`` option (see :data:`NORMALIZATIONS`)."""

    def settings(self, **options: Any) -> Mapping[str, Any]:
        """``{"normalize": mode}``."""
        return {"normalize": normalization(options)}


class ExactMatch(_Normalized):
    """Share of generated outputs equal to the reference after normalisation (option
    ``normalize``: text (default), strict, squad or numeric)."""

    name = "exact_match"
    tasks = ("sft",)

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float:
        """1.0 or 0.0."""
        return exact_match(prediction, reference, normalization(kwargs))


class TokenF1(_Normalized):
    """Mean token F1 of generated outputs against the reference, over normalised tokens
    (option ``normalize``, as for exact_match)."""

    name = "token_f1"
    tasks = ("sft",)

    def per_example(self, prediction: Any, reference: Any, row: Mapping[str, Any],
                    scores: Mapping[str, Any], **kwargs: Any) -> float:
        """Token F1 in [0, 1]."""
        return token_f1(prediction, reference, normalization(kwargs))


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
