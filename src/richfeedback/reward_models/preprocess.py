"""Image preprocessing of the reward models, matched to each reference's own recipe.

Every reward model here turns an RGB image into a normalised 224x224 tensor, but the references differ in details
that move scores (a 1-level pixel difference moves the LAION aesthetic score by ~4e-3):

- ImageReward, aesthetic, CLIPScore (the `clip` package's transform, torchvision on PIL): shorter side to 224
  (bicubic), centre crop with the offset rounded, ToTensor, CLIP mean/std.
- PickScore (transformers' CLIP processor, PIL backend): the same, but the crop offset is floored.
- HPSv2 / v2.1: ToTensor first, the longer side to 224 on the float tensor (bicubic, antialiased), zero padding to a
  centred square, CLIP mean/std.

`ImageTransform` describes one recipe and applies it two ways:

- `from_pixels(rgb)` takes an 8-bit image and computes exactly what the reference computes (PIL resize where the
  reference resizes with PIL), so published scores are reproduced.
- `from_tensor(images)` takes float images in [0, 1] and runs the same recipe on tensors, so gradients flow back to
  the pixels (reward guidance, ReFL-style fine-tuning). Where the reference resizes with PIL, the tensor resize
  follows PIL's structure: a horizontal pass, then a vertical one, each clipped to [0, 1] (PIL stores every pass as
  8-bit). That keeps it within ~1 uint8 level of PIL at every pixel; a single 2-D pass without the clipping differs by
  up to ~20 levels on high-frequency content. The remaining difference is PIL's rounding to 8 bits, which a float
  input does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

RESIZE_MODES = ("shortest", "longest")
CROP_OFFSETS = ("round", "floor")
REFERENCE_RESIZES = ("pil", "tensor")


@dataclass(frozen=True)
class ImageTransform:
    """One reference preprocessing recipe: resize, crop or pad to `size`, normalise with `mean` and `std`.

    resize: "shortest" scales the shorter side to `size` and centre-crops (CLIP); "longest" scales the longer side
        to `size` and zero-pads to a centred square (HPSv2).
    crop_offset: how the centre crop's offset is rounded when the margin is odd: "round" as torchvision's CenterCrop
        (Python's round, half to even), "floor" as transformers' image processors.
    reference_resize: "pil" where the reference resizes 8-bit PIL images, "tensor" where it resizes a float tensor
        with torchvision (one antialiased bicubic pass, no clipping).
    """

    size: int = 224
    resize: str = "shortest"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    crop_offset: str = "round"
    reference_resize: str = "pil"

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.crop_offset not in CROP_OFFSETS:
            raise ValueError(f"crop_offset must be one of {CROP_OFFSETS}, got {self.crop_offset!r}")
        if self.reference_resize not in REFERENCE_RESIZES:
            raise ValueError(f"reference_resize must be one of {REFERENCE_RESIZES}, got {self.reference_resize!r}")

    # -- geometry shared by both paths ------------------------------------------------------------------------------

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize step, computed as the reference computes it."""
        if self.resize == "shortest":
            # torchvision's Resize(int) and transformers' {"shortest_edge"} both truncate: int(size * long / short).
            if height <= width:
                return self.size, int(self.size * width / height)
            return int(self.size * height / width), self.size
        # HPSv2's ResizeMaxSize rounds each side: round(side * size / longest).
        scale = self.size / max(height, width)
        return round(height * scale), round(width * scale)

    def _crop_start(self, margin: int) -> int:
        return int(round(margin / 2.0)) if self.crop_offset == "round" else margin // 2

    def crop_box(self, height: int, width: int) -> tuple[int, int]:
        """(top, left) of the centre crop of a resized (height, width) image."""
        return self._crop_start(height - self.size), self._crop_start(width - self.size)

    def pad_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) zero padding that centres a resized (height, width) image in the square
        (torch.nn.functional.pad's order; the odd pixel goes right and bottom, as in HPSv2)."""
        pad_h, pad_w = self.size - height, self.size - width
        return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2

    # -- the two paths ----------------------------------------------------------------------------------------------

    def from_pixels(self, rgb: Union[np.ndarray, Image.Image]) -> torch.Tensor:
        """(3, size, size) float32 model input from an 8-bit RGB image (a uint8 (H, W, 3) array or an RGB PIL image),
        exactly as the reference computes it."""
        if isinstance(rgb, Image.Image):
            if rgb.mode != "RGB":
                raise ValueError(f"from_pixels takes RGB images, got mode {rgb.mode}; convert it first")
            image = rgb
        elif rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3:
            image = Image.fromarray(rgb)
        else:
            raise ValueError(f"from_pixels takes a uint8 (H, W, 3) array, got {rgb.dtype} {tuple(rgb.shape)}")
        if self.reference_resize == "tensor":
            # HPSv2 converts to a float tensor first and resizes that: the tensor path *is* its recipe.
            return self.from_tensor(pixels_to_unit_tensor(np.asarray(image))[None])[0]
        # The 8-bit recipe in PIL and numpy only: per-image torch calls would pay torch's threading overhead once per
        # image, which on a busy CPU costs more than the resize itself.
        new_h, new_w = self.resized_shape(image.height, image.width)
        resized = np.asarray(image.resize((new_w, new_h), Image.BICUBIC))
        if self.resize == "shortest":
            top, left = self.crop_box(new_h, new_w)
            resized = resized[top : top + self.size, left : left + self.size]
        x = resized.astype(np.float32) / np.float32(255.0)  # ToTensor's arithmetic, channels last
        if self.resize == "longest":
            left, right, top, bottom = self.pad_box(new_h, new_w)
            x = np.pad(x, ((top, bottom), (left, right), (0, 0)))
        x = (x - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def from_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, size, size) model input from float images (B, 3, H, W) in [0, 1]; differentiable."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"from_tensor takes float images shaped (B, 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        height, width = images.shape[-2:]
        new_h, new_w = self.resized_shape(height, width)
        if self.reference_resize == "pil":
            x = pil_like_resize(images, new_h, new_w)
        else:
            x = bicubic_resize(images, new_h, new_w)
        if self.resize == "shortest":
            top, left = self.crop_box(new_h, new_w)
            x = x[:, :, top : top + self.size, left : left + self.size]
        else:
            x = F.pad(x, self.pad_box(new_h, new_w))
        return self.normalize(x)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std


def pixels_to_unit_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] from a uint8 (H, W, 3) array, as torchvision's ToTensor computes it."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0)


def bicubic_resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """torchvision's tensor resize (bicubic, antialiased; identical to `torchvision.transforms.functional.resize`)."""
    if (height, width) == tuple(images.shape[-2:]):
        return images
    return F.interpolate(images, size=(height, width), mode="bicubic", align_corners=False, antialias=True)


def pil_like_resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize structured like PIL's: horizontal pass, then vertical, each clipped to [0, 1].

    PIL uses the same antialiased bicubic kernel (a = -0.5) as torch's `antialias=True`, but stores the result of each
    pass as 8-bit, which clips the kernel's overshoot; without the intermediate clip, edges differ by up to ~20
    levels. Clipping only zeroes the gradient where a value is outside [0, 1].
    """
    x = images
    if width != x.shape[-1]:
        x = F.interpolate(x, size=(x.shape[-2], width), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0.0, 1.0)
    if height != x.shape[-2]:
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0.0, 1.0)
    return x
