"""Reward guidance while sampling: steer a diffusers SD / SDXL pipeline (or the embedded ShapesWorld model) up the
gradient of a differentiable reward.

    from richfeedback.generation import generate_images, load_pipeline
    from richfeedback.guidance import load_guidance

    pipe = load_pipeline(None)                                         # the embedded ShapesWorld generator
    guidance = load_guidance("latent-aesthetic")                       # or "rahf:aesthetics", "0.7*a+0.3*b", ...
    images = generate_images(pipe, prompts, seeds, guidance=guidance)  # scale 0 or None: the unguided images

    with guidance.attach(pipe, prompts):                               # the same on any pipeline call
        out = pipe(prompts, ...)

How it works, the options and the supported schedulers: `reward_guidance` and `schedulers`.

Importing this package imports nothing heavy (the `richfeedback` command builds its parser from `guidance.cli`):
the names below load their module on first use.
"""

import importlib

_EXPORTS = {
    "DEFAULT_REWARD": "options", "SCHEDULE_DEFAULTS": "options", "default_schedule": "options",
    "NORMALIZATIONS": "options", "PATHS": "options",
    "RewardGuidance": "reward_guidance", "decode_to_unit_range": "reward_guidance", "load_guidance": "reward_guidance",
    "RewardTerm": "rewards", "WeightedReward": "rewards", "load_reward": "rewards", "parse_reward_spec": "rewards",
    "SUPPORTED_SCHEDULERS": "schedulers", "check_scheduler": "schedulers", "noise_level": "schedulers",
    "predicted_x0": "schedulers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
