"""CLIPScore (Hessel et al. 2021), the reference-free baseline: CLIP-S = w * max(cos(text, image), 0), w = 2.5.

As in the paper and its code (jmhessel/clipscore): CLIP ViT-B/32 (`openai/clip-vit-base-patch32` by default; any
transformers CLIP folder or hub id works), the prompt prefixed with "A photo depicts " (`prefix=""` turns that off, as
torchmetrics does), and the `clip` package's image preprocessing (shorter side to 224, bicubic, centre crop).
Like the `clip` package's tokenizer, text is cleaned first (ftfy's `fix_text`, HTML entities unescaped twice,
whitespace collapsed), which transformers' CLIP tokenizer does not do; a prefix without a trailing space gets one, as
in Hessel's code. fp32 by default (the paper's numbers were computed in fp16 on a GPU: `dtype="fp16"`).
Note torchmetrics' CLIPScore is another score: 100 * max(mean cos, 0) over a batch, ViT-L/14 by default, no prefix,
transformers' processor; `prefix=""`, `weight=100` give its scale, not its exact numbers.
"""

from __future__ import annotations

import torch

from .base import RewardModel, prepare, unique_prompts
from .hf_clip import l2_normalize, load_clip_model, load_tokenizer, pooled
from .preprocess import ImageTransform
from .weights import find_pretrained_folder

HUB_MODEL = "openai/clip-vit-base-patch32"
HESSEL_WEIGHT = 2.5
HESSEL_PREFIX = "A photo depicts "


def clean_text(text: str) -> str:
    """The `clip` package's text cleaning (ftfy's fix_text, HTML entities unescaped twice, whitespace collapsed), as
    open_clip's tokenizer keeps it."""
    from open_clip.tokenizer import basic_clean, whitespace_clean

    return whitespace_clean(basic_clean(text))


class CLIPScore(RewardModel):
    name = "clipscore"

    def __init__(self, clip, tokenizer, transform: ImageTransform, max_batch_size: int = 32,
                 weight: float = HESSEL_WEIGHT, prefix: str = HESSEL_PREFIX):
        super().__init__(transform, max_batch_size)
        self.clip = clip
        self.tokenizer = tokenizer
        self.weight = weight
        self.prefix = prefix + " " if prefix and not prefix.endswith(" ") else prefix
        self.max_text_length = clip.config.text_config.max_position_embeddings
        self.scale = f"{weight} x max(cosine(text, image), 0), in [0, {weight}]; a baseline, weakly tied to preference"

    def forward(self, prompts: list[str], pixel_values: torch.Tensor) -> torch.Tensor:
        texts, index = unique_prompts([clean_text(self.prefix + p) for p in prompts])
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_text_length,
                                return_tensors="pt").to(self.device)
        text = pooled(self.clip.get_text_features(input_ids=tokens["input_ids"],
                                                  attention_mask=tokens["attention_mask"]))
        text = l2_normalize(text.float())[index.to(self.device)]
        image = l2_normalize(pooled(self.clip.get_image_features(pixel_values=pixel_values)).float())
        return self.weight * (text * image).sum(-1).clamp(min=0)


def load_clipscore(weights=None, *, device="cpu", dtype="fp32", max_batch_size: int = 32,
                   weight: float = HESSEL_WEIGHT, prefix: str = HESSEL_PREFIX) -> CLIPScore:
    source = find_pretrained_folder(weights, model="clipscore", hub_repo=HUB_MODEL)
    clip = load_clip_model(source, model="clipscore", hub_repo=HUB_MODEL)
    tokenizer = load_tokenizer(source, model="clipscore", hub_repo=HUB_MODEL)
    # The clip package's preprocessing: torchvision Resize + CenterCrop on PIL (crop offset rounded).
    transform = ImageTransform(size=clip.config.vision_config.image_size, crop_offset="round", reference_resize="pil")
    model = CLIPScore(clip, tokenizer, transform, max_batch_size=max_batch_size, weight=weight, prefix=prefix)
    return prepare(model, device=device, dtype=dtype, source=source)
