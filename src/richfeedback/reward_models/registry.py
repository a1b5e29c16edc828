"""Named reward models: `load_reward_model(name, weights=...)`, `list_reward_models()`, `register_reward_model`.

A registry entry maps a name to a factory `factory(weights, *, device, dtype, max_batch_size, **options)` returning a
`RewardModel`. Factories are given as "module:function" strings so that importing the registry imports neither
transformers nor open_clip; a family living in another module registers itself the same way (or with a callable):

    register_reward_model("rahf:plausibility", "richfeedback.reward_models.rahf:load_plausibility",
                          description="RAHF plausibility score in [0, 1]")
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Union

if TYPE_CHECKING:  # the registry itself stays free of torch: `richfeedback --help` lists its names
    from .base import RewardModel

Factory = Union[Callable[..., "RewardModel"], str]


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    factory: Factory
    description: str = ""

    def resolve(self) -> Callable[..., "RewardModel"]:
        if callable(self.factory):
            return self.factory
        module_name, _, attribute = self.factory.partition(":")
        return getattr(importlib.import_module(module_name), attribute)


_REGISTRY: dict[str, RegistryEntry] = {}


def register_reward_model(name: str, factory: Optional[Factory] = None, *, description: str = "",
                          replace: bool = False):
    """Register `factory` under `name`; used directly or as a decorator (`@register_reward_model("name")`)."""

    def add(factory: Factory):
        if name in _REGISTRY and not replace:
            raise ValueError(f"a reward model named {name!r} is already registered; pass replace=True to override it")
        _REGISTRY[name] = RegistryEntry(name, factory, description)
        return factory

    return add if factory is None else add(factory)


def list_reward_models() -> list[str]:
    return sorted(_REGISTRY)


def describe_reward_models() -> dict[str, str]:
    return {name: _REGISTRY[name].description for name in list_reward_models()}


def load_reward_model(name: str, weights=None, *, device="cpu", dtype="fp32", max_batch_size: int = 32,
                      adapter=None, **options) -> "RewardModel":
    """A frozen reward model by name.

    weights: a file or folder with the official files, a hub id, or None (the default folder, then the official hub
        repository; see `richfeedback.reward_models.weights`).
    dtype: "fp32" (default), "fp16" or "bf16"; score heads stay fp32.
    adapter: a reward-adapter folder (`richfeedback adapter train`) trained on these weights; refused otherwise.
    options: family-specific, e.g. `processor=` (pickscore), `clip=` (aesthetic), `config=` (reduced architectures
        of imagereward and hps), `prefix=` (clipscore).
    """
    try:
        entry = _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_reward_models())
        raise KeyError(f"unknown reward model {name!r}; known: {known}") from None
    if adapter is None:
        return entry.resolve()(weights, device=device, dtype=dtype, max_batch_size=max_batch_size, **options)
    from .adapters.modeling import apply_adapter
    from .base import prepare

    # The base is checked against the adapter's fingerprint in float32, then cast to `dtype`.
    model = entry.resolve()(weights, device=device, dtype="fp32", max_batch_size=max_batch_size, **options)
    apply_adapter(model, adapter)
    return prepare(model, device=device, dtype=dtype, source=model.source)


register_reward_model("pickscore", "richfeedback.reward_models.pickscore:load_pickscore",
                      description="PickScore v1: logit_scale * cos(text, image) of a CLIP ViT-H/14")
register_reward_model("hpsv2", "richfeedback.reward_models.hps:load_hpsv2",
                      description="HPS v2.0: 100 * cos(image, text) of an open_clip ViT-H-14")
register_reward_model("hpsv2.1", "richfeedback.reward_models.hps:load_hpsv2_1",
                      description="HPS v2.1: 100 * cos(image, text) of an open_clip ViT-H-14")
register_reward_model("imagereward", "richfeedback.reward_models.imagereward:load_imagereward",
                      description="ImageReward v1.0: BLIP image-grounded text encoder + MLP, standardised")
register_reward_model("aesthetic", "richfeedback.reward_models.aesthetic:load_aesthetic",
                      description="LAION aesthetic v2: MLP on normalised CLIP ViT-L/14 image embeddings (prompt-free)")
register_reward_model("clipscore", "richfeedback.reward_models.clipscore:load_clipscore",
                      description="CLIPScore baseline: 2.5 * max(cos, 0) with CLIP ViT-B/32 (Hessel et al.)")
for _score in ("plausibility", "alignment", "aesthetics", "overall"):
    register_reward_model(f"rahf:{_score}", f"richfeedback.reward_models.rahf.reward:load_rahf_{_score}",
                          description=f"RAHF {_score} score in [0, 1] (default weights: the embedded ShapesWorld RAHF; "
                                      "a public-layout checkpoint file loads as size 'large')")
register_reward_model("latent-aesthetic", "richfeedback.reward_models.latent_aesthetic:load_latent_aesthetic",
                      description="noise-aware aesthetic predictor on a diffusion model's latents (classifier "
                                  "guidance; default weights: the embedded ShapesWorld one, prompt-free)")
