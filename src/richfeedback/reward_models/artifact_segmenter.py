"""A pixel-level artifact segmenter: image -> probability that each pixel is part of an artifact.

RAHF's implausibility heatmap is decoded from ViT patch tokens. At the embedded RAHF's size (64x64 images, 8x8
patches, an 8x8 token grid) it sees injected artifacts, which are blobs and scribbles of a patch or more, but not the
embedded generator's own flaws: a few pixels of ragged edge or a rounded corner (0.2-1.5% of the image), so
`inpaint-fix` found nothing to repair on the generator's images (the heatmap peaks below 0.01 on most of them;
fine-tuning RAHF on feedback about generated images made its heat rise on every object alike; README, "Repairing
images"). The real RAHF reads 448x448 images as a 28x28 token grid, 3.5x finer per side than the embedded one.

This model is the other design for that job: a small U-Net at full resolution (a 3x3 conv in, three levels of
diffusers' `ResnetBlock2D`, average-pool down, nearest up, skip connections by concatenation, a 1x1 conv to one logit per
pixel), trained on images with per-pixel artifact labels (`scripts/train_embedded_artifact_segmenter.py`). It takes no
prompt: whether a pixel is damage does not depend on what was asked for (misalignment is RAHF's other heatmap).
`inpaint-fix` uses it beside RAHF (`--artifact-model`): the implausibility heatmap becomes the pixelwise maximum of
RAHF's and this model's, for the mask and for the mask-heat selection reward.

It saves and loads as a diffusers model folder (`config.json` + `diffusion_pytorch_model.safetensors`):

    model = ArtifactSegmenter.from_pretrained("src/richfeedback/embedded/shapes-artifact-segmenter")
    heat = model.heatmaps(images)            # (N, H, W) float32 in [0, 1] at the images' own size
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D

from ..errors import UsageError
from .base import as_image_list, load_image

EMBEDDED_ARTIFACT_SEGMENTER = Path(__file__).resolve().parents[1] / "embedded" / "shapes-artifact-segmenter"


def pixel_values(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1], the model's input (training batches use it as is)."""
    return torch.tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # a copy: inputs may be read-only


class ArtifactSegmenter(ModelMixin, ConfigMixin):
    """(B, 3, S, S) images in [-1, 1] -> (B, 1, S, S) artifact logits; S divisible by 2 ** (levels - 1)."""

    @register_to_config
    def __init__(self, block_out_channels: Sequence[int] = (16, 32, 64), norm_num_groups: int = 8,
                 sample_size: int = 64):
        super().__init__()
        channels = list(block_out_channels)
        if sample_size % 2 ** (len(channels) - 1):
            raise ValueError(f"sample_size {sample_size} must be divisible by {2 ** (len(channels) - 1)} for "
                             f"{len(channels)} levels")
        self.conv_in = torch.nn.Conv2d(3, channels[0], kernel_size=3, padding=1)
        self.down = torch.nn.ModuleList()
        previous = channels[0]
        for width in channels:
            self.down.append(ResnetBlock2D(in_channels=previous, out_channels=width, temb_channels=None,
                                           groups=norm_num_groups))
            previous = width
        self.up = torch.nn.ModuleList()
        for width in reversed(channels[:-1]):  # each level: the coarser level's output upsampled + this level's skip
            self.up.append(ResnetBlock2D(in_channels=previous + width, out_channels=width, temb_channels=None,
                                         groups=norm_num_groups))
            previous = width
        self.conv_out = torch.nn.Conv2d(previous, 1, kernel_size=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        skips = []
        hidden = self.conv_in(pixel_values)
        for i, block in enumerate(self.down):
            if i > 0:
                hidden = F.avg_pool2d(hidden, 2)
            hidden = block(hidden, None)
            skips.append(hidden)
        skips.pop()  # the coarsest level's output is `hidden` itself
        for block in self.up:
            hidden = F.interpolate(hidden, scale_factor=2, mode="nearest")
            hidden = block(torch.cat([hidden, skips.pop()], dim=1), None)
        return self.conv_out(hidden)

    def preprocess(self, images) -> torch.Tensor:
        """Images (PIL, uint8 arrays, paths, or float tensors in [0, 1]) -> (N, 3, S, S) in [-1, 1] at the model's
        working size (bilinear resize when they differ)."""
        size = self.config.sample_size
        batch = []
        for image in as_image_list(images):
            image = load_image(image)
            # uint8 arrays as in training; float tensors in [0, 1] to the same scale
            image = pixel_values(image[None])[0] if isinstance(image, np.ndarray) else image.float() * 2.0 - 1.0
            if image.shape[-2:] != (size, size):
                image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False,
                                      antialias=True)[0]
            batch.append(image)
        return torch.stack(batch)

    @torch.no_grad()
    def heatmaps(self, images, max_batch_size: int = 64) -> torch.Tensor:
        """(N, H, W) float32 probabilities on the CPU, at the first image's size (all images must share it)."""
        images = [load_image(image) for image in as_image_list(images)]
        batch = self.preprocess(images)
        height, width = _size_of(images[0])
        parameter = next(self.parameters())
        parts = []
        for start in range(0, len(batch), max_batch_size):
            chunk = batch[start : start + max_batch_size].to(parameter.device, parameter.dtype)
            parts.append(torch.sigmoid(self(chunk).float()).cpu())
        heat = torch.cat(parts)
        if tuple(heat.shape[-2:]) != (height, width):
            heat = F.interpolate(heat, size=(height, width), mode="bilinear", align_corners=False)
        return heat[:, 0]


def _size_of(image) -> tuple[int, int]:
    return tuple(image.shape[:2]) if isinstance(image, np.ndarray) else tuple(image.shape[-2:])


def check_artifact_segmenter_folder(folder: str | os.PathLike) -> None:
    """A clear error, before anything heavy is loaded, when `folder` cannot be a segmenter."""
    fix = ("--artifact-model takes 'embedded', 'none' or the folder that "
           "scripts/train_embedded_artifact_segmenter.py wrote (--out)")
    if not Path(folder).exists():
        raise UsageError(f"{folder}: no such folder; {fix}")
    if not (Path(folder) / "config.json").is_file():
        raise UsageError(f"{folder} is not an artifact segmenter folder (no config.json); {fix}")


def load_artifact_segmenter(path: Optional[str | os.PathLike] = None, device: str = "cpu",
                            dtype: torch.dtype = torch.float32) -> ArtifactSegmenter:
    """The segmenter in `path` (a diffusers model folder), or the embedded ShapesWorld one."""
    folder = Path(path) if path is not None else EMBEDDED_ARTIFACT_SEGMENTER
    check_artifact_segmenter_folder(folder)
    try:
        model = ArtifactSegmenter.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise UsageError(f"cannot load the artifact segmenter in {folder}: {error}") from None
    return model.to(device).eval()


class WithArtifactSegmenter:
    """A RAHF reward whose implausibility heatmap is the pixelwise maximum of RAHF's and the segmenter's, the
    segmenter's probabilities below `cut` zeroed (a per-pixel classifier says "artifact" above 0.5; below it, its
    faint heat on every edge would only lower the mask's relative cut). Everything else (scores, the misalignment
    heatmap, `for_score`, ...) is RAHF's own; `outputs` and `heatmaps` have RAHF's signatures, so the
    wrapper goes wherever inpaint-fix takes a heatmap model."""

    def __init__(self, rahf, segmenter: ArtifactSegmenter, cut: float = 0.5):
        if not 0.0 <= cut < 1.0:
            raise ValueError(f"the artifact segmenter's cut must be in [0, 1), got {cut}")
        self.rahf = rahf
        self.segmenter = segmenter
        self.cut = cut

    def __getattr__(self, name):  # only called for what the wrapper itself lacks: RAHF's attributes
        if name.startswith("__") or "rahf" not in self.__dict__:  # copy/pickle probe a bare instance
            raise AttributeError(name)
        return getattr(self.__dict__["rahf"], name)

    def to(self, *args, **kwargs) -> "WithArtifactSegmenter":
        """Both models moved (RAHF's `.to` alone would return the bare RAHF and leave the segmenter behind)."""
        self.rahf = self.rahf.to(*args, **kwargs)
        self.segmenter = self.segmenter.to(*args, **kwargs)
        return self

    def eval(self) -> "WithArtifactSegmenter":
        self.rahf.eval()
        self.segmenter.eval()
        return self

    def segmenter_heat(self, images, size: tuple[int, int]) -> torch.Tensor:
        """(N, *size) the segmenter's heat with its cut applied, resized to RAHF's heatmap size."""
        heat = self.segmenter.heatmaps(images)
        heat = torch.where(heat >= self.cut, heat, torch.zeros_like(heat))
        if tuple(heat.shape[-2:]) != tuple(size):
            heat = F.interpolate(heat[:, None], size=tuple(size), mode="bilinear", align_corners=False,
                                 antialias=size[0] < heat.shape[-2])[:, 0]  # a thin artifact survives a downsample
        return heat

    def outputs(self, prompts, images, names) -> dict[str, torch.Tensor]:
        images = as_image_list(images)
        out = self.rahf.outputs(prompts, images, names)
        if "implausibility" in out:
            rahf_heat = out["implausibility"]
            out["implausibility"] = torch.maximum(rahf_heat, self.segmenter_heat(images, rahf_heat.shape[-2:]))
        return out

    def heatmaps(self, prompts, images) -> dict[str, torch.Tensor]:
        return self.outputs(prompts, images, ("implausibility", "misalignment"))
