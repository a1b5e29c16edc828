"""RAHF's configuration, and the named sizes built from JSON files in `model_configs/` (no download needed).

    config = RAHFConfig.from_size("large")                      # the public checkpoint's layout: ViT-L/16-384 + t5-base
    config = RAHFConfig.from_size("shapes", variant="augmented_prompt")
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PretrainedConfig, T5Config, ViTConfig

MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"
SCORE_NAMES = ("plausibility", "alignment", "aesthetics", "overall")
HEATMAP_NAMES = ("implausibility", "misalignment")
VARIANTS = ("multi_head", "augmented_prompt")


def available_sizes() -> list[str]:
    return sorted(p.stem for p in MODEL_CONFIGS.glob("*.json"))


class RAHFConfig(PretrainedConfig):
    """ViT + T5 sizes, head widths, and the variant.

    `variant`: "multi_head" has one heatmap head per map and one score head per score (the released checkpoint);
    "augmented_prompt" has one shared head per output type and names the wanted output in the prompt
    (`"<output> SCORE: plausibility </output> {prompt}"`), re-encoding once per output.
    """

    model_type = "rahf"

    def __init__(self, vit: dict | None = None, t5: dict | None = None, variant: str = "multi_head",
                 heatmap_conv_channels=(768, 384), heatmap_up_channels=(768, 384, 384, 192),
                 score_conv_channels=(768, 384, 192, 96, 48, 12), score_hidden_sizes=(512, 128),
                 tokenizer: str = "t5-base", max_prompt_tokens: int = 512, max_new_tokens: int = 100,
                 marker_logit_bias: float = 0.0, marker_token_id: int | None = None, **kwargs):
        kwargs.pop("_comment", None)
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.vit = dict(vit or {})
        self.t5 = dict(t5 or {})
        self.variant = variant
        self.heatmap_conv_channels = list(heatmap_conv_channels)
        self.heatmap_up_channels = list(heatmap_up_channels)
        self.score_conv_channels = list(score_conv_channels)
        self.score_hidden_sizes = list(score_hidden_sizes)
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        # Decoding the marked prompt: `marker_logit_bias` is subtracted from the logit of `marker_token_id` (the
        # token that starts a word's "_0" mark) at every step, a decision threshold chosen on a dev split
        # (`evaluate.choose_marker_bias`). 0 is plain greedy decoding, as the reference.
        self.marker_logit_bias = float(marker_logit_bias)
        self.marker_token_id = marker_token_id

    @classmethod
    def from_size(cls, size: str, **overrides) -> "RAHFConfig":
        path = MODEL_CONFIGS / f"{size}.json"
        if not path.exists():
            raise ValueError(f"unknown RAHF size {size!r}; available: {available_sizes()} (files in {MODEL_CONFIGS})")
        values = json.loads(path.read_text())
        values.update(overrides)
        return cls(**values)

    def vit_config(self) -> ViTConfig:
        return ViTConfig(**self.vit)

    def t5_config(self) -> T5Config:
        return T5Config(**self.t5)

    @property
    def grid_size(self) -> int:
        image, patch = self.vit["image_size"], self.vit["patch_size"]
        if image % patch:
            raise ValueError(f"image_size {image} is not a multiple of patch_size {patch}")
        return image // patch

    @property
    def num_upsampling_stages(self) -> int:
        stages = self.vit["patch_size"].bit_length() - 1
        if 2 ** stages != self.vit["patch_size"]:
            raise ValueError(f"patch_size must be a power of two for the heatmap head, got {self.vit['patch_size']}")
        return stages
