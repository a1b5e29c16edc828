"""An ordinary text-to-image UNet turned into the start of an inpainting one, as Stable Diffusion's inpainting
checkpoints began (runwayml/stable-diffusion-inpainting, stabilityai/stable-diffusion-2-inpainting).

diffusers' `StableDiffusionInpaintPipeline` feeds a 9-channel UNet `[noisy latents (4), mask (1), masked-image
latents (4)]`. The converted UNet has the 5 extra input channels at zero weight, so before any fine-tuning its
output is exactly the original's; `scripts/train_embedded_inpainter.py` fine-tunes it.
"""

from __future__ import annotations

import torch

MASK_CHANNELS = 1  # the mask at latent resolution


def inpainting_unet(unet):
    """A copy of `unet` (a diffusers UNet2DConditionModel) with `in_channels` + 1 + `in_channels` inputs, the new
    ones zero-initialised."""
    from diffusers import UNet2DConditionModel

    latent_channels = unet.config.in_channels
    config = dict(unet.config)
    config["in_channels"] = 2 * latent_channels + MASK_CHANNELS
    converted = UNet2DConditionModel.from_config(config)
    state = unet.state_dict()
    weight = state["conv_in.weight"]
    grown = torch.zeros(weight.shape[0], config["in_channels"], *weight.shape[2:], dtype=weight.dtype)
    grown[:, :latent_channels] = weight
    state["conv_in.weight"] = grown
    converted.load_state_dict(state)
    return converted.to(dtype=unet.dtype)
