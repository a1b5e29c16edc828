"""The losses the reward-model families were trained with, for adapting them to new feedback.

- `pairwise_softmax_loss` (PickScore, HPSv2): a softmax over the two candidates' scores, cross-entropy against the
  preference as a distribution: [1, 0] when A won, [0, 1] when B won, [0.5, 0.5] for a tie. PickScore's criterion
  computes exactly this (its scores are already logit_scale * cos); HPSv2's `PreferenceLoss` is the same
  cross-entropy over a prompt's images with hard labels.
- `ranking_loss` (ImageReward): -log sigmoid(r_better - r_worse) over every ranked pair of a prompt's candidates.
  ImageReward's training data has no ties (its pair builder skips equal ranks), so tied pairs carry no loss here.
- `score_mse` for absolute scores (the LAION aesthetic predictor's regression onto ratings; RAHF's score heads).

`label` is always the probability that A is preferred: 1.0, 0.0, or 0.5 for a tie.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

PAIRWISE_LOSSES = ("pairwise_softmax", "ranking")
LOSSES = (*PAIRWISE_LOSSES, "mse")


def pairwise_softmax_loss(score_a: torch.Tensor, score_b: torch.Tensor, label: torch.Tensor,
                          scale: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy between softmax([scale * a, scale * b]) and [label, 1 - label].

    `scale` multiplies scores that are not logits yet (CLIPScore's 2.5 * cos wants ~40 to match a CLIP's
    logit_scale of 100); PickScore's and HPS's scores are logits already (scale 1).
    """
    logits = torch.stack([score_a, score_b], dim=-1).float() * scale
    target = torch.stack([label, 1.0 - label], dim=-1).float()
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def ranking_loss(score_a: torch.Tensor, score_b: torch.Tensor, label: torch.Tensor,
                 scale: float = 1.0) -> torch.Tensor:
    """Mean -log sigmoid(scale * (r_better - r_worse)) over the pairs with a winner; 0 when every pair is a tie."""
    decided = label != 0.5
    if not decided.any():
        return (score_a.float() * 0.0).sum()  # keeps the graph (and DDP's gradient sync) alive on an all-tie batch
    sign = torch.where(label > 0.5, 1.0, -1.0).to(score_a.device)
    margin = sign * (score_a.float() - score_b.float()) * scale
    return -F.logsigmoid(margin[decided]).mean()


def score_mse(predicted: torch.Tensor, target: torch.Tensor, scale: float = 1.0, bias: float = 0.0) -> torch.Tensor:
    """MSE between `scale * predicted + bias` and the target scores (the affine map puts a model's own scale, e.g.
    PickScore's ~20, onto the targets' [0, 1] without touching what it ranks)."""
    return F.mse_loss(predicted.float() * scale + bias, target.float())


def pairwise_loss(kind: str, score_a: torch.Tensor, score_b: torch.Tensor, label: torch.Tensor,
                  scale: float = 1.0) -> torch.Tensor:
    if kind == "pairwise_softmax":
        return pairwise_softmax_loss(score_a, score_b, label, scale)
    if kind == "ranking":
        return ranking_loss(score_a, score_b, label, scale)
    raise ValueError(f"unknown pairwise loss {kind!r}; use one of {PAIRWISE_LOSSES} (or 'mse' with score data)")


def check_loss(kind: Optional[str]) -> None:
    if kind is not None and kind not in LOSSES:
        raise ValueError(f"loss.type must be one of {LOSSES}, got {kind!r}")
