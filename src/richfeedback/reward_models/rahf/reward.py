"""RAHF's four scores behind the common `RewardModel` interface (`rahf:plausibility`, `rahf:alignment`,
`rahf:aesthetics`, `rahf:overall`, registered in `reward_models.registry`), and its heatmaps through
`RAHFReward.heatmaps`.

    scorer = load_reward_model("rahf:plausibility")                 # the embedded ShapesWorld RAHF
    scorer = load_reward_model("rahf:overall", weights="model.pt")  # the public checkpoint (size "large")
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..base import RewardModel, as_image_list, prepare
from .configuration import HEATMAP_NAMES, SCORE_NAMES
from .modeling import RAHFModel
from .processing import RAHFProcessor


class ProcessorTransform:
    """`RAHFProcessor`'s image preprocessing (ViTImageProcessor's: resize to size x size ignoring the aspect ratio,
    bilinear, then mean = std = 0.5) in the shape `RewardModel` expects: `from_pixels` for one uint8 image through
    PIL as the reference does, `from_tensor` for float batches, differentiably."""

    def __init__(self, processor: RAHFProcessor):
        self.processor = processor

    def from_pixels(self, image: np.ndarray) -> torch.Tensor:
        return self.processor.preprocess_images([image])[0]

    def from_tensor(self, images: torch.Tensor) -> torch.Tensor:
        return self.processor.preprocess_tensor(images)


def weighted_score_sum(scores: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """sum(weight * score) over `weights`: what a RAHF reward is, from RAHF's score outputs (name -> (N,))."""
    return sum(weight * scores[name].float() for name, weight in weights.items())


class RAHFReward(RewardModel):
    """One of RAHF's scores as a reward; all four come out of the same forward pass."""

    higher_is_better = True

    def __init__(self, model: RAHFModel, processor: RAHFProcessor, score: str, max_batch_size: int = 32):
        if score not in SCORE_NAMES:
            raise ValueError(f"RAHF has no score {score!r}; it has {SCORE_NAMES}")
        super().__init__(ProcessorTransform(processor), max_batch_size=max_batch_size)
        self.model = model
        self.processor = processor
        self.score_weights = {score: 1.0}  # the reward is sum(weight * score); `for_scores` makes other sums
        self.name = f"rahf:{score}"
        self.scale = f"RAHF {score} score in [0, 1] (a rich-feedback dataset's consolidated rating; higher is better)"

    def for_score(self, score: str) -> "RAHFReward":
        """Another of RAHF's scores as a reward, sharing this one's model (nothing is loaded again)."""
        return self.for_scores({score: 1.0})

    def for_scores(self, weights: dict[str, float]) -> "RAHFReward":
        """A weighted sum of RAHF's scores as one reward, sharing this one's model: one forward pass computes every
        score it needs (a sum of separate `rahf:*` rewards would run the model once per score)."""
        unknown = [name for name in weights if name not in SCORE_NAMES]
        if not weights or unknown:
            raise ValueError(f"RAHF has no score {unknown}; it has {SCORE_NAMES}")
        other = RAHFReward(self.model, self.processor, next(iter(weights)), self.max_batch_size)
        other.compute_dtype, other.source = self.compute_dtype, self.source
        if list(weights.values()) != [1.0]:
            other.score_weights = {name: float(w) for name, w in weights.items()}
            other.name = "+".join(f"{w:g}*rahf:{name}" for name, w in other.score_weights.items())
        return other

    def _text(self, prompts: list[str]) -> dict:
        return {k: v.to(self.device) for k, v in self.processor.text_inputs(prompts).items()}

    def forward(self, prompts: list[str], pixel_values: torch.Tensor) -> torch.Tensor:
        scores = self.model(pixel_values=pixel_values, **self._text(prompts), outputs=tuple(self.score_weights)).scores
        return weighted_score_sum(scores, self.score_weights)

    def all_scores(self, prompts, images) -> dict[str, torch.Tensor]:
        """Every RAHF score of the images, name -> (N,) tensor."""
        return self.outputs(prompts, images, SCORE_NAMES)

    def heatmaps(self, prompts, images) -> dict[str, torch.Tensor]:
        """RAHF's implausibility and misalignment heatmaps, name -> (N, S, S) in [0, 1] at the model's resolution."""
        return self.outputs(prompts, images, HEATMAP_NAMES)

    @torch.no_grad()
    def outputs(self, prompts, images, names) -> dict[str, torch.Tensor]:
        """The named heatmaps and scores of the images from one forward pass per batch: name -> float32 CPU tensor,
        (N, S, S) for a heatmap, (N,) for a score."""
        images = as_image_list(images)
        prompts = self.prompts_for(prompts, len(images))
        parts: dict[str, list] = {name: [] for name in names}
        for start in range(0, len(images), self.max_batch_size):
            pixel_values = self.preprocess_batch(images[start : start + self.max_batch_size])
            out = self.model(pixel_values=pixel_values.to(self.device, self.dtype),
                             **self._text(prompts[start : start + self.max_batch_size]), outputs=tuple(names))
            for name in names:
                parts[name].append((out.heatmaps if name in HEATMAP_NAMES else out.scores)[name].float().cpu())
        return {name: torch.cat(values) for name, values in parts.items()}


def load_rahf_reward(weights=None, *, score: str = "overall", device="cpu", dtype="fp32", max_batch_size: int = 32,
                     size: str = "large", tokenizer: Optional[str] = None) -> RAHFReward:
    from .predict import embedded_rahf_path, load_rahf

    model, processor = load_rahf(weights, size=size, tokenizer=tokenizer)
    source = str(weights) if weights not in (None, "embedded") else str(embedded_rahf_path())
    return prepare(RAHFReward(model, processor, score, max_batch_size), device=device, dtype=dtype, source=source)


def load_rahf_plausibility(weights=None, **kwargs) -> RAHFReward:
    return load_rahf_reward(weights, score="plausibility", **kwargs)


def load_rahf_alignment(weights=None, **kwargs) -> RAHFReward:
    return load_rahf_reward(weights, score="alignment", **kwargs)


def load_rahf_aesthetics(weights=None, **kwargs) -> RAHFReward:
    return load_rahf_reward(weights, score="aesthetics", **kwargs)


def load_rahf_overall(weights=None, **kwargs) -> RAHFReward:
    return load_rahf_reward(weights, score="overall", **kwargs)
