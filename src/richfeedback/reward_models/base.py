"""The interface every reward model shares: `score(prompts, images)` and a `differentiable` path.

Images may be PIL images, file paths, uint8 arrays (H, W, 3) or (H, W), uint8 tensors (3, H, W), or float tensors in
[0, 1] shaped (3, H, W) or (B, 3, H, W). 8-bit RGB and grayscale inputs are preprocessed exactly as the model's
reference does (`ImageTransform.from_pixels`). Other modes are made RGB first (`imaging.to_rgb_array`: transparency
composited on white, palettes expanded, 16 bits scaled), then resized; the references resize in the image's own mode
and convert after (PIL resizes palette images nearest-neighbour, and dropping alpha shows whatever colour transparent
pixels hold), so scores of transparent or palette images differ from theirs, by choice. Float tensors go through the tensor version of the same recipe
(`ImageTransform.from_tensor`), which `differentiable` also uses so gradients reach the pixels.

Scores do not depend on batch composition: every model pads text with an attention mask (or a causal mask that
padding cannot reach), and images never interact. `score` runs the networks once per batch of `max_batch_size`
images (text encoders once per distinct prompt where the text does not see the image) and preprocesses the images of
a batch on `preprocess_threads` threads.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..imaging import load_rgb, to_rgb_array
from .preprocess import ImageTransform

ImageInput = Union[Image.Image, str, os.PathLike, np.ndarray, torch.Tensor]
Prompts = Union[str, Sequence[str], None]

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}

# A float image a little outside [0, 1] is rounding noise (e.g. a VAE decode); beyond this it is a range mistake.
RANGE_SLACK = 1e-3


def parse_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype {dtype} is not supported; use fp32, fp16 or bf16")
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use fp32, fp16 or bf16") from None


def as_image_list(images) -> list:
    """A list of single images from one image or a batch (a list, a (B, 3, H, W) tensor or a (B, H, W, 3) array)."""
    if isinstance(images, torch.Tensor):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (Image.Image, str, os.PathLike)):
        return [images]
    return list(images)


def load_image(image: ImageInput) -> Union[np.ndarray, torch.Tensor]:
    """A uint8 (H, W, 3) array for 8-bit inputs, or a float (3, H, W) tensor in [0, 1]; errors say what was wrong.

    Every `transform.from_pixels` receives such an array (RAHF's transform relies on it too).
    """
    if isinstance(image, (str, os.PathLike)):
        return load_rgb(image)  # raises ImageLoadError naming the file
    if isinstance(image, Image.Image):
        return to_rgb_array(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"a numpy image must be uint8 (H, W, 3), got {image.dtype}; pass float images as a torch "
                            "tensor (3, H, W) in [0, 1]")
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] in (3, 4):
            return image if image.shape[2] == 3 else to_rgb_array(Image.fromarray(image))
        raise ValueError(f"a numpy image must be shaped (H, W, 3) or (H, W), got {tuple(image.shape)}")
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must be shaped (3, H, W), got {tuple(image.shape)}")
        if image.dtype == torch.uint8:
            return image.permute(1, 2, 0).cpu().numpy()
        if not image.is_floating_point():
            raise TypeError(f"an image tensor must be uint8 or float in [0, 1], got {image.dtype}")
        check_unit_range(image)
        return image
    raise TypeError(f"cannot use {type(image).__name__} as an image: pass a PIL image, a path, a uint8 array "
                    "(H, W, 3) or a float tensor (3, H, W) in [0, 1]")


def check_unit_range(images: torch.Tensor) -> None:
    lo, hi = float(images.min()), float(images.max())
    if lo < -RANGE_SLACK or hi > 1 + RANGE_SLACK:
        raise ValueError(f"float images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; a diffusers VAE decodes "
                         "to [-1, 1]: pass (x / 2 + 0.5).clamp(0, 1)")


class RewardModel(torch.nn.Module):
    """A frozen scorer of (prompt, image) pairs. Subclasses set the class attributes and implement `forward`.

    name: the registry name ("pickscore", "hpsv2.1", ...).
    scale: what the numbers mean and their typical range, in words.
    higher_is_better: True for every model here; kept explicit for losses and rankings.
    needs_prompt: False for prompt-free scores (aesthetic): their `prompts` argument may be None.
    """

    name: str = ""
    scale: str = ""
    higher_is_better: bool = True
    needs_prompt: bool = True
    # Submodules that stay in float32 whatever `dtype` the model runs in: the small score heads, where half-precision
    # rounding would add error for no measurable speed gain.
    fp32_modules: tuple[str, ...] = ()

    def __init__(self, transform: ImageTransform, max_batch_size: int = 32):
        super().__init__()
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.transform = transform
        self.max_batch_size = max_batch_size
        self.compute_dtype = torch.float32  # the backbone's dtype; set by `prepare`
        self.source = ""  # where the weights came from, for reports
        # Threads that decode and resize the images of a batch in parallel (PIL releases the GIL while it works).
        # Single-threaded, 8-bit preprocessing of 512x512 images (~3 ms each) would cap a GPU at a few hundred
        # images/s; the results do not depend on this number.
        self.preprocess_threads = min(8, os.cpu_count() or 1)

    def forward(self, prompts: list[str], pixel_values: torch.Tensor) -> torch.Tensor:
        """(B,) float32 scores of preprocessed images (B, 3, size, size) in the model's dtype and their prompts."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype

    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """(3, size, size) float32 model input of one image (see the module docstring for which path it takes)."""
        if isinstance(image, Image.Image) and image.mode == "RGB" and isinstance(self.transform, ImageTransform):
            return self.transform.from_pixels(image)  # ImageTransform takes RGB PIL images: no copy to an array
        image = load_image(image)
        if isinstance(image, torch.Tensor):
            return self.transform.from_tensor(image[None].float())[0]
        return self.transform.from_pixels(image)

    def preprocess_batch(self, images: list) -> torch.Tensor:
        """(B, 3, size, size) float32 model inputs, decoded and preprocessed on `preprocess_threads` threads.

        Image by image, as the references do: one resize over a stack of large images is slower on a CPU than
        separate ones (it streams the whole stack through the cache), and inputs may differ in size.
        """
        return torch.stack(self._map(self.preprocess, images))

    def _map(self, function, items: list) -> list:
        if self.preprocess_threads > 1 and len(items) > 1:
            with ThreadPoolExecutor(min(self.preprocess_threads, len(items))) as pool:
                return list(pool.map(function, items))
        return [function(item) for item in items]

    @torch.no_grad()
    def score(self, prompts: Prompts, images, batch_size: Optional[int] = None) -> torch.Tensor:
        """(N,) float32 CPU scores of N images; `prompts` is one prompt for all, one per image, or None if unused."""
        images = as_image_list(images)
        prompts = self.prompts_for(prompts, len(images))
        batch_size = batch_size or self.max_batch_size
        scores = [torch.zeros(0)]
        for start in range(0, len(images), batch_size):
            pixel_values = self.preprocess_batch(images[start : start + batch_size])
            pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
            scores.append(self(prompts[start : start + batch_size], pixel_values).float().cpu())
        return torch.cat(scores)

    def differentiable(self, prompts: Prompts, images: torch.Tensor) -> torch.Tensor:
        """(B,) float32 scores of float images (B, 3, H, W) in [0, 1], with gradients flowing back to `images`.

        The weights stay frozen; batches larger than `max_batch_size` run in chunks (gradients still reach every image).
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            raise TypeError("differentiable() takes a float tensor (B, 3, H, W) in [0, 1]")
        check_unit_range(images.detach())
        prompts = self.prompts_for(prompts, images.shape[0])
        scores = []
        for start in range(0, images.shape[0], self.max_batch_size):
            chunk = images[start : start + self.max_batch_size].to(device=self.device, dtype=torch.float32)
            pixel_values = self.transform.from_tensor(chunk).to(self.dtype)
            scores.append(self(prompts[start : start + self.max_batch_size], pixel_values).float())
        return torch.cat(scores)

    def prompts_for(self, prompts: Prompts, n: int) -> list[str]:
        if prompts is None:
            if self.needs_prompt:
                raise ValueError(f"{self.name} scores an image against its prompt: give one prompt or one per image")
            return [""] * n
        if isinstance(prompts, str):
            return [prompts] * n
        prompts = list(prompts)
        if len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for {n} images: give one prompt (used for all) or one per "
                             "image")
        return prompts

    def extra_repr(self) -> str:
        return f"name={self.name!r}, source={self.source!r}, max_batch_size={self.max_batch_size}"


def prepare(model: RewardModel, *, device="cpu", dtype="fp32", source: str = "") -> RewardModel:
    """Frozen (eval mode, no parameter gradients: reward models judge, they do not learn), on `device`, in `dtype`."""
    dtype = parse_dtype(dtype)
    model.eval()
    model.requires_grad_(False)
    model.to(device=device, dtype=dtype)
    for name in model.fp32_modules:
        model.get_submodule(name).float()
    model.compute_dtype = dtype
    model.source = str(source)
    return model


def unique_prompts(prompts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """The distinct prompts in first-seen order, and for each input prompt its index among them.

    Text encoders whose output does not depend on the image run once per distinct prompt: scoring many images of
    one prompt encodes the prompt once.
    """
    order: dict[str, int] = {}
    index = [order.setdefault(p, len(order)) for p in prompts]
    return list(order), torch.tensor(index, dtype=torch.long)
