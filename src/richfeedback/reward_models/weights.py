"""Where reward-model weights come from, and loading them strictly.

`weights` (the argument of `load_reward_model`) is resolved in this order:

- a file: used as it is;
- a folder: must hold the family's files under their official names;
- "org/name": a Hugging Face hub repository (files already in the hub cache work offline);
- None: the family's folder under `weights_home()` (~/.cache/richfeedback/weights/<model>, or $RICHFEEDBACK_WEIGHTS),
  then the family's official hub repository.

When nothing is found, typically offline with HF_HUB_OFFLINE=1, `WeightsNotFoundError` names the file or repository
to fetch, the command that fetches it, and the folder to put it in; it never surfaces a hub traceback.

Checkpoints are read with safetensors or `torch.load(weights_only=True)`: nothing is ever unpickled. Every key of a
checkpoint must be used by the model or be listed, with the reason, among the keys a family skips on purpose.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch

PathLike = Union[str, os.PathLike]

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


class WeightsNotFoundError(FileNotFoundError):
    """A reward model's weights are neither on disk nor downloadable; the message says what to fetch and where."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as it is (wrong keys or shapes, or pickled objects); the message names them."""


def weights_home() -> Path:
    return Path(os.environ.get("RICHFEEDBACK_WEIGHTS", "~/.cache/richfeedback/weights")).expanduser()


def default_weights_dir(model: str) -> Path:
    """The folder searched when `weights` is not given: <weights_home>/<model>."""
    return weights_home() / model.replace(":", "-")


def is_hub_id(text: str) -> bool:
    """"org/name" that is not an existing path. Hub ids without an org are not accepted: "x" is always a path."""
    return bool(_HUB_ID.fullmatch(text)) and not Path(text).exists()


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def fetch_command(repo: str, files: Sequence[str], folder: PathLike) -> str:
    quoted = " ".join(f"'{f}'" if "+" in f or " " in f else f for f in files)
    return f"hf download {repo} {quoted} --local-dir {folder}".replace("  ", " ")


def not_found(model: str, what: str, *, looked: Sequence[str], repo: str, files: Sequence[str], folder: PathLike,
              hub_reason: Optional[str] = None, extra: str = "") -> WeightsNotFoundError:
    """The error every loader raises for missing weights: what is missing, where we looked, how to fetch it.

    hub_reason: why the hub could not provide it, when the hub was tried (None: it was not).
    """
    places = list(looked)
    if hub_reason is not None:
        places.append(f"hub {repo}: " + ("offline (HF_HUB_OFFLINE=1)" if hub_offline() else hub_reason))
    where = "; ".join(places)
    folder = Path(folder)
    put = (f"into {folder}, which is searched by default" if folder == default_weights_dir(model)
           else f"into {folder} and pass weights={folder}")
    return WeightsNotFoundError(
        f"{model}: {what} not found (looked in: {where}). Fetch it on a machine with network "
        f"(`{fetch_command(repo, files, folder)}`) and copy it {put}.{extra}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def download_hub_file(repo: str, filename: str, *, model: str, looked: Sequence[str], extra: str = "") -> Path:
    """A file of a hub repository (from the local hub cache when offline), or WeightsNotFoundError."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as err:  # offline, 404, gated, network: all mean "not available here"
        raise not_found(model, filename, looked=looked, repo=repo, files=[filename],
                        folder=default_weights_dir(model), hub_reason=_first_line(err), extra=extra) from None


def find_weights_file(weights: Optional[PathLike], *, model: str, filename: str, hub_repo: str,
                      extra: str = "") -> Path:
    """The local path of a one-file checkpoint (`filename` is its official name) following the module's rules.

    extra: appended to the error, for the other files the family reads from the same folder.
    """
    if weights is None:
        local = default_weights_dir(model) / filename
        if local.is_file():
            return local
        return download_hub_file(hub_repo, filename, model=model, looked=[str(local)], extra=extra)
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / filename).is_file():
            return path / filename
        raise not_found(model, filename, looked=[str(path)], repo=hub_repo, files=[filename], folder=path,
                        extra=extra)
    if is_hub_id(str(weights)):
        return download_hub_file(str(weights), filename, model=model, looked=[], extra=extra)
    raise not_found(model, f"{path} (the {filename} file, or a folder holding it)", looked=[str(path)],
                    repo=hub_repo, files=[filename], folder=path.parent if path.suffix else path, extra=extra)


def find_pretrained_folder(weights: Optional[PathLike], *, model: str, hub_repo: str,
                           marker: str = "config.json") -> str:
    """A local folder (holding `marker`) or a hub id, for transformers' `from_pretrained`."""
    if weights is None:
        local = default_weights_dir(model)
        return str(local) if (local / marker).is_file() else hub_repo
    path = Path(weights).expanduser()
    if path.is_dir():
        if not (path / marker).is_file():
            raise not_found(model, f"{marker} in {path}", looked=[str(path)], repo=hub_repo, files=[], folder=path)
        return str(path)
    if is_hub_id(str(weights)):
        return str(weights)
    raise not_found(model, f"{path} (a transformers model folder)", looked=[str(path)], repo=hub_repo, files=[],
                    folder=path)


def pretrained_not_found(model: str, source: str, err: BaseException, *, hub_repo: str,
                         extra: str = "") -> WeightsNotFoundError:
    """WeightsNotFoundError for a transformers `from_pretrained(source)` that raised OSError."""
    if Path(source).is_dir():
        return not_found(model, f"model files in {source}", looked=[source], repo=hub_repo, files=[],
                         folder=source, extra=f" ({_first_line(err)}){extra}")
    looked = [str(default_weights_dir(model))] if source == hub_repo else []
    return not_found(model, f"{source}", looked=looked, repo=source, files=[], folder=default_weights_dir(model),
                     hub_reason=_first_line(err), extra=extra)


def read_state_dict(path: PathLike, *, model: str) -> dict:
    """The object stored in a checkpoint file: safetensors, or torch.load with weights_only=True (tensors only)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        # map_location: some official files (the LAION aesthetic MLP) hold CUDA tensors.
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{model}: {path} stores Python objects besides tensors, and richfeedback only loads checkpoints with "
            f"torch.load(weights_only=True) ({_first_line(err)}). Re-save just its state_dict, or as safetensors, on "
            "a machine where you trust the file.") from None
    except (RuntimeError, EOFError) as err:
        raise CheckpointError(f"{model}: {path} is not a readable PyTorch checkpoint ({_first_line(err)}); "
                              "download it again") from None


def load_state_dict_strictly(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, model: str,
                             path: PathLike, skipped: Optional[Mapping[str, str]] = None, hint: str = "") -> None:
    """Load `state_dict` into `module`, accounting for every key.

    skipped: keys of the official file the model does not use, each with the reason; any other extra key, any missing
    key and any shape mismatch is a CheckpointError naming them.
    """
    skipped = dict(skipped or {})
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected and k not in skipped]
    mismatched = [f"{k} (file {tuple(v.shape)}, model {tuple(expected[k].shape)})" for k, v in state_dict.items()
                  if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("with other shapes", mismatched)):
            if keys:
                shown = ", ".join(keys[:5]) + (f", ... ({len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{len(keys)} keys {label}: {shown}")
        why = "; ".join(f"{k} ({reason})" for k, reason in skipped.items())
        raise CheckpointError(f"{model}: {path} does not match the model: " + "; ".join(parts)
                              + (f". Keys skipped on purpose: {why}" if why else "") + (f". {hint}" if hint else ""))
    module.load_state_dict({k: state_dict[k] for k in expected}, strict=True)


def weights_fingerprint(model) -> str:
    """sha256 of a model's state (names and values as float32 where floating, so the dtype it runs in does not
    count): two loads of the same weights agree, any changed weight does not."""
    from .rahf.modeling import legacy_parameter_name

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        name = legacy_parameter_name(name)  # pools scored before RAHF's last_conv1 rename still match
        tensor = tensor.detach().cpu()
        tensor = (tensor.float() if tensor.is_floating_point() else tensor).contiguous().flatten()
        digest.update(name.encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
