"""ImageReward v1.0 (Xu et al. 2023), rebuilt on maintained libraries.

The `image-reward` 1.5 package does not import with transformers 5 (its BLIP `med.py` uses removed APIs), so this
module builds the same network from parts that are drop-in equal (checked against med.py with shared weights in the
reference notes, §4.2):

- `blip.visual_encoder`: BLIP's ViT-L/16 at 224 = timm's `VisionTransformer`; `forward_features` returns all 197
  tokens after the final norm, as BLIP's encoder does.
- `blip.text_encoder`: BLIP's BERT-base with cross-attention (med.py) = transformers' `BlipTextModel` built with
  `is_decoder=True` (without it the layers get no cross-attention) and called with `is_decoder=False` (no causal mask).
- `mlp`: five linear layers (heads.py) on the text encoder's [CLS] state (not replaced by [ENC]: ImageReward keeps
  [CLS]), then (r - 0.16717362830052426) / 1.0333394966054072.

The official `ImageReward.pt` is a bare state_dict of 625 keys with these module names; all but five load directly.
The five we skip on purpose, each checked or explained:

- `blip.text_encoder.embeddings.position_ids`: a buffer equal to arange(512) that transformers recomputes (we check
  that it is arange).
- `blip.vision_proj.{weight,bias}`, `blip.text_proj.{weight,bias}`: BLIP's contrastive projections, which the
  ImageReward score never uses.

API as in the package: `score(prompt, images)` and `inference_rank(prompt, images)`; the ReFL gradient path
(`score_gard` there) is `differentiable(prompts, images)`. Text: BERT uncased with [DEC] and [ENC] added (vocab
30524), padded to 35 tokens; images: the `clip` package's preprocessing (shorter side 224 bicubic, centre crop).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .base import RewardModel, as_image_list, prepare
from .heads import LinearMLPHead
from .preprocess import ImageTransform
from .weights import (CheckpointError, find_weights_file, load_state_dict_strictly, pretrained_not_found,
                      read_state_dict)

HUB_REPO = "THUDM/ImageReward"
CHECKPOINT_FILE = "ImageReward.pt"
MED_CONFIG_FILE = "med_config.json"
HUB_TOKENIZER = "google-bert/bert-base-uncased"

FOLDER_HINT = (f" Offline, put next to it {MED_CONFIG_FILE} (same repository) and BERT uncased's vocab.txt "
               f"(`hf download {HUB_TOKENIZER} vocab.txt`).")

POSITION_IDS_KEY = "blip.text_encoder.embeddings.position_ids"
SKIPPED_KEYS = {
    POSITION_IDS_KEY: "a buffer equal to arange(max_position_embeddings) that BlipTextModel recomputes",
    "blip.vision_proj.weight": "BLIP's contrastive image projection, unused by the ImageReward score",
    "blip.vision_proj.bias": "BLIP's contrastive image projection, unused by the ImageReward score",
    "blip.text_proj.weight": "BLIP's contrastive text projection, unused by the ImageReward score",
    "blip.text_proj.bias": "BLIP's contrastive text projection, unused by the ImageReward score",
}


@dataclass(frozen=True)
class ImageRewardConfig:
    """ImageReward v1.0's architecture; the defaults are the published ones (BLIP ViT-L/16 + med_config.json)."""

    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    # The text side is BLIP's med_config.json (BERT-base with cross-attention), whose encoder_width BLIP overwrites
    # with vision_width.
    vocab_size: int = 30524
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    max_text_length: int = 35
    reward_mean: float = 0.16717362830052426
    reward_std: float = 1.0333394966054072

    def with_med_config(self, path: Path) -> "ImageRewardConfig":
        """This config with the text fields of a BLIP med_config.json (other fields of that file do not apply)."""
        med = json.loads(Path(path).read_text())
        names = {f.name for f in fields(self)} - {"image_size", "patch_size", "vision_width", "vision_layers",
                                                    "vision_heads", "max_text_length", "reward_mean", "reward_std"}
        return replace(self, **{k: v for k, v in med.items() if k in names})


class BLIPEncoders(nn.Module):
    """BLIP's image encoder and image-grounded text encoder, named as in the checkpoint (`blip.*`)."""

    def __init__(self, config: ImageRewardConfig):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer
        from transformers import BlipTextConfig
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        self.visual_encoder = VisionTransformer(
            img_size=config.image_size, patch_size=config.patch_size, embed_dim=config.vision_width,
            depth=config.vision_layers, num_heads=config.vision_heads, mlp_ratio=4.0, qkv_bias=True, num_classes=0)
        text_config = BlipTextConfig(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size, encoder_hidden_size=config.vision_width,
            intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads, max_position_embeddings=config.max_position_embeddings,
            layer_norm_eps=config.layer_norm_eps, hidden_act=config.hidden_act,
            # is_decoder=True is what gives every layer its cross-attention; forward() runs it bidirectionally.
            is_decoder=True, add_cross_attention=True,
            # Token ids the scoring path never reads; set inside the vocabulary so reduced configs validate.
            pad_token_id=0, bos_token_id=config.vocab_size - 2, eos_token_id=None, sep_token_id=None)
        self.text_encoder = BlipTextModel(text_config, add_pooling_layer=False)


class ImageReward(RewardModel):
    name = "imagereward"
    scale = ("(mlp([CLS]) - 0.1672) / 1.0333: standardised over SD 1.4 generations, ~N(0, 1) (98% within [-2, 2]); "
             "compare images of the same prompt")
    fp32_modules = ("mlp",)

    def __init__(self, config: ImageRewardConfig, tokenizer, max_batch_size: int = 32):
        transform = ImageTransform(size=config.image_size, crop_offset="round", reference_resize="pil")
        super().__init__(transform, max_batch_size)
        self.config = config
        self.tokenizer = tokenizer
        self.blip = BLIPEncoders(config)
        self.mlp = LinearMLPHead(config.hidden_size)

    def forward(self, prompts: list[str], pixel_values: torch.Tensor) -> torch.Tensor:
        image_embeds = self.blip.visual_encoder.forward_features(pixel_values)
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.config.max_text_length,
                                return_tensors="pt").to(self.device)
        image_mask = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=self.device)
        text = self.blip.text_encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                                      encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask,
                                      is_decoder=False)
        reward = self.mlp(text.last_hidden_state[:, 0, :].float())
        return (reward - self.config.reward_mean) / self.config.reward_std

    @torch.no_grad()
    def inference_rank(self, prompt: str, images) -> tuple[list[int], list[float]]:
        """(ranks, rewards) of the candidate images of one prompt, as the package returns them: rank 1 is the best."""
        rewards = self.score(prompt, as_image_list(images))
        order = torch.argsort(rewards, descending=True)
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(1, len(order) + 1)
        return ranks.tolist(), rewards.tolist()


def load_bert_tokenizer(source: str):
    """BERT uncased plus BLIP's two added tokens, as BLIP's init_tokenizer: [DEC] as bos (30522) and [ENC] (30523)."""
    from transformers import BertTokenizer

    try:
        tokenizer = BertTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise pretrained_not_found("imagereward", source, err, hub_repo=HUB_TOKENIZER,
                                   extra=" (ImageReward's tokenizer: BERT uncased's vocab.txt next to ImageReward.pt "
                                         "works, or pass tokenizer=)") from None
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"extra_special_tokens": ["[ENC]"]})
    return tokenizer


def load_imagereward(weights=None, *, config: Optional[ImageRewardConfig] = None, tokenizer: Optional[str] = None,
                     device="cpu", dtype="fp32", max_batch_size: int = 32) -> ImageReward:
    """ImageReward from `ImageReward.pt` (a file or its folder). Next to it, `med_config.json` sets the text config
    (else the published one) and BERT's `vocab.txt` the tokenizer (else `tokenizer=`, default bert-base-uncased)."""
    path = find_weights_file(weights, model="imagereward", filename=CHECKPOINT_FILE, hub_repo=HUB_REPO,
                             extra=FOLDER_HINT)
    folder = Path(path).parent
    if config is None:
        config = ImageRewardConfig()
        if (folder / MED_CONFIG_FILE).is_file():
            config = config.with_med_config(folder / MED_CONFIG_FILE)
    tokenizer_source = tokenizer or (str(folder) if (folder / "vocab.txt").is_file() else HUB_TOKENIZER)
    text_tokenizer = load_bert_tokenizer(tokenizer_source)
    if len(text_tokenizer) != config.vocab_size:
        raise CheckpointError(f"imagereward: the tokenizer of {tokenizer_source} has {len(text_tokenizer)} tokens with "
                              f"[DEC] and [ENC], the text encoder {config.vocab_size}; use BERT uncased's vocabulary")

    state = read_state_dict(path, model="imagereward")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"imagereward: {path} is not a state_dict of tensors, as the official ImageReward.pt is")
    if POSITION_IDS_KEY in state:
        stored = state[POSITION_IDS_KEY].reshape(-1)
        if not torch.equal(stored, torch.arange(stored.numel(), dtype=stored.dtype)):
            raise CheckpointError(f"imagereward: {path} stores position_ids that are not arange(n); this loader "
                                  "relies on BlipTextModel recomputing them")
    model = ImageReward(config, text_tokenizer, max_batch_size=max_batch_size)
    load_state_dict_strictly(model, state, model="imagereward", path=path, skipped=SKIPPED_KEYS,
                             hint="a reduced model needs its ImageRewardConfig passed as config=")
    return prepare(model, device=device, dtype=dtype, source=str(path))
