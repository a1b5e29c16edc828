"""HPSv2 and HPSv2.1 (Wu et al. 2023): open_clip ViT-H-14 fine-tuned on HPD v2 preferences.

    score = 100 * cos(image, text)

The x100 cosine is what the HPSv2 benchmark (`evaluation.py`) reports; `hpsv2.score()` returns the bare cosine, and
preference accuracy uses logit_scale * cos (same ranking). v2.0 and v2.1 scores are not comparable with each other.

Weights: the official `HPS_v2_compressed.pt` / `HPS_v2.1_compressed.pt` ({"state_dict": ...}, the standard open_clip
ViT-H-14 keys) from `weights`, else the hub repository `xswu/HPSv2`. The model is upstream open_clip's ViT-H-14 built
with `create_model(..., pretrained=None)`, which has the same keys and features as the fork HPSv2 vendors.

Preprocessing is HPSv2's own (`light_augmentation=True`): ToTensor first, the longer side to 224 on the float tensor
(bicubic, antialiased), zero padding to a centred square, CLIP mean/std. Two deliberate differences: RGBA inputs are
composited on white here (HPSv2 keeps 4 channels and fails), and an image whose longer side is already 224 is padded
(HPSv2 skips the padding and fails on non-square ones). The resize passes no `antialias` flag in HPSv2, so it follows
torchvision's default: antialiased since torchvision 0.17 (what `pip install hpsv2` computes today, and what we match
bit for bit), not antialiased for tensors up to 0.16, which is likely what HPSv2.0 was trained and benchmarked with in
2023; downscaled photos can then score slightly differently from the published tables.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Optional

import torch

from .base import RewardModel, prepare, unique_prompts
from .preprocess import ImageTransform
from .weights import CheckpointError, find_weights_file, load_state_dict_strictly, read_state_dict

HUB_REPO = "xswu/HPSv2"
FILES = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
NAMES = {"v2.0": "hpsv2", "v2.1": "hpsv2.1"}
ARCHITECTURE = "ViT-H-14"


class HPSv2(RewardModel):
    scale = ("100 x cosine(image, text), as the HPSv2 benchmark reports it (model averages ~24-28 on v2.0, ~15-31 on "
             "v2.1); compare images of the same prompt, and never v2.0 with v2.1 scores")

    def __init__(self, clip, tokenizer, transform: ImageTransform, version: str, max_batch_size: int = 32):
        super().__init__(transform, max_batch_size)
        self.clip = clip
        self.tokenizer = tokenizer
        self.version = version
        self.name = NAMES[version]

    def forward(self, prompts: list[str], pixel_values: torch.Tensor) -> torch.Tensor:
        texts, index = unique_prompts(prompts)
        # open_clip pads with 0 after the end token; its causal mask and end-token pooling never see the padding.
        tokens = self.tokenizer(texts).to(self.device)
        text = self.clip.encode_text(tokens, normalize=True).float()[index.to(self.device)]
        image = self.clip.encode_image(pixel_values, normalize=True).float()
        return 100.0 * (image * text).sum(-1)


@contextmanager
def _without_root_warnings():
    """open_clip logs "No pretrained weights loaded ... initialized randomly" on the root logger; we load them next."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def build_open_clip(config: Optional[dict] = None):
    """open_clip's ViT-H-14, random weights, nothing downloaded. `config` (open_clip's model-config schema: embed_dim,
    vision_cfg, text_cfg) replaces the built-in one; tests use it for a reduced model with the same key structure."""
    import open_clip

    overrides = {} if config is None else {k: config[k] for k in ("embed_dim", "vision_cfg", "text_cfg")}
    with _without_root_warnings():
        return open_clip.create_model(ARCHITECTURE, pretrained=None, **overrides)


def load_hps(weights=None, *, version: str = "v2.1", config: Optional[dict] = None, device="cpu", dtype="fp32",
             max_batch_size: int = 32) -> HPSv2:
    import open_clip

    if version not in FILES:
        raise ValueError(f"HPS version must be one of {list(FILES)}, got {version!r}")
    name = NAMES[version]
    path = find_weights_file(weights, model=name, filename=FILES[version], hub_repo=HUB_REPO)
    checkpoint = read_state_dict(path, model=name)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{name}: {path} is not an HPS checkpoint: the official files hold {{'state_dict': ...}}")
    # Other top-level entries of a training checkpoint (epoch, name) carry no weights and are not read.
    clip = build_open_clip(config)
    load_state_dict_strictly(clip, checkpoint["state_dict"], model=name, path=path,
                             hint="a reduced model needs its open_clip config passed as config=")
    context_length = (config or open_clip.get_model_config(ARCHITECTURE))["text_cfg"]["context_length"]
    tokenizer = open_clip.get_tokenizer(ARCHITECTURE, context_length=context_length)
    transform = ImageTransform(size=clip.visual.image_size[0], resize="longest", reference_resize="tensor")
    model = HPSv2(clip, tokenizer, transform, version, max_batch_size=max_batch_size)
    return prepare(model, device=device, dtype=dtype, source=str(path))


def load_hpsv2(weights=None, **options) -> HPSv2:
    return load_hps(weights, version="v2.0", **options)


def load_hpsv2_1(weights=None, **options) -> HPSv2:
    return load_hps(weights, version="v2.1", **options)
