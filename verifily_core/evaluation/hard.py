"""Hard examples (the worst test rows by a per-example score) and which slices they over-represent.

The default ranking score is the first of the task's ``hard_example_scores`` (see
:class:`verifily_core.interfaces.Task`) that the rows carry, else the first selected metric with
per-example values. Which way is worse comes from the metric's ``higher_is_better`` or the
task's ``score_directions``. Ties keep test order.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

from verifily_core.errors import ConfigError
from verifily_core.evaluation.records import public_record

MAX_OVER_REPRESENTED = 20


def choose_score(records: Sequence[Mapping[str, Any]], requested: str | None, preferred: Sequence[str],
                 directions: Mapping[str, bool], score_directions: Mapping[str, bool]) -> tuple[str, bool] | None:
    """``(score name, higher_is_better)`` for ranking, or ``None`` when rows carry no usable score.

    :param preferred: the task's ``hard_example_scores``, tried first, in order.
    :param directions: ``higher_is_better`` of the selected metrics, by name (tried next).
    :param score_directions: the task's ``score_directions`` of per-example model scores (tried last).
    :raises ConfigError: when ``requested`` is a score no row carries.
    """
    present = {k for r in records for k, v in r["scores"].items() if _number(v) is not None}
    candidates = [*preferred, *directions, *score_directions]
    directions = {**score_directions, **directions}
    if requested:
        if requested not in present:
            raise ConfigError(f"hard examples: no row has the score '{requested}'; "
                              f"available: {', '.join(sorted(present)) or '(none)'}")
        return requested, directions.get(requested, True)
    for name in candidates:
        if name in present:
            return name, directions.get(name, True)
    return None


def hard_examples(records: Sequence[Mapping[str, Any]], score: str, higher_is_better: bool,
                  count: int) -> list[dict[str, Any]]:
    """The ``count`` worst records by ``scores[score]``, worst first, as written to ``hard_examples.jsonl``."""
    scored = [(v, pos) for pos, r in enumerate(records) if (v := _number(r["scores"].get(score))) is not None]
    scored.sort(key=lambda item: (item[0] if higher_is_better else -item[0], item[1]))
    return [{**public_record(records[pos]), "score": value} for value, pos in scored[:max(count, 0)]]


def over_represented(slices: Mapping[str, Sequence[int]], hard_positions: Sequence[int],
                     total: int) -> list[dict[str, Any]]:
    """Slices whose share among hard examples exceeds their share of the test set.

    Each entry: ``slice``, ``hard_count``, ``hard_share``, ``test_count``, ``test_share``, ``lift``
    (the ratio of the shares) and ``p_value``: the chance that ``hard_count`` or more of
    ``len(hard_positions)`` rows drawn at random from the test set fall in the slice
    (hypergeometric upper tail). Sorted by ``p_value``, then by ``lift``.
    """
    hard = set(hard_positions)
    n_hard = len(hard)
    if not n_hard or not total:
        return []
    out = []
    for name, members in slices.items():
        k, size = len(hard.intersection(members)), len(members)
        hard_share, test_share = k / n_hard, size / total
        if k and hard_share > test_share:
            out.append({"slice": name, "hard_count": k, "hard_share": round(hard_share, 4), "test_count": size,
                        "test_share": round(test_share, 4), "lift": round(hard_share / test_share, 3),
                        "p_value": float(f"{hypergeom_tail(k, size, n_hard, total):.4g}")})
    out.sort(key=lambda e: (e["p_value"], -e["lift"], e["slice"]))
    return out[:MAX_OVER_REPRESENTED]


def hypergeom_tail(k: int, successes: int, draws: int, population: int) -> float:
    """``P(X >= k)`` for ``X ~ Hypergeometric(population, successes, draws)``."""
    def log_comb(n: int, r: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(r + 1) - math.lgamma(n - r + 1)

    total = log_comb(population, draws)
    upper = min(successes, draws)
    terms = [log_comb(successes, j) + log_comb(population - successes, draws - j) - total
             for j in range(k, upper + 1) if draws - j <= population - successes]
    return min(1.0, math.fsum(math.exp(t) for t in terms))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(value) else None
