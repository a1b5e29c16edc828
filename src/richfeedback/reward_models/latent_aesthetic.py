"""A noise-aware aesthetic predictor on a diffusion model's latents: the classifier of classifier guidance.

Dhariwal & Nichol's classifier guidance trains its classifier on noisy inputs x_t, with the timestep as an input, so
that the classifier's gradient at x_t means something at every noise level. Guiding with an image-space reward
instead (decode the predicted x0, score the image, backpropagate; `guidance.RewardGuidance`'s cheap and accurate
paths) follows a model that has only seen clean images, and past a small gain its gradient mostly finds pixel
patterns that fool it (on ShapesWorld: colour blends inside shapes, which RAHF's aesthetics head rates up and the
exact aesthetics rates down). This model is the other design:

    LatentAestheticModel(x_t, t) -> predicted aesthetic score of the clean image,

trained on x_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps, where z0 are the VAE latents (posterior mean times the
VAE's scaling factor, as the pipelines' latents) of rated images and abar is the noise schedule of the diffusion
model it will guide (`scripts/train_latent_aesthetic.py`). Guidance then takes the gradient at x_t directly: no
decoder, no reward network on pixels, so a guided step costs one small network's forward and backward pass.

It is a small ResNet over the latents built from diffusers' UNet blocks (`Timesteps` + `TimestepEmbedding`,
`ResnetBlock2D` with the time embedding, `Downsample2D`), global average pooling and a linear head; it saves and
loads as a diffusers model (`config.json` + `diffusion_pytorch_model.safetensors`). Its config also says what it was
trained against, which guidance checks before it runs: the latent channels, the VAE (`vae`: "embedded", a folder or
a hub id; `vae_subfolder`) and the noise schedule (`schedule`: the scheduler's beta settings).

`LatentAestheticReward` puts it behind the reward-model interface: `score`/`differentiable` take images, encode them
with that VAE and score them at t = 0; `noisy_latent_score(latents, timesteps)` is what guidance calls.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D

from .base import RewardModel, prepare
from .preprocess import ImageTransform

EMBEDDED_LATENT_AESTHETIC = Path(__file__).resolve().parents[1] / "embedded" / "shapes-latent-aesthetic"
# The scheduler settings that define abar_t, the noise levels the model was trained on.
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "rescale_betas_zero_snr")


class LatentAestheticModel(ModelMixin, ConfigMixin):
    """(B, C, h, w) variance-preserving noisy latents and (B,) timesteps -> (B,) float32 predicted scores."""

    @register_to_config
    def __init__(self, latent_channels: int = 4, block_out_channels: Sequence[int] = (64, 128),
                 layers_per_block: int = 1, norm_num_groups: int = 8, time_embedding_dim: int = 128,
                 sample_size: int = 16, vae: str = "embedded", vae_subfolder: Optional[str] = None,
                 schedule: Optional[dict] = None):
        super().__init__()
        channels = list(block_out_channels)
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(channels[0], time_embedding_dim)
        self.conv_in = torch.nn.Conv2d(latent_channels, channels[0], kernel_size=3, padding=1)
        self.resnets = torch.nn.ModuleList()
        self.downsamplers = torch.nn.ModuleList()
        previous = channels[0]
        for i, width in enumerate(channels):
            for _ in range(layers_per_block):
                self.resnets.append(ResnetBlock2D(in_channels=previous, out_channels=width,
                                                  temb_channels=time_embedding_dim, groups=norm_num_groups))
                previous = width
            # Downsample between levels (not after the last): 16x16 latents -> 8x8 -> ... with two levels.
            self.downsamplers.append(Downsample2D(width, use_conv=True, out_channels=width, name="op")
                                     if i < len(channels) - 1 else torch.nn.Identity())
        self.norm_out = torch.nn.GroupNorm(norm_num_groups, previous)
        self.head = torch.nn.Linear(previous, 1)

    def forward(self, latents: torch.Tensor, timesteps) -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps, device=latents.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(latents.shape[0])
        emb = self.time_embedding(self.time_proj(timesteps).to(latents.dtype))
        hidden = self.conv_in(latents)
        per_level = self.config.layers_per_block
        for level, downsample in enumerate(self.downsamplers):
            for resnet in self.resnets[level * per_level : (level + 1) * per_level]:
                hidden = resnet(hidden, emb)
            hidden = downsample(hidden)
        hidden = F.silu(self.norm_out(hidden)).mean(dim=(2, 3))
        return self.head(hidden).squeeze(1).float()


def schedule_of(scheduler_config) -> dict:
    """The settings of a diffusers scheduler config (a dict, as `scheduler.config` is) that fix its training noise
    levels."""
    return {key: scheduler_config.get(key) for key in SCHEDULE_KEYS}


def add_noise(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
              alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (what `DDPMScheduler.add_noise` computes), for training."""
    abar = alphas_cumprod.to(latents.device)[timesteps].float().view(-1, *([1] * (latents.ndim - 1)))
    return abar.sqrt() * latents + (1 - abar).sqrt() * noise


def vae_latents(vae, pixel_values: torch.Tensor) -> torch.Tensor:
    """Latents as the pipelines hold them (posterior mean x scaling factor) of images in [-1, 1]: what the model is
    trained on (scripts/train_latent_aesthetic.py) and what it scores images by."""
    posterior = vae.encode(pixel_values.to(vae.dtype)).latent_dist
    return posterior.mean.float() * vae.config.scaling_factor


def load_vae(source: str, subfolder: Optional[str] = None, model_dir: Optional[Path] = None):
    """The diffusers AutoencoderKL a latent model was trained on: "embedded" (the embedded generator's), a folder
    (absolute or relative to the model's folder) or a hub id."""
    from diffusers import AutoencoderKL

    if source == "embedded":
        from ..generation import EMBEDDED_GENERATOR

        source, subfolder = str(EMBEDDED_GENERATOR), "vae"
    elif model_dir is not None and not os.path.isabs(source) and (Path(model_dir) / source).exists():
        source = str(Path(model_dir) / source)
    try:
        return AutoencoderKL.from_pretrained(source, subfolder=subfolder)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load the VAE {source!r} (subfolder {subfolder!r}) the latent aesthetic model was "
                         f"trained on: give a local diffusers VAE folder or run where the hub is reachable ({err})"
                         ) from None


class LatentAestheticReward(RewardModel):
    """The latent aesthetic model as a reward: images are encoded by its VAE and scored at t = 0; guidance calls
    `noisy_latent_score` on the sampler's noisy latents instead."""

    name = "latent-aesthetic"
    scale: str = "predicted ShapesWorld-style aesthetics score (raters' mean, 0..1) of the clean image"
    needs_prompt = False
    noise_aware = True  # guidance takes the gradient at x_t (`noisy_latent_score`), not through a decoded image
    fp32_modules = ("model",)

    def __init__(self, model: LatentAestheticModel, vae, max_batch_size: int = 32):
        image_size = model.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
        super().__init__(ImageTransform(size=image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), max_batch_size)
        if vae.config.latent_channels != model.config.latent_channels:
            raise ValueError(f"the VAE has {vae.config.latent_channels} latent channels, the latent aesthetic model "
                             f"{model.config.latent_channels}: load the VAE it was trained on")
        self.model = model
        self.vae = vae

    def forward(self, prompts: list[str], pixel_values: torch.Tensor) -> torch.Tensor:
        latents = vae_latents(self.vae, pixel_values)
        return self.model(latents, torch.zeros(latents.shape[0], device=latents.device))

    def noisy_latent_score(self, latents: torch.Tensor, timesteps) -> torch.Tensor:
        """(B,) predicted scores of the clean images behind variance-preserving noisy latents x_t at `timesteps`."""
        return self.model(latents.float(), timesteps)

    def check_pipeline(self, pipe) -> None:
        """Raise a ValueError naming the mismatch if `pipe`'s latents or noise schedule are not the ones this model
        was trained on (its gradients would then point anywhere)."""
        config = self.model.config
        channels = pipe.vae.config.latent_channels
        if channels != config.latent_channels:
            raise ValueError(f"the latent aesthetic model was trained on {config.latent_channels}-channel latents; this "
                             f"pipeline's VAE has {channels}: train one for it (scripts/train_latent_aesthetic.py)")
        if config.schedule:
            mine, theirs = dict(config.schedule), schedule_of(pipe.scheduler.config)
            differ = {k: (mine.get(k), theirs.get(k)) for k in SCHEDULE_KEYS
                      if k in mine and mine.get(k) != theirs.get(k)}
            if differ:
                raise ValueError("the latent aesthetic model was trained on another noise schedule than this "
                                 "pipeline's scheduler uses (setting: trained, pipeline): "
                                 + ", ".join(f"{k}: {a!r}, {b!r}" for k, (a, b) in differ.items())
                                 + "; train one for this model (scripts/train_latent_aesthetic.py)")


def load_latent_aesthetic(weights=None, *, device="cpu", dtype="fp32", max_batch_size: int = 32,
                          vae=None) -> LatentAestheticReward:
    """The latent aesthetic reward from a folder (None: the embedded ShapesWorld one) and the VAE its config names
    (or `vae`, an already loaded AutoencoderKL)."""
    folder = Path(weights) if weights is not None else EMBEDDED_LATENT_AESTHETIC
    if not (folder / "config.json").exists():
        hint = ("the embedded model is missing: run scripts/train_latent_aesthetic.py" if weights is None else
                "give the folder scripts/train_latent_aesthetic.py wrote (config.json + "
                "diffusion_pytorch_model.safetensors)")
        raise FileNotFoundError(f"{folder}: no latent aesthetic model there; {hint}")
    model = LatentAestheticModel.from_pretrained(str(folder))
    if vae is None:
        vae = load_vae(model.config.vae, model.config.vae_subfolder, model_dir=folder)
    reward = LatentAestheticReward(model, vae, max_batch_size=max_batch_size)
    return prepare(reward, device=device, dtype=dtype, source=str(folder))
