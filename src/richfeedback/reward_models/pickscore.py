"""PickScore (Kirstain et al. 2023): CLIP ViT-H/14 fine-tuned on Pick-a-Pic preferences.

    score = logit_scale.exp() * cos(text, image)        probs = softmax(scores of the candidates of one prompt)

Weights: a transformers `CLIPModel` folder or hub id (`yuvalkirstain/PickScore_v1`). Processor: from the same folder
when it holds one (tokenizer files and preprocessor_config.json), else `processor=` (default
`laion/CLIP-ViT-H-14-laion2B-s32B-b79K`, as the PickScore README loads it).

Preprocessing follows the processor config on transformers' PIL backend (`CLIPImageProcessorPil`), which is what the
slow `CLIPImageProcessor` of transformers 4.2x computed when PickScore was trained. transformers 5's default
`CLIPImageProcessor` resizes uint8 tensors with torchvision instead and differs by about one uint8 level per pixel.
"""

from __future__ import annotations

from typing import Optional

import torch

from .base import RewardModel, prepare, unique_prompts
from .hf_clip import (has_processor_files, l2_normalize, load_clip_model, load_tokenizer, pooled,
                      transform_from_processor)
from .preprocess import ImageTransform
from .weights import find_pretrained_folder

HUB_MODEL = "yuvalkirstain/PickScore_v1"
HUB_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
PROCESSOR_FILES_HINT = (f" The processor (tokenizer and preprocessor_config.json) comes from the same folder when it "
                        f"has one, else from {HUB_PROCESSOR} as in the PickScore README: offline, add its files to the "
                        f"folder (`hf download {HUB_PROCESSOR} preprocessor_config.json tokenizer.json "
                        "tokenizer_config.json vocab.json merges.txt special_tokens_map.json --local-dir <folder>`) or "
                        "pass processor=.")


class PickScore(RewardModel):
    name = "pickscore"
    scale = ("logit_scale.exp() x cosine(text, image), ~20-23 for typical generations; compare images of the same "
             "prompt (probs() turns their scores into preferences)")

    def __init__(self, clip, tokenizer, transform: ImageTransform, max_batch_size: int = 32):
        super().__init__(transform, max_batch_size)
        self.clip = clip
        self.tokenizer = tokenizer
        self.max_text_length = clip.config.text_config.max_position_embeddings

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """L2-normalised float32 text embeddings; padding is masked (and CLIP's causal mask keeps it out anyway)."""
        tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_text_length,
                                return_tensors="pt").to(self.device)
        features = self.clip.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return l2_normalize(pooled(features).float())

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return l2_normalize(pooled(self.clip.get_image_features(pixel_values=pixel_values)).float())

    def forward(self, prompts: list[str], pixel_values: torch.Tensor) -> torch.Tensor:
        texts, index = unique_prompts(prompts)
        text = self.encode_text(texts)[index.to(self.device)]
        image = self.encode_image(pixel_values)
        return self.clip.logit_scale.exp().float() * (text * image).sum(-1)

    @torch.no_grad()
    def probs(self, prompt: str, images) -> torch.Tensor:
        """Preference probabilities over the candidate images of one prompt (softmax of their scores)."""
        return self.score(prompt, images).softmax(dim=0)


def load_pickscore(weights=None, *, device="cpu", dtype="fp32", max_batch_size: int = 32,
                   processor: Optional[str] = None) -> PickScore:
    source = find_pretrained_folder(weights, model="pickscore", hub_repo=HUB_MODEL)
    processor_source = processor or (source if has_processor_files(source) else HUB_PROCESSOR)
    clip = load_clip_model(source, model="pickscore", hub_repo=HUB_MODEL, extra_hint=PROCESSOR_FILES_HINT)
    tokenizer = load_tokenizer(processor_source, model="pickscore", hub_repo=HUB_PROCESSOR,
                               extra_hint=PROCESSOR_FILES_HINT)
    transform = transform_from_processor(processor_source, model="pickscore", hub_repo=HUB_PROCESSOR,
                                         crop_offset="floor", extra_hint=PROCESSOR_FILES_HINT)
    model = PickScore(clip, tokenizer, transform, max_batch_size=max_batch_size)
    return prepare(model, device=device, dtype=dtype, source=source)
