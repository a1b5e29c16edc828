"""Repaint the masked part of an image with a diffusers inpainting pipeline, N candidates at a time, and paste each
back so that every pixel outside the mask is exactly the input's.

Two kinds of checkpoints work through the same `AutoPipelineForInpainting`:
- inpainting checkpoints (a 9-channel UNet that sees the mask and the masked image), and
- ordinary text-to-image checkpoints (4-channel UNet, like the embedded ShapesWorld model): diffusers then re-noises
  the original latents outside the mask after every step and blends them in (the "legacy" RePaint-like path).

Either way the pipeline decodes the whole latent, so pixels outside the mask drift a little (VAE round trip, and the
9-channel models change them freely): `composite` puts the original back in pixel space with a feathered alpha that
is exactly 0 outside the mask.

With `crop_padding`, diffusers' `padding_mask_crop` cuts a box around the mask (plus the padding, widened to the
image's aspect ratio), inpaints it at the working resolution (more pixels for the defect) and pastes it back.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image


def load_inpaint_pipeline(model: Optional[str] = None, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """An inpainting pipeline from the embedded ShapesWorld inpainting model (None or "embedded"; "embedded-generator"
    is the ordinary embedded generator), a local diffusers folder or a hub id: an inpainting checkpoint loads as
    itself, an ordinary one as the matching inpaint pipeline over its components."""
    from ..generation import load_pipeline

    pipe = load_pipeline(model, device=device, dtype=dtype, task="inpaint")  # one place for "folder missing" errors
    channels = pipe.unet.config.in_channels
    if channels not in (4, 9):
        raise ValueError(f"{model}: its UNet takes {channels} input channels; inpainting works with ordinary (4) and "
                         "inpainting (9) checkpoints")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def latent_cell(pipe) -> int:
    """Pixels per latent cell (the VAE's downsampling factor): the mask's resolution inside the pipeline."""
    return int(getattr(pipe, "vae_scale_factor", 8))


def to_uint8(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    return (np.clip(np.asarray(image), 0.0, 1.0) * 255.0).round().astype(np.uint8)


@torch.no_grad()
def inpaint_candidates(pipe, image: np.ndarray, mask: np.ndarray, prompt: str, seeds: Sequence[int], *,
                       crop_padding: Optional[int] = None, batch_size: Optional[int] = None,
                       **sampling) -> list[np.ndarray]:
    """One uint8 (H, W, 3) candidate per seed, at the image's size, *not yet composited*.

    The candidates of one image come out of one pipeline call (`num_images_per_prompt`; `batch_size` splits them
    into several calls to bound memory). Each candidate has its own generator seeded with its seed. diffusers also
    draws the VAE's posterior sample of the input from the *first* generator of a call before the noise, so the
    first candidate of a call is the same drawn alone or with others (N=1 is candidate 0 of N=8), while the others
    depend on their seed and on the call's first seed: a result is reproduced from its seeds and batch size.
    `sampling` goes to the pipeline (strength, num_inference_steps, guidance_scale, height, width, ...).
    """
    if not mask.any():
        raise ValueError("inpaint_candidates got an empty mask: there is nothing to repaint")
    height, width = image.shape[:2]
    pil_image = Image.fromarray(image)
    pil_mask = Image.fromarray(mask.astype(np.uint8) * 255)
    seeds = [int(s) for s in seeds]
    step = batch_size or len(seeds)
    candidates: list[np.ndarray] = []
    for start in range(0, len(seeds), step):
        chunk = seeds[start : start + step]
        # Noise is drawn on the CPU, one generator per candidate: results match across devices and batch sizes.
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in chunk]
        output = pipe(prompt=prompt, image=pil_image, mask_image=pil_mask, num_images_per_prompt=len(chunk),
                      generator=generators, padding_mask_crop=crop_padding,
                      output_type="pil" if crop_padding else "np", **sampling)  # the crop path pastes PIL images
        for result in output.images:
            result = to_uint8(result)
            if result.shape[:2] != (height, width):  # the pipeline ran at another working resolution
                result = np.asarray(Image.fromarray(result).resize((width, height), Image.BICUBIC))
            candidates.append(result)
    return candidates


def composite(original: np.ndarray, repaired: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 `original * (1 - alpha) + repaired * alpha`; where alpha is 0 the result *is* the original, bit for bit."""
    if original.shape != repaired.shape or alpha.shape != original.shape[:2]:
        raise ValueError(f"composite needs one size: image {original.shape}, repair {repaired.shape}, alpha "
                         f"{alpha.shape}")
    a = alpha.astype(np.float32)[..., None]
    blended = np.rint(original.astype(np.float32) * (1.0 - a) + repaired.astype(np.float32) * a)
    return np.where(a > 0, np.clip(blended, 0, 255), original).astype(np.uint8)
