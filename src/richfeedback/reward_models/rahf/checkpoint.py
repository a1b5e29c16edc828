"""Load RAHF weights: our own `save_pretrained` folders, and the public RichHF checkpoint file.

The public multi-head checkpoint (youweiliang/RichHF, ViT-L/16-384 + t5-base) is a bare `torch.save(state_dict)`
written with transformers 4.32: 842 keys, no wrapper, no "module." prefix. transformers 5 renamed the ViT's
parameters (`vit.encoder.layer.N.attention.attention.query` became `vit.layers.N.attention.q_proj`, and so on), so
the reference's own `load_state_dict` fails there. We map the names to whatever the installed transformers uses,
then load strictly: every key of the file must land in the model and every parameter of the model must come from
the file, or the error lists what is missing or left over.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import torch

from .configuration import RAHFConfig
from .modeling import RAHFModel

# The ViT parameters transformers 5 renamed: (name in 4.x, as in the public checkpoint; name in 5.x). The prefix is
# `vit.encoder.layer.N.` in 4.x and `vit.layers.N.` in 5.x.
_VIT_RENAMES = [
    ("attention.attention.query", "attention.q_proj"),
    ("attention.attention.key", "attention.k_proj"),
    ("attention.attention.value", "attention.v_proj"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
    ("layernorm_before", "layernorm_before"),
    ("layernorm_after", "layernorm_after"),
]
_TO_NEW = [(re.compile(rf"^vit\.encoder\.layer\.(\d+)\.{re.escape(old)}\."), rf"vit.layers.\1.{new}.")
           for old, new in _VIT_RENAMES]
_TO_LEGACY = [(re.compile(rf"^vit\.layers\.(\d+)\.{re.escape(new)}\."), rf"vit.encoder.layer.\1.{old}.")
              for old, new in _VIT_RENAMES]


def _rename(key: str, table) -> str:
    for pattern, replacement in table:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return key


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys do not match the model built for it."""


def _uses_new_vit_names(model_keys) -> bool:
    return any(k.startswith("vit.layers.") for k in model_keys)


def to_installed_names(key: str, new_vit_names: bool) -> str:
    """A public-checkpoint key under the parameter names of the installed transformers."""
    return _rename(key, _TO_NEW) if new_vit_names else key


def to_legacy_names(key: str) -> str:
    """The inverse: a key of our model as transformers 4.x (and so the public checkpoint) names it."""
    return _rename(key, _TO_LEGACY)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or from a torch file with `weights_only=True` (no code is unpickled)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such checkpoint. The public RAHF multi-head checkpoint is distributed by the RichHF "
            "reimplementation (see its README); download it and pass its path."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors are many kinds; the message says what to do
        raise CheckpointMismatchError(
            f"{path}: could not be read as a tensor-only torch file ({err}). We never unpickle arbitrary objects; "
            "re-save it with torch.save(model.state_dict()) or convert it to safetensors."
        ) from err
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and set(state) == {wrapper}:
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(f"{path}: expected a state_dict (name -> tensor)")
    if all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def detect_variant(state: dict) -> str:
    return "multi_head" if any(k.startswith("heatmap_predictor.implausibility.") for k in state) else "augmented_prompt"


def load_public_checkpoint(path: str | os.PathLike, size: str = "large", config: Optional[RAHFConfig] = None,
                           dtype: torch.dtype = torch.float32) -> RAHFModel:
    """A RAHF model with the weights of a checkpoint in the public (RichHF reimplementation) layout.

    `size` names the architecture it was trained with ("large" for the released file); `config` overrides it.
    The model is built on the meta device and the file's tensors are assigned, so memory holds one copy.
    """
    state = read_state_dict(path)
    if config is None:
        config = RAHFConfig.from_size(size, variant=detect_variant(state))
    with torch.device("meta"):
        model = RAHFModel(config)
    expected = model.state_dict()
    new_names = _uses_new_vit_names(expected)
    mapped = {to_installed_names(k, new_names): v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    wrong_shape = sorted(k for k in set(mapped) & set(expected) if mapped[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        def show(keys):
            return ", ".join(keys[:8]) + (f" … ({len(keys)} in all)" if len(keys) > 8 else "")

        raise CheckpointMismatchError(
            f"{path} does not match RAHF size {size!r} ({config.variant}): "
            f"missing {show(missing) or 'none'}; unexpected {show(unexpected) or 'none'}; "
            f"wrong shape {show(wrong_shape) or 'none'}. Pass the size the checkpoint was trained with."
        )
    model.load_state_dict(mapped, strict=True, assign=True)
    # The file stores T5's tied embedding under four names; assigning broke the tie, so restore it.
    model.t5.lm_head.weight = model.t5.shared.weight
    model.t5.encoder.embed_tokens = model.t5.shared
    model.t5.decoder.embed_tokens = model.t5.shared
    # Buffers that are not in the state dict (none today) would still be on the meta device.
    leftover = [n for n, b in model.named_buffers() if b.is_meta]
    if leftover:
        raise CheckpointMismatchError(f"buffers not restored from {path}: {leftover}")
    return model.eval()


def legacy_state_dict(model: RAHFModel) -> dict[str, torch.Tensor]:
    """Our model's weights under the public checkpoint's (transformers 4.x) names, e.g. to share with its users."""
    return {to_legacy_names(k): v for k, v in model.state_dict().items()}
