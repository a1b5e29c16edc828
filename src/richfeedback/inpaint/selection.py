"""Best-of-N: score the original and every composited candidate with one reward, keep the best.

The reward is a spec in the syntax `richfeedback.guidance` uses: one registered reward model ("rahf:plausibility",
the default, as in the RAHF paper's repair loop; "imagereward"; "pickscore"=WEIGHTS) or a weighted sum
("0.7*rahf:plausibility+0.3*rahf:aesthetics"). The original competes with its own candidates: when none scores
higher, the image is left alone (unless the caller asks to always take the best candidate).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

DEFAULT_REWARD = "rahf:plausibility"


def load_selection_reward(spec: Optional[str] = None, *, device="cpu", dtype="fp32", max_batch_size: int = 32,
                          rahf=None):
    """The reward of `spec` (None: rahf:plausibility) with a `.score(prompts, images)` and a `.name`; `rahf`, an
    already loaded embedded RAHF, serves its rahf:* terms."""
    from ..guidance.rewards import load_reward

    return load_reward(spec or DEFAULT_REWARD, device=device, dtype=dtype, max_batch_size=max_batch_size, rahf=rahf)


@dataclasses.dataclass
class Selection:
    original_score: float
    candidate_scores: list[float]
    chosen: Optional[int]  # index of the kept candidate; None: the original is kept

    @property
    def best_score(self) -> float:
        return self.original_score if self.chosen is None else self.candidate_scores[self.chosen]


def select_best(original_score: float, candidate_scores: Sequence[float], keep_original: bool = True) -> Selection:
    """The highest-scoring candidate (the first on ties), or None when `keep_original` and it does not beat the
    original strictly."""
    scores = [float(s) for s in candidate_scores]
    if not scores:
        return Selection(float(original_score), [], None)
    best = int(np.argmax(scores))
    chosen = None if keep_original and scores[best] <= original_score else best
    return Selection(float(original_score), scores, chosen)


def score_and_select(reward, prompt: str, original: np.ndarray, candidates: Sequence[np.ndarray],
                     keep_original: bool = True) -> Selection:
    """Score the original and its candidates in one batch and select."""
    scores = reward.score([prompt] * (1 + len(candidates)), [original, *candidates]).tolist()
    return select_best(scores[0], scores[1:], keep_original)
