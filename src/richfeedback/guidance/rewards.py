"""The reward that guidance climbs: one registered reward model or a weighted sum of several.

A spec names it the way the command line does:

    "rahf:aesthetics"                                   the embedded RAHF's aesthetics head (ShapesWorld default)
    "aesthetic=weights/aesthetic/"                      LAION aesthetic with its weights (a file or folder)
    "0.7*rahf:aesthetics+0.3*rahf:plausibility"         a weighted sum; weights are plain numbers, may be negative
    "pickscore=weights/pickscore,adapter=runs/adapter"  a model with a reward adapter (`richfeedback adapter train`)
    "latent-aesthetic"                                  a noise-aware model scoring the noisy latents themselves
                                                        (classifier guidance; the embedded generator's default)

Terms are split at a "+" that starts another registered name, so weight files with "+" in their name
(`sac+logos+ava1-l14-linearMSE.pth`) stay whole. The sum is of the raw scores: rewards on different scales
(aesthetic ~5, RAHF in [0, 1]) need weights that account for it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

import torch

from ..reward_models import RewardModel, list_reward_models, load_reward_model

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclasses.dataclass(frozen=True)
class RewardTerm:
    weight: float
    name: str
    weights: Optional[str] = None  # the model's weights file or folder; None: its default location
    adapter: Optional[str] = None  # a reward adapter's folder (richfeedback adapter train), applied on top


def parse_reward_spec(spec: str, known: Optional[Sequence[str]] = None) -> list[RewardTerm]:
    """The terms of a spec such as "0.7*rahf:aesthetics+0.3*aesthetic=path/to/weights,adapter=runs/adapter"."""
    known = list(known if known is not None else list_reward_models())
    names = "|".join(re.escape(n) for n in sorted(known, key=len, reverse=True))
    # A "+" separates terms only where a (weighted) registered name follows it.
    parts = re.split(rf"\+(?=\s*(?:{NUMBER}\s*\*\s*)?(?:{names})\s*(?:=|\+|,|$))", spec.strip())
    terms = []
    for part in parts:
        part, _, adapter = part.partition(",adapter=")
        match = re.fullmatch(rf"\s*(?:({NUMBER})\s*\*\s*)?([^=\s*]+)\s*(?:=\s*(.+?))?\s*", part)
        if not match or match.group(2) not in known:
            raise ValueError(f"cannot read the reward {part.strip()!r} in {spec!r}: write NAME, NAME=WEIGHTS or "
                             f"WEIGHT*NAME joined by '+', with NAME one of {', '.join(known)}")
        weight = float(match.group(1)) if match.group(1) is not None else 1.0
        terms.append(RewardTerm(weight, match.group(2), match.group(3), adapter.strip() or None))
    if len({(t.name, t.adapter) for t in terms}) != len(terms):
        raise ValueError(f"{spec!r} names a reward model twice; give each once with its total weight")
    return terms


def spec_of(terms: Sequence[RewardTerm]) -> str:
    """The canonical spec of `terms` (what manifests record)."""
    parts = []
    for t in terms:
        part = t.name if t.weight == 1.0 and len(terms) == 1 else f"{t.weight:g}*{t.name}"
        parts.append(part + (f"={t.weights}" if t.weights else "") + (f",adapter={t.adapter}" if t.adapter else ""))
    return "+".join(parts)


class WeightedReward(torch.nn.Module):
    """sum_i weight_i * reward_i, with the `score`/`differentiable` calls of a `RewardModel`."""

    def __init__(self, terms: Sequence[tuple[float, RewardModel]], name: str = ""):
        super().__init__()
        if not terms:
            raise ValueError("a weighted reward needs at least one term")
        self.weights = [float(w) for w, _ in terms]
        self.models = torch.nn.ModuleList([m for _, m in terms])
        self.name = name or "+".join(f"{w:g}*{m.name}" for w, m in terms)
        self.needs_prompt = any(m.needs_prompt for m in self.models)
        noise_aware = [bool(getattr(m, "noise_aware", False)) for m in self.models]
        if any(noise_aware) and not all(noise_aware):
            raise ValueError(f"cannot add up {self.name}: noise-aware rewards ("
                             + ", ".join(m.name for m, n in zip(self.models, noise_aware) if n)
                             + ") score the noisy latents, the others decoded images; guide with one kind")
        self.noise_aware = all(noise_aware)

    def noisy_latent_score(self, latents: torch.Tensor, timesteps) -> torch.Tensor:
        return sum(w * m.noisy_latent_score(latents, timesteps) for w, m in zip(self.weights, self.models))

    def check_pipeline(self, pipe) -> None:
        for m in self.models:
            if hasattr(m, "check_pipeline"):
                m.check_pipeline(pipe)

    def differentiable(self, prompts, images: torch.Tensor) -> torch.Tensor:
        return sum(w * m.differentiable(prompts if m.needs_prompt else None, images)
                   for w, m in zip(self.weights, self.models))

    def score(self, prompts, images) -> torch.Tensor:
        return sum(w * m.score(prompts if m.needs_prompt else None, images) for w, m in zip(self.weights, self.models))


def load_reward(spec: str, *, device="cpu", dtype="fp32", max_batch_size: int = 32, rahf=None, **options):
    """The reward of `spec`: a `RewardModel` for a single unweighted name, else a `WeightedReward`.

    RAHF's four scores come from one model: the `rahf:*` terms with the same weights share one loaded model (and
    `rahf`, an already loaded `RAHFReward` for the default weights, e.g. inpaint-fix's heatmap model, is reused).
    """
    terms = parse_reward_spec(spec)
    loaded_rahf = {None: rahf} if rahf is not None else {}
    # rahf:* terms on the same weights become one reward: one RAHF forward pass computes all their scores.
    rahf_groups: dict[Optional[str], dict[str, float]] = {}
    weighted: list[tuple[float, RewardModel]] = []
    for t in terms:
        score = t.name.partition("rahf:")[2] if t.name.startswith("rahf:") else None
        if score and not options and t.adapter is None:
            rahf_groups.setdefault(t.weights, {})[score] = t.weight
            if t.weights not in loaded_rahf:
                loaded_rahf[t.weights] = load_reward_model(t.name, weights=t.weights, device=device, dtype=dtype,
                                                           max_batch_size=max_batch_size)
            continue
        extra = {"adapter": t.adapter} if t.adapter is not None else {}
        weighted.append((t.weight, load_reward_model(t.name, weights=t.weights, device=device, dtype=dtype,
                                                     max_batch_size=max_batch_size, **extra, **options)))
    weighted += [(1.0, loaded_rahf[weights_file].for_scores(scores)) for weights_file, scores in rahf_groups.items()]
    if len(terms) == 1 and terms[0].weight == 1.0:
        return weighted[0][1]
    return WeightedReward(weighted, name=spec_of(terms))
