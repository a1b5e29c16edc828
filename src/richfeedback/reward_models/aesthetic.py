"""LAION aesthetic predictor v2 (christophschuhmann/improved-aesthetic-predictor): an MLP on CLIP ViT-L/14 embeddings.

    score = MLP(e / ||e||),  e = CLIP ViT-L/14 image embedding (768-d)

The L2 normalisation matters: unnormalised embeddings give scores of 20-30+. Prompt-free; differentiable.

Weights: `sac+logos+ava1-l14-linearMSE.pth` (a plain state_dict `layers.{0,2,4,6,7}.{weight,bias}`, stored as CUDA
tensors) from `weights` (the file, or a folder holding it), else the hub mirror `camenduru/improved-aesthetic-predictor`
(the original lives in the GitHub repository). The backbone is OpenAI's CLIP ViT-L/14 as a transformers folder: a
`clip/` folder next to the .pth, or `clip=` (a folder or hub id; default `openai/clip-vit-large-patch14`, the same
weights the reference loads through the `clip` package). Only its image tower is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from .base import RewardModel, prepare
from .heads import LinearMLPHead
from .hf_clip import load_clip_model
from .preprocess import ImageTransform
from .weights import CheckpointError, find_weights_file, load_state_dict_strictly, read_state_dict

MLP_FILE = "sac+logos+ava1-l14-linearMSE.pth"
HUB_MLP = "camenduru/improved-aesthetic-predictor"
GITHUB_MLP = f"https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/{MLP_FILE}"
HUB_CLIP = "openai/clip-vit-large-patch14"


class AestheticPredictor(RewardModel):
    name = "aesthetic"
    scale = "LAION aesthetic v2: regression onto 1-10 ratings (AVA, SAC, logos), typically ~4-7; unbounded"
    needs_prompt = False
    fp32_modules = ("mlp",)

    def __init__(self, vision, mlp: LinearMLPHead, transform: ImageTransform, max_batch_size: int = 32):
        super().__init__(transform, max_batch_size)
        self.vision = vision
        self.mlp = mlp

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 image embeddings, with the reference's rule that a zero norm divides by 1."""
        embedding = self.vision(pixel_values=pixel_values).image_embeds.float()
        norm = embedding.norm(dim=-1, keepdim=True)
        return embedding / torch.where(norm == 0, torch.ones_like(norm), norm)

    def forward(self, prompts: list[str], pixel_values: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(pixel_values))


def load_aesthetic(weights=None, *, device="cpu", dtype="fp32", max_batch_size: int = 32,
                   clip: Optional[str] = None) -> AestheticPredictor:
    mlp_path = find_weights_file(weights, model="aesthetic", filename=MLP_FILE, hub_repo=HUB_MLP,
                                 extra=f" (The original is {GITHUB_MLP}.) Offline, also put a transformers copy of "
                                       f"{HUB_CLIP} in a clip/ folder next to it.")
    bundled = Path(mlp_path).parent / "clip"
    clip_source = clip or (str(bundled) if (bundled / "config.json").is_file() else HUB_CLIP)
    vision = load_clip_model(
        clip_source, model="aesthetic", hub_repo=HUB_CLIP, image_tower_only=True,
        extra_hint=f" (the CLIP backbone: put a transformers copy of {HUB_CLIP} in {bundled}, or pass clip=)")

    state = read_state_dict(mlp_path, model="aesthetic")
    if "layers.0.weight" not in state:
        raise CheckpointError(f"aesthetic: {mlp_path} has no layers.0.weight: not an improved-aesthetic-predictor MLP "
                              "(expected sac+logos+ava1-l14-linearMSE.pth, keys layers.{0,2,4,6,7})")
    input_size = state["layers.0.weight"].shape[1]
    if input_size != vision.config.projection_dim:
        raise CheckpointError(f"aesthetic: the MLP in {mlp_path} takes {input_size}-d embeddings but the backbone "
                              f"{clip_source} gives {vision.config.projection_dim}-d (the MLP needs CLIP ViT-L/14)")
    mlp = LinearMLPHead(input_size)
    load_state_dict_strictly(mlp, state, model="aesthetic", path=mlp_path,
                             hint="ava+logos-l14-reluMSE.pth has ReLUs and other keys and is not supported")

    # The `clip` package's preprocessing: torchvision Resize + CenterCrop on PIL (crop offset rounded).
    transform = ImageTransform(size=vision.config.image_size, crop_offset="round", reference_resize="pil")
    model = AestheticPredictor(vision, mlp, transform, max_batch_size=max_batch_size)
    return prepare(model, device=device, dtype=dtype, source=str(mlp_path))
