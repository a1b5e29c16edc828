"""Reward adapters: a LoRA (peft) or a small trainable head on a frozen reward model, saved apart from its base.

    model = load_reward_model("pickscore", weights="weights/pickscore")
    add_adapter(model, AdapterSpec(kind="lora", r=8))          # the backbone stays frozen; only the adapter trains
    ... train ...
    save_adapter(model, "runs/adapter/best")
    model = load_reward_model("pickscore", weights="weights/pickscore", adapter="runs/adapter/best")

An adapter folder holds

    adapter_config.json          base model name, family, kind, the peft LoRA config or the head's parameter names,
                                 and the fingerprint of the base weights it was trained on
    adapter_model.safetensors    the LoRA weights (peft's own state-dict names) or the head's parameters

Five kinds:

- "lora": peft LoRA layers on the backbone. By default (`FAMILIES` below; `target_modules` overrides it) on every
  linear layer of every block, attention and MLP, of both towers, and on the patch embedding. The rest of the model,
  heads included, stays as the base.
- "head": the base's own score head, trained in full on top of the frozen backbone: the MLP of the aesthetic
  predictor (its reference trains exactly that) and of ImageReward; for the CLIP families (PickScore, HPS,
  CLIPScore), whose score is a cosine, the two projections into the joint space.
- "lora+head": both at once, the head trained in full next to the LoRA layers (peft's `modules_to_save` pattern):
  for a prompt-free model like the aesthetic predictor, whose head alone cannot see what its frozen backbone
  does not represent.
- "patch_head" and "lora+patch_head": a small new head over the image tower's final tokens whose smooth maximum over
  the tokens is subtracted from the score (`adapters.patch_head`): room for a local defect that the pooled embedding
  averages away. Alone on the frozen backbone, or next to the LoRA layers.

The base fingerprint (names, shapes and a strided sample of every base weight, in float32) makes loading fail with a
clear message when the adapter meets other weights than the ones it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT = "richfeedback-reward-adapter"
KINDS = ("lora", "head", "lora+head", "patch_head", "lora+patch_head")
# LoraConfig fields besides r / alpha / dropout / targets that change the computation and are restored on loading
LORA_EXTRA_FIELDS = ("use_rslora", "use_dora", "fan_in_fan_out", "rank_pattern", "alpha_pattern")


@dataclass(frozen=True)
class Family:
    """How to adapt one family: where LoRA goes, which parameters are its head, and the loss it was trained with."""

    lora_targets: Union[str, tuple[str, ...]]  # peft target_modules: names, or one regex over full module names
    head_parameters: tuple[str, ...]  # parameter names or prefixes ending in "."
    pairwise_loss: str
    token_module: str  # the module whose output is the image tower's final (batch, tokens, width) tokens


# Default LoRA targets: every linear layer of every transformer block (attention and MLP) of both towers, and the
# patch embedding (a Conv2d; peft LoRA-adapts it as two convolutions). Attention-only LoRA (q/k/v/out) gives a
# backbone little room to build a feature it lacks, such as rendering artifacts for a base that never saw them; on the
# ShapesWorld benchmark's reduced PickScore it gained 1.0 point on held-out pairs in one epoch where these targets
# gained 2.3 (`adapter.target_modules: '.*\.self_attn\.(q_proj|k_proj|v_proj|out_proj)'` restores it).
_HF_CLIP_ALL = r".*\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2)|patch_embedding)"
# open_clip's attention is torch's nn.MultiheadAttention, which reads its in_proj / out_proj weights directly (a
# wrapped out_proj alone would be bypassed): peft's own MultiheadAttention LoRA layer adapts the module as a whole
# (in_proj and out_proj), next to the MLP linears and the patch embedding (conv1).
_OPEN_CLIP_ALL = r".*\.(attn|mlp\.(c_fc|c_proj)|conv1)"
_BLIP_ALL = (r"blip\.(visual_encoder\.(patch_embed\.proj|blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2)))"
             r"|text_encoder\.encoder\.layer\.\d+\.((attention|crossattention)\.(self\.(query|key|value)|output\.dense)"
             r"|intermediate\.dense|output\.dense))")
# Image tokens for the patch head: transformers' CLIP vision encoder (before post_layernorm), open_clip's visual
# transformer (before ln_post; batch first), timm's ViT after its final norm (what BLIP's text encoder attends to).
FAMILIES = {
    "pickscore": Family(_HF_CLIP_ALL, ("clip.visual_projection.", "clip.text_projection."), "pairwise_softmax",
                        "clip.vision_model.encoder"),
    "clipscore": Family(_HF_CLIP_ALL, ("clip.visual_projection.", "clip.text_projection."), "pairwise_softmax",
                        "clip.vision_model.encoder"),
    "hpsv2": Family(_OPEN_CLIP_ALL, ("clip.visual.proj", "clip.text_projection"), "pairwise_softmax",
                    "clip.visual.transformer"),
    "hpsv2.1": Family(_OPEN_CLIP_ALL, ("clip.visual.proj", "clip.text_projection"), "pairwise_softmax",
                      "clip.visual.transformer"),
    "imagereward": Family(_BLIP_ALL, ("mlp.",), "ranking", "blip.visual_encoder.norm"),
    # prompt-free: preferences between two images of one prompt still rank them
    "aesthetic": Family(_HF_CLIP_ALL, ("mlp.",), "ranking", "vision.vision_model.encoder"),
}


class AdapterError(ValueError):
    """An adapter folder that cannot be used with this base model (the message says which and why)."""


@dataclass
class AdapterSpec:
    """What to train. LoRA fields follow peft's `LoraConfig`; `target_modules` / `head_parameters` default to the
    family's (see FAMILIES)."""

    kind: str = "lora"
    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    target_modules: Optional[Union[str, list[str]]] = None
    head_parameters: Optional[list[str]] = None
    patch_head_hidden: int = 64  # the patch head's hidden width (kinds with "patch_head")
    extra: dict = field(default_factory=dict)  # more LoraConfig fields (e.g. use_rslora)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"adapter.kind must be one of {KINDS}, got {self.kind!r}")


def family_of(model) -> Family:
    try:
        return FAMILIES[model.name]
    except KeyError:
        raise AdapterError(f"no adapter recipe for reward model {model.name!r}; adapters cover "
                           f"{', '.join(FAMILIES)} (RAHF is trained with `richfeedback rahf train`)") from None


def base_fingerprint(model: torch.nn.Module, samples_per_tensor: int = 256) -> str:
    """A short hash of the base weights: every name and shape, and `samples_per_tensor` evenly spaced values of each
    tensor in float32. Cheap on a ViT-H (no full pass over 4 GB) and different for any two trained models."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if "lora_" in name:
            continue
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        sample = flat[::step][:samples_per_tensor].to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:20]


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name.startswith(p) if p.endswith(".") else name == p for p in patterns)


def head_parameter_names(model: torch.nn.Module, patterns: Sequence[str]) -> list[str]:
    names = [n for n, _ in model.named_parameters() if _matches(n, patterns)]
    if not names:
        raise AdapterError(f"head_parameters {list(patterns)} match no parameter of {model.name}")
    return names


def lora_config(spec: AdapterSpec, family: Family):
    from peft import LoraConfig

    targets = spec.target_modules if spec.target_modules is not None else family.lora_targets
    if isinstance(targets, tuple):
        targets = list(targets)
    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                      bias="none", **spec.extra)


def add_adapter(model, spec: AdapterSpec, *, fingerprint: Optional[str] = None) -> list[str]:
    """Add a trainable adapter to a (frozen) reward model in place; returns the names of the trainable parameters.

    Everything else stays frozen. The model records what it needs to be saved (`model.adapter_info`).
    """
    from peft import inject_adapter_in_model

    if getattr(model, "adapter_info", None) is not None:
        raise AdapterError(f"{model.name} already has an adapter")
    family = family_of(model)
    fingerprint = fingerprint or base_fingerprint(model)
    model.requires_grad_(False)
    info = {"format": FORMAT, "version": 1, "base_model": model.name, "family": type(model).__name__,
            "kind": spec.kind, "base_fingerprint": fingerprint, "base_source": model.source}
    trainable = []
    if spec.kind in ("lora", "lora+head", "lora+patch_head"):
        config = lora_config(spec, family)
        try:
            inject_adapter_in_model(config, model)
        except ValueError as err:  # peft: "Target modules ... not found in the base model"
            raise AdapterError(f"LoRA target_modules {config.target_modules!r} do not fit {model.name}: "
                               f"{str(err).splitlines()[0]}") from None
        trainable += [n for n, _ in model.named_parameters() if "lora_" in n]
        info["lora"] = _json_safe(config.to_dict())
    if spec.kind in ("head", "lora+head"):
        head = head_parameter_names(model, spec.head_parameters or family.head_parameters)
        trainable += head
        info["head_parameters"] = head
    if spec.kind in ("patch_head", "lora+patch_head"):
        from .patch_head import MODULE_NAME, attach_patch_head

        head = attach_patch_head(model, family.token_module, spec.patch_head_hidden)
        names = [f"{MODULE_NAME}.{n}" for n, _ in head.named_parameters()]
        trainable += names
        info["patch_head"] = {"token_module": family.token_module, "width": head.width, "hidden": head.hidden,
                              "parameters": names}
    parameters = dict(model.named_parameters())
    for name in trainable:
        parameters[name].requires_grad_(True)
    info["trainable_parameters"] = int(sum(parameters[n].numel() for n in trainable))
    model.adapter_info = info
    return trainable


def adapter_state_dict(model) -> dict[str, torch.Tensor]:
    """The adapter's weights only: peft's LoRA state dict, or the head's parameters."""
    info = _require_adapter(model)
    state = {}
    if "lora" in info:
        from peft import get_peft_model_state_dict

        state.update(get_peft_model_state_dict(model))
    full = _fully_trained_parameters(info)
    if full:
        parameters = dict(model.named_parameters())
        state.update({name: parameters[name] for name in full})
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def save_adapter(model, folder, extra: Optional[dict] = None) -> Path:
    """Write the adapter folder atomically (a crash leaves the previous one, or none)."""
    from safetensors.torch import save_file

    info = {**_require_adapter(model), **({"training": extra} if extra else {})}
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state_dict(model), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
    (tmp / CONFIG_NAME).write_text(json.dumps(info, indent=2, default=json_default) + "\n")
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def read_adapter_config(folder) -> dict:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise AdapterError(f"{folder} is not a reward adapter: it needs {CONFIG_NAME} and {WEIGHTS_NAME} (written by "
                           "`richfeedback adapter train` in OUTPUT/best or OUTPUT/final)")
    info = json.loads(path.read_text())
    if info.get("format") != FORMAT:
        raise AdapterError(f"{path} is not a richfeedback reward adapter config (format {info.get('format')!r})")
    return info


def apply_adapter(model, folder, *, check_base: bool = True):
    """Load an adapter folder onto its base reward model (in place; returns the model), refusing another base."""
    from safetensors.torch import load_file

    folder = Path(folder)
    info = read_adapter_config(folder)
    if info["base_model"] != model.name:
        raise AdapterError(f"{folder} adapts {info['base_model']}, not {model.name}: load it with "
                           f"load_reward_model({info['base_model']!r}, ..., adapter=...)")
    fingerprint = base_fingerprint(model)
    if check_base and info["base_fingerprint"] != fingerprint:
        raise AdapterError(f"{folder} was trained on other {model.name} weights (fingerprint "
                           f"{info['base_fingerprint']}, from {info.get('base_source') or 'unknown'}) than these "
                           f"({fingerprint}, from {model.source or 'unknown'}): pass the weights it was trained on")
    options = {"kind": info["kind"], "head_parameters": info.get("head_parameters")}
    if "patch_head" in info:
        options["patch_head_hidden"] = info["patch_head"]["hidden"]
    if "lora" in info:
        lora = info["lora"]
        options.update(r=lora["r"], alpha=lora["lora_alpha"], dropout=lora["lora_dropout"],
                       target_modules=lora["target_modules"],
                       extra={k: lora[k] for k in LORA_EXTRA_FIELDS if k in lora})
    add_adapter(model, AdapterSpec(**options), fingerprint=fingerprint)
    state = load_file(str(folder / WEIGHTS_NAME))
    expected = set(adapter_state_dict(model))
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise AdapterError(f"{folder / WEIGHTS_NAME} does not match its config: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    load_adapter_state(model, state, where=str(folder))
    model.adapter_info = {**model.adapter_info, **{k: v for k, v in info.items() if k == "training"}}
    model.requires_grad_(False)  # loaded to judge: frozen like every reward model
    model.source = f"{model.source} + adapter {folder}"
    return model


def load_adapter_state(model, state: dict, where: str = "adapter") -> None:
    """Put an adapter state dict (`adapter_state_dict`'s keys) into a model that has the adapter added: the LoRA
    weights through peft, the head's parameters by name."""
    info = _require_adapter(model)
    head = set(_fully_trained_parameters(info))
    lora_state = {k: v for k, v in state.items() if k not in head}
    if "lora" in info:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, lora_state)
        if getattr(result, "unexpected_keys", None):
            raise AdapterError(f"{where}: peft did not place {result.unexpected_keys[:3]}")
    elif lora_state:
        raise AdapterError(f"{where}: unexpected weights {sorted(lora_state)[:3]} for a head adapter")
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name in head & set(state):
            value = state[name]
            if parameters[name].shape != value.shape:
                raise AdapterError(f"{where}: {name} has shape {tuple(value.shape)}, the model "
                                   f"{tuple(parameters[name].shape)}")
            parameters[name].copy_(value)


def _fully_trained_parameters(info: dict) -> list[str]:
    """Parameters saved whole (not as LoRA factors): the family head's and the patch head's."""
    return list(info.get("head_parameters") or ()) + list((info.get("patch_head") or {}).get("parameters") or ())


def _require_adapter(model) -> dict:
    info = getattr(model, "adapter_info", None)
    if info is None:
        raise AdapterError(f"{getattr(model, 'name', type(model).__name__)} has no adapter (add_adapter first)")
    return info


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset, tuple, list)):
        return [_json_safe(v) for v in (sorted(value) if isinstance(value, (set, frozenset)) else value)]
    if hasattr(value, "value") and type(value).__module__.startswith("peft"):  # peft enums
        return value.value
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def json_default(value):
    """JSON for what a training config may hold besides plain values (e.g. an ImageRewardConfig in base.options)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def count_trainable(model) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


__all__ = ["AdapterError", "AdapterSpec", "FAMILIES", "add_adapter", "apply_adapter", "adapter_state_dict",
           "load_adapter_state",
           "base_fingerprint", "read_adapter_config", "save_adapter", "count_trainable"]
