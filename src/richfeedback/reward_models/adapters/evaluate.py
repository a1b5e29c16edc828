"""Preference accuracy of a reward model on labelled pairs, with a 95% bootstrap interval over prompts.

Accuracy counts the pairs with a winner (ties are left out, as the HPSv2 and ImageReward evaluations do): a pair is
right when the model scores the winner higher, half right when it scores both the same. The interval resamples
prompts, not pairs, because the pairs of one prompt share images and are not independent.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .preferences import PreferencePair


def _image_key(image) -> object:
    return id(image) if isinstance(image, np.ndarray) else str(image)


@torch.no_grad()
def score_pairs(model, pairs: Sequence[PreferencePair], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(scores of the A images, scores of the B images); every distinct (prompt, image) is scored once."""
    index: dict[tuple, int] = {}
    items = []
    for pair in pairs:
        for image in (pair.image_a, pair.image_b):
            key = (pair.prompt, _image_key(image))
            if key not in index:
                index[key] = len(items)
                items.append((pair.prompt, image))
    scores = np.zeros(len(items), dtype=np.float64)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        scores[start:start + len(chunk)] = model.score([p for p, _ in chunk], [i for _, i in chunk]).numpy()
    a = np.array([scores[index[(p.prompt, _image_key(p.image_a))]] for p in pairs])
    b = np.array([scores[index[(p.prompt, _image_key(p.image_b))]] for p in pairs])
    return a, b


def pair_correctness(score_a: np.ndarray, score_b: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 / 0.5 / 0 per decided pair (labels 0 or 1); ties in the labels must be removed before."""
    winner_higher = np.where(labels > 0.5, score_a - score_b, score_b - score_a)
    return np.where(winner_higher > 0, 1.0, np.where(winner_higher == 0, 0.5, 0.0))


def bootstrap_interval(values: np.ndarray, groups: Sequence[str], n_resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of `values`, resampling whole groups (prompts) with replacement."""
    names = sorted(set(groups))
    group_of = {g: i for i, g in enumerate(names)}
    ids = np.array([group_of[g] for g in groups])
    sums = np.bincount(ids, weights=values, minlength=len(names))
    counts = np.bincount(ids, minlength=len(names)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(n_resamples, len(names)))
    means = sums[draws].sum(1) / np.maximum(counts[draws].sum(1), 1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def preference_accuracy(model, pairs: Sequence[PreferencePair], batch_size: int = 64, bootstrap: int = 2000,
                        seed: int = 0, by: Optional[Sequence[str]] = None) -> dict:
    """{"accuracy", "ci_low", "ci_high", "pairs" (decided), "ties" (left out), "prompts"}; with `by` (a label per
    pair), also {"by": {label: {"accuracy", "pairs"}}} from the same scores."""
    keep = [i for i, p in enumerate(pairs) if p.label != 0.5]
    decided = [pairs[i] for i in keep]
    if not decided:
        raise ValueError("no pair with a winner to evaluate (all ties)")
    a, b = score_pairs(model, decided, batch_size)
    correct = pair_correctness(a, b, np.array([p.label for p in decided]))
    prompts = [p.prompt for p in decided]
    low, high = bootstrap_interval(correct, prompts, bootstrap, seed) if bootstrap else (float("nan"),) * 2
    result = {"accuracy": float(correct.mean()), "ci_low": low, "ci_high": high, "pairs": len(decided),
              "ties": len(pairs) - len(decided), "prompts": len(set(prompts))}
    if by is not None:
        if len(by) != len(pairs):
            raise ValueError(f"`by` has {len(by)} labels for {len(pairs)} pairs")
        labels = np.array([by[i] for i in keep])
        result["by"] = {label: {"accuracy": float(correct[labels == label].mean()),
                                "pairs": int((labels == label).sum())} for label in sorted(set(labels))}
    return result
