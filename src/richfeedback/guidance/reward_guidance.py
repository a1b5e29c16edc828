"""Reward guidance: steer a diffusers pipeline's sampling up the gradient of a differentiable reward.

At a guided step with latents x_t and the pipeline's noise prediction (after classifier-free guidance):

    x0     = predicted_x0(scheduler, noise_pred, t, x_t)            the scheduler's own coefficients
    image  = VAE.decode(x0) / 2 + 0.5, clamped to [0, 1]
    g      = d reward(prompt, image) / d x_t
    x_t-1  = scheduler.step(noise_pred, t, x_t) + scale * noise_level(t) * normalize(g)

as the Diffusion Posterior Sampling pipeline in diffusers/examples/community does (a gradient taken at x_t, applied to
the step's output). Two paths to the gradient of an image reward:

- "cheap": the noise the network predicted is held fixed (whatever it predicts: epsilon, v or x0), so x0 moves with
  x_t as (x_t - sigma * eps) / alpha; the gradient goes through that formula and the VAE decoder only.
  One VAE decode and one reward pass (forward and backward) per guided step. The decoder's backward pass is most of
  that cost, so the decode may go through a tiny distilled decoder instead (`decoder=`: diffusers' `AutoencoderTiny`,
  e.g. TAESD `madebyollin/taesd` for SD 1.5, `madebyollin/taesdxl` for SDXL; the embedded generator ships its own);
  the pipeline's final images are always decoded by its own VAE.
- "accurate": the UNet is run again on x_t with gradients on (both halves of classifier-free guidance, combined as
  the pipeline combines them), so the gradient also goes back through the UNet: an extra UNet forward and backward.

A noise-aware reward (`noise_aware = True`, e.g. `latent-aesthetic`: a model trained on noisy latents with the
timestep as input) gives the gradient Dhariwal & Nichol's classifier guidance uses, g = d reward(x_t, t) / d x_t, with no
decode at all (x_t brought to the variance-preserving scale the model was trained on; the Euler schedulers' latents
are divided by sqrt(1 + sigma^2)). Its pipeline is checked against the latents and noise schedule it was trained on.

Design: the guidance wraps `pipe.scheduler.step` for the duration of one pipeline call (`attach`). That is the one
place where a stock diffusers pipeline (SD, SDXL, their img2img variants) hands over everything guidance needs: the
noise prediction after classifier-free guidance, the timestep and x_t, and where it takes back the next latents.
`callback_on_step_end` runs after the step without the noise prediction, so it would have to rebuild it (another UNet
call, or a UNet hook plus a copy of each pipeline's guidance arithmetic); it stays free for the user. The accurate
path records the UNet's conditioning with a forward pre-hook (prompt embeddings; SDXL's added time ids), so it can
call the UNet again exactly as the pipeline did.

Scale 0, an unguided step, or no guidance at all leave the pipeline's computation untouched, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from pathlib import Path
from typing import Optional, Sequence

import torch

from .options import DEFAULT_REWARD, NORMALIZATIONS, PATHS, default_schedule
from .schedulers import check_scheduler, noise_level, predicted_x0, predicted_x0_fixed_noise, variance_preserving


EMBEDDED_TINY_DECODER = Path(__file__).resolve().parents[1] / "embedded" / "shapes-sd-tiny-decoder"


def load_tiny_decoder(source: str, dtype: torch.dtype = torch.float32):
    """An `AutoencoderTiny` from a local folder or a hub id ("embedded": the embedded generator's, distilled from its
    VAE by scripts/train_tiny_decoder.py)."""
    from diffusers import AutoencoderTiny

    path = EMBEDDED_TINY_DECODER if source == "embedded" else source
    try:
        decoder = AutoencoderTiny.from_pretrained(path, torch_dtype=dtype)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load the guidance decoder {source!r}: give 'vae', 'embedded', or a folder or hub id "
                         f"of a diffusers AutoencoderTiny (config.json + diffusion_pytorch_model.safetensors), such "
                         f"as madebyollin/taesd for SD 1.5 ({err})") from None
    return decoder.eval().requires_grad_(False)


def decode_to_unit_range(vae, latents: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] from (unscaled) latents, differentiably, as the SD / SDXL pipelines decode."""
    config = vae.config
    if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
        mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(latents)
        latents = latents * std / config.scaling_factor + mean
    else:
        latents = latents / config.scaling_factor
    images = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    return (images.float() / 2 + 0.5).clamp(0, 1)


@dataclasses.dataclass
class RewardGuidance:
    """How to guide: the reward, its scale and which steps.

    reward: a `RewardModel` or `WeightedReward` (anything with `differentiable(prompts, images)` -> (B,)), or a
        noise-aware reward (`noise_aware = True`, `noisy_latent_score(latents, timesteps)`).
    scale: size of each edit in units of the step's noise level (with normalize="rms": the edit's RMS over the
        latents is scale * noise_level). 0 turns guidance off.
    every: guide every k-th step of the window.
    window: (start, end) fractions of the sampling steps that are guided: step i of n is in it when
        start <= i / n < end. Late steps change pixels directly, so edits there tend to show as reward hacking.
    scale, every and window left at None take the defaults of the reward's kind (`options.SCHEDULE_DEFAULTS`).
    normalize: "rms" (each image's gradient divided by its RMS: the scale means the same for any reward),
        "clip" (the raw gradient, its RMS capped at max_rms per image) or "none" (the raw gradient).
    path: "cheap" (through the x0 formula and the VAE) or "accurate" (also back through the UNet); for a noise-aware
        reward, which scores x_t itself, only "cheap" (the default) is accepted.
    views, jitter: the reward is averaged over `views` copies of the decoded image, each shifted by a random offset
        of up to `jitter` of the image side (reflected at the border), as CLIP-guided diffusion averages over
        cutouts: a gradient that only works for one exact pixel grid (an adversarial one) cancels out.
    smooth: standard deviation, in latent pixels, of a Gaussian blur of the gradient (0: none); keeps the edits to
        coarse structure (layout, shapes), which is what a reward that judges composition should change.
    decoder: what decodes the predicted x0 for the reward: "auto" (the embedded generator's tiny decoder when the
        pipeline is the embedded generator, else the pipeline's VAE), "vae", "embedded", the path or hub id of an
        `AutoencoderTiny` folder, or a loaded decoder module (anything with the `decode` of an AutoencoderKL or
        AutoencoderTiny, taking the pipeline's scaled latents).
    name: the reward spec, for manifests.
    """

    reward: torch.nn.Module
    scale: Optional[float] = None
    every: Optional[int] = None
    window: Optional[tuple[float, float]] = None
    normalize: str = "rms"
    max_rms: float = 1.0
    path: str = "cheap"
    views: int = 1
    jitter: float = 0.0
    smooth: float = 0.0
    decoder: object = "auto"
    name: str = ""

    def __post_init__(self):
        self.noise_aware = bool(getattr(self.reward, "noise_aware", False))
        for name, value in default_schedule(self.noise_aware).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if not math.isfinite(self.scale) or self.scale < 0:
            raise ValueError(f"guidance scale must be a finite number >= 0, got {self.scale}")
        if self.every < 1:
            raise ValueError(f"guidance every must be >= 1, got {self.every}")
        start, end = self.window
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(f"guidance window must satisfy 0 <= start < end <= 1, got {self.window}")
        self.window = (float(start), float(end))
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"guidance normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.views < 1 or not 0.0 <= self.jitter < 0.5 or self.smooth < 0:
            raise ValueError(f"guidance needs views >= 1, 0 <= jitter < 0.5 and smooth >= 0; got views={self.views}, "
                             f"jitter={self.jitter}, smooth={self.smooth}")
        if self.path not in PATHS:
            raise ValueError(f"guidance path must be one of {PATHS}, got {self.path!r}")
        if not hasattr(self.reward, "differentiable"):
            raise TypeError(f"the guidance reward needs a differentiable(prompts, images) method; "
                            f"got {type(self.reward).__name__}")
        if self.noise_aware and (self.path != "cheap" or self.views > 1):
            raise ValueError("a noise-aware reward scores the noisy latents x_t directly, so path='accurate' and "
                             "jittered views (which act on decoded images) do not apply; leave path='cheap', views=1")
        self.name = self.name or getattr(self.reward, "name", type(self.reward).__name__)
        self._loaded_decoders: dict[str, torch.nn.Module] = {}
        self.history: list[dict] = []  # per guided step of the last call: step, mean reward of x0, gradient RMS

    @property
    def active(self) -> bool:
        return self.scale > 0

    def settings(self) -> dict:
        """What a manifest records to say how an image was guided."""
        common = {"reward": self.name, "scale": self.scale, "every": self.every, "window": list(self.window),
                  "normalize": self.normalize, **({"max_rms": self.max_rms} if self.normalize == "clip" else {}),
                  **({"smooth": self.smooth} if self.smooth > 0 else {})}
        if self.noise_aware:
            return {**common, "path": "noise-aware"}
        return {**common, "path": self.path, **({"views": self.views, "jitter": self.jitter} if self.views > 1 else {}),
                "decoder": self.decoder if isinstance(self.decoder, str) else type(self.decoder).__name__}

    def decoder_for(self, pipe) -> torch.nn.Module:
        """The module that decodes predicted x0 for the reward when guiding `pipe` (see `decoder`)."""
        choice = self.decoder
        if not isinstance(choice, str):
            return choice
        if choice == "auto":
            from ..generation import EMBEDDED_GENERATOR

            embedded = Path(str(getattr(pipe, "name_or_path", "") or "")).resolve() == EMBEDDED_GENERATOR.resolve()
            choice = "embedded" if embedded and EMBEDDED_TINY_DECODER.exists() else "vae"
        if choice == "vae":
            return pipe.vae
        if choice not in self._loaded_decoders:
            self._loaded_decoders[choice] = load_tiny_decoder(choice).to(pipe.vae.device)
        return self._loaded_decoders[choice]

    def guided_steps(self, num_steps: int) -> list[int]:
        """Indices of the steps that are guided out of `num_steps`."""
        return [i for i in range(num_steps) if self.is_guided(i, num_steps)]

    def is_guided(self, index: int, num_steps: int) -> bool:
        """Whether step `index` of `num_steps` is guided: in the window, and every `every`-th from its first step."""
        first = math.ceil(self.window[0] * num_steps - 1e-9)
        return first <= index and index / num_steps < self.window[1] and (index - first) % self.every == 0

    @contextlib.contextmanager
    def attach(self, pipe, prompts: Sequence[str]):
        """Guide the pipeline calls made inside the block; `prompts` are the ones the pipeline is called with."""
        if not self.active:
            yield self
            return
        for part in ("scheduler", "vae", "unet"):
            if getattr(pipe, part, None) is None:
                raise ValueError(f"reward guidance needs a pipeline with a {part} (UNet latent-diffusion pipelines "
                                 f"such as StableDiffusionPipeline and StableDiffusionXLPipeline); "
                                 f"{type(pipe).__name__} has none")
        scheduler = pipe.scheduler
        check_scheduler(scheduler)
        if self.noise_aware and hasattr(self.reward, "check_pipeline"):
            self.reward.check_pipeline(pipe)  # the latents and noise schedule it was trained on
        run = _GuidedRun(self, pipe, list(prompts), None if self.noise_aware else self.decoder_for(pipe))
        self.history = run.history
        original_step = scheduler.step
        # An instance attribute shadows the class's `step`; `wraps` keeps its signature, which the pipelines inspect
        # to decide whether to pass `eta` and `generator`.
        scheduler.step = functools.wraps(original_step)(functools.partial(run.step, original_step))
        hook = pipe.unet.register_forward_pre_hook(run.record_unet_call, with_kwargs=True) \
            if self.path == "accurate" else None
        try:
            yield self
        finally:
            del scheduler.step
            if hook is not None:
                hook.remove()


def jittered_views(images: torch.Tensor, views: int, jitter: float, seed: int) -> torch.Tensor:
    """(views * B, 3, H, W): the batch `views` times, each copy shifted by its own random whole-pixel offset of at
    most `jitter` of the side, reflected at the borders. The offsets come from their own generator (seeded by the
    step), so guidance draws nothing from the pipeline's generators or the global RNG."""
    _, _, height, width = images.shape
    pad_y, pad_x = max(1, round(jitter * height)), max(1, round(jitter * width))
    padded = torch.nn.functional.pad(images, (pad_x, pad_x, pad_y, pad_y), mode="reflect")
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.stack([torch.randint(0, 2 * pad_y + 1, (views,), generator=generator),
                           torch.randint(0, 2 * pad_x + 1, (views,), generator=generator)], 1).tolist()
    return torch.cat([padded[:, :, dy : dy + height, dx : dx + width] for dy, dx in offsets])


def gaussian_blur(tensor: torch.Tensor, sigma: float) -> torch.Tensor:
    """A (B, C, H, W) tensor blurred by a Gaussian of standard deviation `sigma` pixels (reflected borders)."""
    radius = min(max(1, math.ceil(3 * sigma)), min(tensor.shape[-2:]) - 1)  # reflection needs radius < side
    x = torch.arange(-radius, radius + 1, dtype=tensor.dtype, device=tensor.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = tensor.shape[1]
    out = torch.nn.functional.pad(tensor, (radius, radius, radius, radius), mode="reflect")
    out = torch.nn.functional.conv2d(out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def schedule_position(scheduler, timestep, fallback: int) -> int:
    """The index of `timestep` in `scheduler.timesteps` (unique for the schedulers guidance accepts), or `fallback`
    when it is not there."""
    timesteps = scheduler.timesteps
    value = torch.as_tensor(timestep, device=timesteps.device).to(timesteps.dtype)
    matches = (timesteps == value).nonzero()
    return int(matches[0, 0]) if len(matches) else fallback


class _GuidedRun:
    """The state of one guided pipeline call: its step counter and the UNet call being recorded."""

    def __init__(self, guidance: RewardGuidance, pipe, prompts: list[str], decoder: torch.nn.Module):
        self.guidance = guidance
        self.pipe = pipe
        self.decoder = decoder
        self.prompts = prompts
        self.step_index = 0
        self.unet_call: Optional[tuple[tuple, dict]] = None
        self.recomputing = False
        self.history: list[dict] = []

    def record_unet_call(self, module, args, kwargs):
        if not self.recomputing:
            self.unet_call = (args, kwargs)

    def step(self, original_step, model_output, timestep, sample, *args, **kwargs):
        scheduler = self.pipe.scheduler
        # The step's place in the whole schedule, not a count of this call's steps: img2img (and SDXL's
        # denoising_start) run only the tail of `scheduler.timesteps`, and a second pipeline call starts again.
        index = schedule_position(scheduler, timestep, fallback=self.step_index)
        self.step_index = index + 1
        # Computed before the real step: the Euler schedulers advance `step_index` inside it.
        guided = self.guidance.is_guided(index, len(scheduler.timesteps))
        if guided:
            gradient = self.reward_gradient(model_output, timestep, sample)
            edit = self.guidance.scale * noise_level(scheduler, timestep, sample) * gradient
        result = original_step(model_output, timestep, sample, *args, **kwargs)
        if not guided:
            return result
        if isinstance(result, tuple):
            return (result[0] + edit.to(result[0].dtype), *result[1:])
        result.prev_sample = result.prev_sample + edit.to(result.prev_sample.dtype)
        return result

    def prompts_for(self, batch: int) -> list[str]:
        if batch % len(self.prompts):
            raise ValueError(f"reward guidance got {len(self.prompts)} prompts for a batch of {batch} latents")
        repeat = batch // len(self.prompts)  # num_images_per_prompt: the pipelines repeat each prompt in place
        return [p for p in self.prompts for _ in range(repeat)]

    def reward_gradient(self, model_output: torch.Tensor, timestep, sample: torch.Tensor) -> torch.Tensor:
        """The normalised gradient of the reward of the predicted x0 with respect to x_t."""
        guidance = self.guidance
        prompts = self.prompts_for(sample.shape[0])
        with torch.enable_grad():
            x_t = sample.detach().requires_grad_(True)
            record = {"step": self.step_index - 1}
            if guidance.noise_aware:
                timesteps = torch.as_tensor(timestep, device=x_t.device).float().expand(x_t.shape[0])
                rewards = guidance.reward.noisy_latent_score(
                    variance_preserving(self.pipe.scheduler, timestep, x_t), timesteps)
                (gradient,) = torch.autograd.grad(rewards.sum(), x_t)
                return self.normalized(gradient, rewards, record)
            if guidance.path == "accurate":
                recomputed = self.noise_prediction_with_grad(x_t, timestep)
                # How far the recomputed prediction is from the pipeline's: a check that the UNet call was replayed
                # faithfully (float noise only).
                record["recompute_error"] = float((recomputed.detach() - model_output).abs().max())
                model_output = recomputed
            if guidance.path == "cheap":  # the noise the network predicted held fixed: x0 moves with x_t alone
                x0 = predicted_x0_fixed_noise(self.pipe.scheduler, model_output, timestep, x_t)
            else:
                x0 = predicted_x0(self.pipe.scheduler, model_output, timestep, x_t)
            images = decode_to_unit_range(self.decoder, x0)
            reward_prompts = prompts if getattr(guidance.reward, "needs_prompt", True) else None
            if guidance.views == 1:
                rewards = guidance.reward.differentiable(reward_prompts, images)
            else:
                views = jittered_views(images, guidance.views, guidance.jitter, seed=self.step_index)
                rewards = guidance.reward.differentiable(
                    None if reward_prompts is None else reward_prompts * guidance.views, views)
                rewards = rewards.view(guidance.views, -1).mean(0)
            (gradient,) = torch.autograd.grad(rewards.sum(), x_t)
        return self.normalized(gradient, rewards, record)

    def normalized(self, gradient: torch.Tensor, rewards: torch.Tensor, record: dict) -> torch.Tensor:
        """The gradient smoothed, checked and normalised as `guidance.normalize` says; the step goes to history."""
        guidance = self.guidance
        gradient = gradient.float()
        if guidance.smooth > 0:
            gradient = gaussian_blur(gradient, guidance.smooth)
        if not torch.isfinite(gradient).all():
            raise FloatingPointError(f"the reward gradient at step {self.step_index - 1} is not finite (an fp16 VAE "
                                     "overflowing?): run the VAE in fp32 (pipe.vae.to(torch.float32))")
        rms = gradient.pow(2).mean(dim=tuple(range(1, gradient.ndim)), keepdim=True).sqrt()
        self.history.append({**record, "reward": float(rewards.detach().float().mean()), "grad_rms": float(rms.mean())})
        if guidance.normalize == "rms":
            return gradient / rms.clamp_min(1e-12)
        if guidance.normalize == "clip":
            return gradient * (guidance.max_rms / rms.clamp_min(1e-12)).clamp(max=1.0)
        return gradient

    def noise_prediction_with_grad(self, x_t: torch.Tensor, timestep) -> torch.Tensor:
        """The pipeline's noise prediction for x_t again, with gradients: the recorded UNet call on x_t, combined
        with classifier-free guidance (and its rescale) as the SD / SDXL pipelines combine it."""
        if self.unet_call is None:
            raise RuntimeError("the accurate guidance path saw no UNet call before the scheduler step")
        args, kwargs = self.unet_call
        recorded = kwargs["sample"] if "sample" in kwargs else args[0]
        copies = recorded.shape[0] // x_t.shape[0]  # 2 with classifier-free guidance
        model_input = self.pipe.scheduler.scale_model_input(torch.cat([x_t] * copies), timestep)
        kwargs = {**kwargs, "return_dict": False}
        if "sample" in kwargs:
            kwargs["sample"] = model_input
        else:
            args = (model_input, *args[1:])
        self.recomputing = True
        try:
            noise_pred = self.pipe.unet(*args, **kwargs)[0]
        finally:
            self.recomputing = False
        if copies == 2:
            uncond, text = noise_pred.chunk(2)
            noise_pred = uncond + self.pipe.guidance_scale * (text - uncond)
            rescale = getattr(self.pipe, "guidance_rescale", 0.0)
            if rescale > 0:
                from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

                noise_pred = rescale_noise_cfg(noise_pred, text, guidance_rescale=rescale)
        return noise_pred



def load_guidance(spec: Optional[str] = None, scale: Optional[float] = None, *, device="cpu", dtype="fp32",
                  every: Optional[int] = None, window: Optional[tuple[float, float]] = None, normalize: str = "rms",
                  max_rms: float = 1.0, path: str = "cheap", views: int = 1, jitter: float = 0.0,
                  smooth: float = 0.0, decoder="auto", max_batch_size: int = 32,
                  **reward_options) -> RewardGuidance:
    """Guidance by the reward `spec` ("latent-aesthetic", "rahf:aesthetics", "aesthetic",
    "0.7*rahf:aesthetics+0.3*rahf:plausibility"; see `guidance.rewards`), loaded on `device`; None means
    `DEFAULT_REWARD`. scale, every and window left at None take the defaults of the reward's kind."""
    from .rewards import load_reward

    spec = spec or DEFAULT_REWARD
    reward = load_reward(spec, device=device, dtype=dtype, max_batch_size=max_batch_size, **reward_options)
    return RewardGuidance(reward, scale=scale, every=every, window=window, normalize=normalize, max_rms=max_rms,
                          path=path, views=views, jitter=jitter, smooth=smooth, decoder=decoder, name=spec)
