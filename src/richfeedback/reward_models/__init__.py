"""Reward models behind one interface: PickScore, HPSv2/v2.1, ImageReward, LAION aesthetic, CLIPScore (and RAHF).

    from richfeedback.reward_models import load_reward_model
    model = load_reward_model("hpsv2.1", weights="path/to/HPS_v2.1_compressed.pt", device="cuda", dtype="bf16")
    scores = model.score("a red circle on the left", ["a.png", "b.png"])         # (2,) float32
    loss = -model.differentiable(prompts, images_in_0_1).mean()                  # gradients reach the images

Importing this package imports nothing heavy (the `richfeedback` command builds its parser from it): the names below
load their module on first use, and each family imports transformers, open_clip or timm only when it is loaded.
"""

import importlib

_EXPORTS = {
    "RewardModel": "base",
    "parse_dtype": "base",
    "ImageTransform": "preprocess",
    "describe_reward_models": "registry",
    "list_reward_models": "registry",
    "load_reward_model": "registry",
    "register_reward_model": "registry",
    "CheckpointError": "weights",
    "WeightsNotFoundError": "weights",
    "weights_home": "weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
