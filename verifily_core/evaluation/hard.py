"""Hard examples (the worst test rows by a per-example score) and which slices they over-represent.

The default ranking score is the first of the task's ``hard_example_scores`` (see
:class:`verifily_core.interfaces.Task`) that the rows carry, else the first selected metric with
per-example values. Which way is worse comes from the metric's ``higher_is_better`` or the
task's ``score_directions``.

Rows that tie on the score (most rows, for a 0/1 score such as exact match) are ordered by the
other scores they carry (:func:`tie_breakers`: per-row loss, the probability of the reference,
...), then by a hash of their ``row_id``: never by their position in the test file. The
over-representation test then takes every row at least as bad as the last row kept on the
score and its tie-breakers (:func:`at_or_below`): rows still tied there are tested as a whole,
so an arbitrary order among tied rows can never look like a finding.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from typing import Any, Mapping, Sequence

from verifily_core.errors import ConfigError

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


def tie_breakers(records: Sequence[Mapping[str, Any]], score: str, preferred: Sequence[str],
                 directions: Mapping[str, bool], score_directions: Mapping[str, bool]) -> list[tuple[str, bool]]:
    """``[(score, higher_is_better), ...]`` that order rows tied on ``score``: the other candidate
    scores (as in :func:`choose_score`) that every row carries and that take more than two values
    (a second 0/1 score breaks no tie worth breaking)."""
    every = set.intersection(*({k for k, v in r["scores"].items() if _number(v) is not None} for r in records)) \
        if records else set()
    merged = {**score_directions, **directions}
    out = []
    for name in dict.fromkeys([*preferred, *directions, *score_directions]):
        if name != score and name in every and len({r["scores"][name] for r in records}) > 2:
            out.append((name, merged.get(name, True)))
    return out


def rank(records: Sequence[Mapping[str, Any]], score: str, higher_is_better: bool,
         ties: Sequence[tuple[str, bool]] = ()) -> list[tuple[tuple[float, ...], int]]:
    """``(key, position)`` of the records that carry ``score``, worst first. ``key`` holds the
    score and each tie-breaking score, each negated where higher is worse; rows with equal keys
    are ordered by a hash of their ``row_id`` (or index), not by position."""
    def worse(value: float | None, higher: bool) -> float:
        return 0.0 if value is None else value if higher else -value

    keyed = []
    for pos, r in enumerate(records):
        value = _number(r["scores"].get(score))
        if value is None:
            continue
        key = (worse(value, higher_is_better), *(worse(_number(r["scores"].get(n)), h) for n, h in ties))
        stable = hashlib.sha256(str(r.get("row_id") or r.get("index", pos)).encode("utf-8")).hexdigest()
        keyed.append((key, stable, pos))
    return [(key, pos) for key, _, pos in sorted(keyed)]


def at_or_below(ranked: Sequence[tuple[tuple[float, ...], int]], count: int) -> list[int]:
    """Positions of every ranked row as bad as, or worse than, the ``count``-th worst on the
    whole key (score and tie-breakers): more than ``count`` rows when it ties there."""
    if count <= 0 or not ranked:
        return []
    threshold = ranked[min(count, len(ranked)) - 1][0]
    return [pos for key, pos in ranked if key <= threshold]


def over_represented(slices: Mapping[str, Sequence[int]], hard_positions: Sequence[int],
                     total: int) -> list[dict[str, Any]]:
    """Slices whose share among hard examples exceeds their share of the test set.

    ``hard_positions`` are the rows tested: the hard examples and every row tied with the last
    of them (:func:`at_or_below`). When they are the whole test set nothing is reported.

    Each entry: ``slice``, ``hard_count``, ``hard_share``, ``test_count``, ``test_share``, ``lift``
    (the ratio of the shares) and ``p_value``: the chance that ``hard_count`` or more of
    ``len(hard_positions)`` rows drawn at random from the test set fall in the slice
    (hypergeometric upper tail). Sorted by ``p_value``, then by ``lift``.
    """
    hard = set(hard_positions)
    n_hard = len(hard)
    if not n_hard or not total or n_hard >= total:
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
