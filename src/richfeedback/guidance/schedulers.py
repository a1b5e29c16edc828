"""What guidance needs from a diffusers scheduler: the predicted x0 of a step, from the scheduler's own coefficients,
and the noise level of the step's latents; and which schedulers stay consistent after the latents are edited.

Guidance edits the latents a step returns (`RewardGuidance`). That is only sound for schedulers whose next step
depends on nothing but the latents it is given and a step counter:

- supported: DDIM, DDPM (fixed variance), Euler and Euler-ancestral. DDIM/DDPM work on variance-preserving latents
  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; the Euler schedulers on sigma-scaled latents x = x0 + sigma eps.
- refused: multistep solvers (DPM-Solver++, UniPC, PNDM, LMS, DEIS...) keep the model outputs or derivatives of
  earlier steps, computed on the unedited trajectory, and would mix the two; Heun and KDPM2 take two model calls per
  step; flow-matching schedulers have another parametrisation. Every diffusers scheduler loads from another's config:
  `pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)`.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

VARIANCE_PRESERVING = (DDIMScheduler, DDPMScheduler)
SIGMA_SCALED = (EulerDiscreteScheduler, EulerAncestralDiscreteScheduler)
SUPPORTED_SCHEDULERS = tuple(cls.__name__ for cls in VARIANCE_PRESERVING + SIGMA_SCALED)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_scheduler(scheduler) -> None:
    """Raise a ValueError that says what to do if guidance cannot run with `scheduler`."""
    name = type(scheduler).__name__
    # Exact types: a subclass may override `step` in ways the formulas below do not know about.
    if type(scheduler) not in VARIANCE_PRESERVING + SIGMA_SCALED:
        raise ValueError(
            f"reward guidance does not support {name}: it edits the latents between steps, which only DDIM, DDPM, "
            f"Euler and Euler-ancestral schedulers follow consistently (multistep solvers keep earlier model "
            f"outputs). Switch the scheduler first: pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)")
    prediction_type = scheduler.config.prediction_type
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"reward guidance does not support prediction_type={prediction_type!r} of {name}; "
                         f"it knows {PREDICTION_TYPES}")
    if isinstance(scheduler, DDPMScheduler) and scheduler.config.variance_type in ("learned", "learned_range"):
        raise ValueError("reward guidance does not support DDPMScheduler with a learned variance "
                         f"(variance_type={scheduler.config.variance_type!r}); use DDIMScheduler")
    if getattr(scheduler.config, "thresholding", False):
        raise ValueError(f"reward guidance does not support {name} with thresholding=True (dynamic thresholding is "
                         "for pixel-space models); set thresholding=False")
    if isinstance(scheduler, SIGMA_SCALED) and getattr(scheduler.config, "final_sigmas_type", "zero") != "zero":
        raise ValueError(f"reward guidance needs final_sigmas_type='zero' for {name}")


def _alpha_sigma(scheduler, timestep, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(signal scale, noise scale) of the step's latents, as `scheduler.step` itself computes them."""
    if isinstance(scheduler, VARIANCE_PRESERVING):
        abar = scheduler.alphas_cumprod[int(timestep)].to(device=like.device, dtype=torch.float32)
        return abar.sqrt(), (1 - abar).sqrt()
    if scheduler.step_index is None:
        # The pipelines call `scale_model_input` before `step`, which sets it; anything else is a misuse.
        raise RuntimeError(f"{type(scheduler).__name__}.step_index is not set: call scale_model_input first")
    sigma = scheduler.sigmas[scheduler.step_index].to(device=like.device, dtype=torch.float32)
    return torch.ones_like(sigma), sigma


def noise_level(scheduler, timestep, like: torch.Tensor) -> torch.Tensor:
    """The standard deviation of the noise in the step's latents: sqrt(1 - abar_t), or sigma for Euler."""
    return _alpha_sigma(scheduler, timestep, like)[1]


def variance_preserving(scheduler, timestep, sample: torch.Tensor) -> torch.Tensor:
    """The step's latents on the variance-preserving scale sqrt(abar) x0 + sqrt(1 - abar) eps that noise-aware
    models are trained on: unchanged for DDIM/DDPM, divided by sqrt(1 + sigma^2) for the Euler schedulers."""
    alpha, sigma = _alpha_sigma(scheduler, timestep, sample)
    return sample / (alpha**2 + sigma**2).sqrt().to(sample.dtype)


def predicted_x0(scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor) -> torch.Tensor:
    """The x0 that `scheduler.step(model_output, timestep, sample)` predicts, differentiable in both tensors.

    The same formulas as the schedulers' own `step` (DDIM steps 3-4 with clip_sample, Euler step 1 with s_churn = 0),
    written out here because calling `step` would advance its counter and, for the ancestral schedulers, draw from
    the generators.
    """
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "sample":
        return model_output
    sample32, output32 = sample.float(), model_output.float()
    alpha, sigma = _alpha_sigma(scheduler, timestep, sample)
    if isinstance(scheduler, VARIANCE_PRESERVING):
        if prediction_type == "epsilon":
            x0 = (sample32 - sigma * output32) / alpha
        else:  # v_prediction
            x0 = alpha * sample32 - sigma * output32
        if scheduler.config.clip_sample:
            x0 = x0.clamp(-scheduler.config.clip_sample_range, scheduler.config.clip_sample_range)
        return x0
    if prediction_type == "epsilon":
        return sample32 - sigma * output32
    # v_prediction on sigma-scaled latents (EulerDiscreteScheduler.step): c_out * v + c_skip * x
    return output32 * (-sigma / (sigma**2 + 1) ** 0.5) + sample32 / (sigma**2 + 1)


def predicted_x0_fixed_noise(scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor) -> torch.Tensor:
    """The predicted x0 as a function of `sample` with the noise the network predicted held fixed (the cheap path):
    x0 = (x_t - sigma * eps) / alpha, eps the noise `model_output` implies at `sample` (itself for epsilon models).

    Its value is `predicted_x0`'s, computed as the scheduler computes it (at the first steps alpha is ~1e-4, and
    recomputing x0 from the implied noise would divide float error by it); its derivative is 1/alpha for every
    prediction type (0 where `clip_sample` clips), as when classifier guidance holds eps fixed. Holding the raw output
    fixed instead would give v-prediction models alpha (a factor abar apart) and "sample" models no path to x_t.
    """
    alpha, _ = _alpha_sigma(scheduler, timestep, sample)
    x0 = predicted_x0(scheduler, model_output.detach(), timestep, sample.detach())
    slope = 1.0 / alpha
    if isinstance(scheduler, VARIANCE_PRESERVING) and scheduler.config.clip_sample:
        slope = slope * (x0.abs() < scheduler.config.clip_sample_range)
    return x0 + slope * (sample.float() - sample.detach().float())


@contextlib.contextmanager
def recording_predicted_x0(pipe):
    """Inside the block, every `pipe.scheduler.step` appends its predicted x0 (`pred_original_sample`, the latents
    guidance decodes) to the yielded list, one (B, C, h, w) tensor per step, in call order. For distilling and
    benchmarking decoders on exactly what guidance sees; schedulers without `pred_original_sample` are refused."""
    recorded: list[torch.Tensor] = []
    original = pipe.scheduler.step

    def step(*args, return_dict=True, **kwargs):
        out = original(*args, return_dict=True, **kwargs)
        if getattr(out, "pred_original_sample", None) is None:
            raise ValueError(f"{type(pipe.scheduler).__name__}.step returns no pred_original_sample to record")
        recorded.append(out.pred_original_sample.detach().clone())
        return out if return_dict else (out.prev_sample,)

    pipe.scheduler.step = step
    try:
        yield recorded
    finally:
        del pipe.scheduler.step
