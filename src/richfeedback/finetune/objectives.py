"""The training objectives of `richfeedback.finetune.train`: the denoising loss, and Diffusion-DPO on preference pairs.

Denoising: noise the latents at random timesteps and compare the UNet's prediction with the target of the
scheduler's prediction type (epsilon, v_prediction or sample), with optional min-SNR-gamma weighting.

Diffusion-DPO (Wallace et al., 2023), `loss.objective: dpo`, on preference pairs (`pool filter --policy
pairs` writes them: an imagefolder whose rows have a chosen `image` and a `rejected` one): the chosen and the
rejected latents are noised with the same noise at the same timestep, and the loss is
-log sigmoid(-beta/2 * ((mse_w - mse_l) - (ref_mse_w - ref_mse_l))), where ref_* are the base model's errors (the
LoRA adapters switched off): the -beta/2 form of the Diffusion-DPO authors' code and of diffusers'
`research_projects/diffusion_dpo/train_diffusion_dpo_sdxl.py`, whose `--beta_dpo` is `loss.dpo_beta`; diffusers'
SD 1.5 script (`train_diffusion_dpo.py`) has no 1/2, so its `--beta_dpo B` is `loss.dpo_beta: 2B` here. The
implicit accuracy is logged as diffusers logs it (ties count 1/2). `loss.dpo_sft_weight` adds that multiple of the
chosen images' own denoising loss (0: plain Diffusion-DPO). Unlike supervised fine-tuning on the kept images,
it learns from every prompt whose images differ, and from what the rejected images got wrong.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import UsageError

OBJECTIVES = ("denoising", "dpo")
# peft initialisations that rewrite the base weights: with them "the LoRA switched off" is not the base model
_BASE_REWRITING_INITS = ("pissa", "olora", "corda", "loftq", "eva")


def check_objective(cfg: dict) -> str:
    """`loss.objective`, after refusing settings it cannot use (one line naming the fix)."""
    objective = cfg["loss"]["objective"]
    if objective not in OBJECTIVES:
        raise UsageError(f"loss.objective must be 'denoising' or 'dpo', got {objective!r}")
    if objective == "dpo" and cfg["loss"]["snr_gamma"] is not None:
        raise UsageError("loss.snr_gamma weights the denoising objective; Diffusion-DPO has no SNR weighting: set "
                         "loss.snr_gamma: null with loss.objective: dpo")
    if objective == "dpo" and not cfg["loss"]["dpo_beta"] > 0:
        raise UsageError(f"loss.dpo_beta must be > 0, got {cfg['loss']['dpo_beta']}")
    if objective == "dpo" and str(cfg["lora"]["init"]).lower().startswith(_BASE_REWRITING_INITS):
        raise UsageError(f"lora.init {cfg['lora']['init']!r} rewrites the base weights, so the UNet with its LoRA off "
                         "is no longer the base model DPO measures against: use lora.init: gaussian with "
                         "loss.objective: dpo")
    return objective


@contextlib.contextmanager
def adapters_off(model):
    """`model` (a peft-adapted diffusers or transformers model) with its LoRA switched off, on again afterwards."""
    model.disable_adapters()
    try:
        yield model
    finally:
        model.enable_adapters()


def noise_and_target(noise_scheduler, latents, generator, cfg: dict, repeat: int = 1):
    """Noise `latents` at random timesteps: (noisy latents, timesteps, target of the prediction type). With `repeat`
    = 2 the latents are [chosen; rejected] and both halves get the same noise and timesteps (Diffusion-DPO)."""
    c = cfg["loss"]
    shape = (latents.shape[0] // repeat, *latents.shape[1:])
    noise = torch.randn(shape, generator=generator).to(latents.device, latents.dtype)
    if c["noise_offset"]:
        noise = noise + c["noise_offset"] * torch.randn((shape[0], shape[1], 1, 1),
                                                        generator=generator).to(latents.device, latents.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (shape[0],),
                              generator=generator).to(latents.device)
    noise, timesteps = noise.repeat(repeat, 1, 1, 1), timesteps.repeat(repeat)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction_type = c["prediction_type"] or noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    elif prediction_type == "sample":
        target = latents
    else:
        raise ValueError(f"unknown prediction type {prediction_type!r}")
    return noisy, timesteps, target


def predict(unet, noisy, timesteps, conditioning: dict, time_ids=None) -> torch.Tensor:
    """The UNet's prediction in float32 (the frozen weights' dtype in, float32 out)."""
    added = None
    if "text_embeds" in conditioning:
        added = {"text_embeds": conditioning["text_embeds"], "time_ids": time_ids}
    unet_dtype = next(p.dtype for p in unet.parameters() if not p.requires_grad)
    return unet(noisy.to(unet_dtype), timesteps, conditioning["encoder_hidden_states"].to(unet_dtype),
                added_cond_kwargs=added, return_dict=False)[0].float()


def denoising_loss(unet, noise_scheduler, latents, conditioning: dict, generator, cfg: dict, time_ids=None):
    """The loss of one batch: noise the latents at random timesteps, predict, and compare with the target of the
    scheduler's prediction type; min-SNR-gamma weighting when `loss.snr_gamma` is set."""
    from diffusers.training_utils import compute_snr

    c = cfg["loss"]
    noisy, timesteps, target = noise_and_target(noise_scheduler, latents, generator, cfg)
    model_pred = predict(unet, noisy, timesteps, conditioning, time_ids)
    if c["snr_gamma"] is None:
        return F.mse_loss(model_pred, target.float(), reduction="mean")
    prediction_type = c["prediction_type"] or noise_scheduler.config.prediction_type
    snr = compute_snr(noise_scheduler, timesteps)
    weights = torch.clamp(snr, max=c["snr_gamma"]) / (snr + 1 if prediction_type == "v_prediction" else snr)
    if prediction_type == "sample":
        weights = torch.clamp(snr, max=c["snr_gamma"])
    loss = F.mse_loss(model_pred, target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (loss * weights).mean()


def dpo_loss(unet, reference_unet, noise_scheduler, chosen, rejected, conditioning: dict,
             reference_conditioning: Optional[dict], generator, cfg: dict, time_ids=None) -> tuple[torch.Tensor, dict]:
    """Diffusion-DPO's loss of a batch of pairs, and what to log: the implicit accuracy (share of pairs where the
    model prefers the chosen image more than the reference does) and the plain denoising loss of both images.
    `reference_unet` is a callable context manager that yields the UNet with its LoRA switched off;
    `reference_conditioning` is the text conditioning of the base text encoders (None: the same as `conditioning`,
    as it is unless their LoRA is trained)."""
    if reference_conditioning is None:
        reference_conditioning = conditioning
    both = torch.cat([chosen, rejected])
    noisy, timesteps, target = noise_and_target(noise_scheduler, both, generator, cfg, repeat=2)
    ids = None if time_ids is None else torch.cat([time_ids, time_ids])
    # the reference first: switching the adapters off and on toggles their requires_grad, which must not happen
    # between the model's forward pass and its backward pass
    with torch.no_grad(), reference_unet() as base:
        doubled_reference = {k: torch.cat([v, v]) for k, v in reference_conditioning.items()}
        reference_errors = (predict(base, noisy, timesteps, doubled_reference, ids) - target.float()).pow(2)
        reference_errors = reference_errors.mean(dim=(1, 2, 3))
    doubled = {k: torch.cat([v, v]) for k, v in conditioning.items()}
    errors = (predict(unet, noisy, timesteps, doubled, ids) - target.float()).pow(2).mean(dim=(1, 2, 3))
    errors_w, errors_l = errors.chunk(2)
    reference_w, reference_l = reference_errors.chunk(2)
    inside = -0.5 * cfg["loss"]["dpo_beta"] * ((errors_w - errors_l) - (reference_w - reference_l))
    loss = -F.logsigmoid(inside).mean()
    if cfg["loss"]["dpo_sft_weight"]:
        loss = loss + cfg["loss"]["dpo_sft_weight"] * errors_w.mean()
    # as diffusers' DPO scripts count it: a tie (a fresh LoRA) is half right
    accuracy = ((inside > 0).float() + 0.5 * (inside == 0).float()).mean()
    stats = {"implicit_accuracy": accuracy.detach(), "denoising_loss": errors.mean().detach()}
    return loss, stats
