"""The numbers of an A/B study, from preference rows (see `ratings.py`): win rates, intervals, agreement.

* **Win rate of B** (ties count half a win): each pair's score is the mean over its raters of 1 (B better),
  0.5 (about the same) or 0 (A better); the win rate is the mean over pairs, so a pair counts once however many
  raters saw it. The win rate of A is one minus it.
* **Mean preference** on the five-point scale, from B's side: +2 B much better ... -2 A much better.
* **95% intervals**: percentile bootstrap, resampling whole prompts by default (a prompt's seeds are not independent
  draws: a prompt one system cannot draw loses on every seed), or pairs; seeded, so reruns give the same numbers.
* **Bradley-Terry strength** of B over A on the Elo scale, 400 log10(w / (1 - w)): with two systems the
  Bradley-Terry maximum-likelihood fit with ties as half wins (GenAI-Arena's convention) reduces to this.
* **Agreement between raters** (pairs seen by two or more raters): pairwise percent agreement on the three-way
  choice (A / same / B) and on the exact five-point answer, Fleiss' kappa on the three-way choice (Fleiss 1971,
  with a varying number of raters per pair), and Cohen's kappa per pair of raters on the pairs both rated.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from typing import Optional, Sequence

import numpy as np

CHOICES = ("a", "tie", "b")
OUTCOME_B = {"a": 0.0, "tie": 0.5, "b": 1.0}


def value_b(row: dict) -> int:
    """The five-point answer from B's side: +strength when B is better, -strength when A is."""
    return {"a": -1, "tie": 0, "b": 1}[row["choice"]] * int(row["strength"])


def cluster_bootstrap_mean(values: Sequence[float], clusters: Sequence, n_resamples: int = 2000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of `values` when whole clusters (e.g. prompts) are resampled with replacement.

    Every value keeps its weight (a resampled cluster brings all of its values), so with one value per cluster this
    is the ordinary bootstrap of the mean.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (math.nan, math.nan)
    _, index = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    sums = np.bincount(index, weights=values)
    counts = np.bincount(index).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(n_resamples, len(sums)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return (float(lo), float(hi))


def elo_difference(win_rate: Optional[float]) -> Optional[float]:
    """Bradley-Terry strength of B minus A on the Elo scale; None when one side won everything (infinite)."""
    if win_rate is None or not 0.0 < win_rate < 1.0:
        return None
    return 400.0 * math.log10(win_rate / (1.0 - win_rate))


def majority_choice(choices: Sequence[str]) -> str:
    """The choice most raters made; "tie" when the top two are level."""
    ranked = Counter(choices).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return "tie"
    return ranked[0][0]


def question_summary(rows: Sequence[dict], n_resamples: int = 2000, seed: int = 0, unit: str = "prompt") -> dict:
    """Win rate, preference and counts for the rows of one question."""
    if unit not in ("prompt", "pair"):
        raise ValueError(f"bootstrap unit {unit!r}: use 'prompt' or 'pair'")
    by_pair: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_pair[row["pair_id"]].append(row)
    pair_ids = sorted(by_pair)
    win = np.array([np.mean([OUTCOME_B[r["choice"]] for r in by_pair[p]]) for p in pair_ids])
    pref = np.array([np.mean([value_b(r) for r in by_pair[p]]) for p in pair_ids])
    clusters = [by_pair[p][0]["prompt"] if unit == "prompt" else p for p in pair_ids]
    counts = Counter(r["choice"] for r in rows)
    majority = Counter(majority_choice([r["choice"] for r in by_pair[p]]) for p in pair_ids)
    out = {
        "pairs": len(pair_ids), "ratings": len(rows), "prompts": len({by_pair[p][0]["prompt"] for p in pair_ids}),
        "raters": len({r["rater"] for r in rows}),
        "a_better": counts["a"], "same": counts["tie"], "b_better": counts["b"],
        "majority": {c: majority[c] for c in CHOICES},
    }
    if not pair_ids:
        return {**out, "win_rate_b": None, "win_rate_b_ci": None, "preference_b": None, "preference_b_ci": None,
                "elo_b_minus_a": None, "elo_b_minus_a_ci": None}
    win_rate = float(win.mean())
    win_ci = cluster_bootstrap_mean(win, clusters, n_resamples, seed)
    return {
        **out,
        "win_rate_b": win_rate, "win_rate_b_ci": list(win_ci),
        "preference_b": float(pref.mean()), "preference_b_ci": list(cluster_bootstrap_mean(pref, clusters,
                                                                                          n_resamples, seed)),
        "elo_b_minus_a": elo_difference(win_rate),
        "elo_b_minus_a_ci": [elo_difference(win_ci[0]), elo_difference(win_ci[1])],
    }


def fleiss_kappa(counts: np.ndarray) -> Optional[float]:
    """Fleiss' kappa from an (items, categories) table of how many raters chose each category for each item.

    Items may have different numbers of raters (two or more); the expected agreement uses the pooled category
    shares. None when it is undefined (fewer than one item, or every rating in one category).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=1)
    counts, n = counts[n >= 2], n[n >= 2]
    if len(n) == 0:
        return None
    observed = ((counts * (counts - 1)).sum(axis=1) / (n * (n - 1))).mean()
    shares = counts.sum(axis=0) / counts.sum()
    expected = float((shares**2).sum())
    if expected >= 1.0:
        return None
    return float((observed - expected) / (1.0 - expected))


def cohen_kappa(first: Sequence, second: Sequence) -> Optional[float]:
    """Cohen's kappa of two raters' labels on the same items; None when undefined (both always said one thing)."""
    if len(first) != len(second) or not first:
        return None
    labels = sorted(set(first) | set(second), key=str)
    observed = np.mean([a == b for a, b in zip(first, second)])
    p1, p2 = Counter(first), Counter(second)
    expected = sum(p1[label] * p2[label] for label in labels) / len(first) ** 2
    if expected >= 1.0:
        return None
    return float((observed - expected) / (1.0 - expected))


def pairwise_agreement(groups: Sequence[Sequence]) -> Optional[float]:
    """Share of agreeing rater pairs, over all pairs of raters of the same item (items with two or more raters)."""
    agree = total = 0
    for labels in groups:
        for x, y in itertools.combinations(labels, 2):
            agree += x == y
            total += 1
    return agree / total if total else None


def agreement_summary(rows: Sequence[dict]) -> dict:
    """Agreement between raters on one question's rows."""
    by_pair: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        by_pair[row["pair_id"]][row["rater"]] = row
    shared = {p: r for p, r in by_pair.items() if len(r) >= 2}
    three_way = [[r["choice"] for r in raters.values()] for raters in shared.values()]
    five_point = [[value_b(r) for r in raters.values()] for raters in shared.values()]
    table = np.array([[labels.count(c) for c in CHOICES] for labels in three_way]).reshape(-1, len(CHOICES))
    raters = sorted({row["rater"] for row in rows})
    cohen = []
    for first, second in itertools.combinations(raters, 2):
        both = [p for p, r in by_pair.items() if first in r and second in r]
        if both:
            cohen.append({"raters": [first, second], "pairs": len(both),
                          "kappa": cohen_kappa([by_pair[p][first]["choice"] for p in both],
                                               [by_pair[p][second]["choice"] for p in both])})
    return {
        "pairs_with_several_raters": len(shared),
        "percent_agreement_3way": pairwise_agreement(three_way),
        "percent_agreement_5point": pairwise_agreement(five_point),
        "fleiss_kappa_3way": fleiss_kappa(table) if len(shared) else None,
        "cohen_kappa_3way": cohen,
    }


def study_summary(rows: Sequence[dict], questions: Sequence[str], n_resamples: int = 2000, seed: int = 0,
                  unit: str = "prompt") -> dict:
    """Per question: the win-rate summary, the agreement between raters, and each rater's own win rate of B."""
    out = {"bootstrap": {"resamples": n_resamples, "seed": seed, "unit": unit, "level": 0.95}, "questions": {}}
    for question in questions:
        q_rows = [r for r in rows if r["question"] == question]
        if not q_rows:
            continue
        per_rater = {}
        for rater in sorted({r["rater"] for r in q_rows}):
            mine = [r for r in q_rows if r["rater"] == rater]
            per_rater[rater] = {"pairs": len(mine), "win_rate_b": float(np.mean([OUTCOME_B[r["choice"]]
                                                                                for r in mine]))}
        out["questions"][question] = {**question_summary(q_rows, n_resamples, seed, unit),
                                      "agreement": agreement_summary(q_rows), "per_rater": per_rater}
    return out
