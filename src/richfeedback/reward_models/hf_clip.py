"""transformers CLIP models (PickScore, CLIPScore, the aesthetic predictor's backbone): strict loading and helpers."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image

from .preprocess import ImageTransform
from .weights import CheckpointError, pretrained_not_found

TEXT_TOWER_KEYS = ("text_model.", "text_projection", "logit_scale")


@contextmanager
def quiet_transformers():
    """Silence transformers' load report and progress bar while loading: our own key check reports problems."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def load_clip_model(source: str, *, model: str, hub_repo: str, image_tower_only: bool = False, extra_hint: str = ""):
    """A transformers CLIP model in fp32 from a folder or hub id, refusing missing, extra or mis-shaped weights.

    transformers itself drops the legacy `*.embeddings.position_ids` buffers that checkpoints saved before v4.31
    (PickScore_v1 among them) store: they equal arange(n), which the model recomputes. Every other key must match.
    image_tower_only: build a `CLIPVisionModelWithProjection` and skip the text tower's keys (TEXT_TOWER_KEYS).
    """
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModelWithProjection

    try:
        with quiet_transformers():
            if image_tower_only:
                # The projection size lives at the top of a CLIPConfig; the vision sub-config may not repeat it.
                config = CLIPConfig.from_pretrained(source)
                vision_config = config.vision_config
                vision_config.projection_dim = config.projection_dim
                # fp32 explicitly: transformers 5 would otherwise keep the checkpoint's dtype ("auto").
                clip, info = CLIPVisionModelWithProjection.from_pretrained(
                    source, config=vision_config, dtype=torch.float32, output_loading_info=True)
            else:
                clip, info = CLIPModel.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
    except OSError as err:
        raise pretrained_not_found(model, source, err, hub_repo=hub_repo, extra=extra_hint) from None
    except RuntimeError as err:  # transformers refuses mis-shaped weights itself
        raise CheckpointError(f"{model}: {source} does not match its config: {str(err).splitlines()[0]}") from None
    skipped = TEXT_TOWER_KEYS if image_tower_only else ()
    problems = [("missing", sorted(info["missing_keys"])), ("with other shapes", sorted(info["mismatched_keys"])),
                ("unexpected", sorted(k for k in info["unexpected_keys"] if not k.startswith(skipped)))]
    problems = [(label, [str(k) for k in keys]) for label, keys in problems if keys]
    if problems or info.get("error_msgs"):
        text = "; ".join(f"{len(keys)} keys {label}: {', '.join(keys[:5])}" for label, keys in problems)
        why = " (the text tower's keys are skipped on purpose: only the image tower is used)" if skipped else ""
        raise CheckpointError(f"{model}: {source} does not match a {type(clip).__name__}: {text}{why}"
                              + (f"; {info['error_msgs'][:2]}" if info.get("error_msgs") else ""))
    return clip


def load_tokenizer(source: str, *, model: str, hub_repo: str, extra_hint: str = ""):
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise pretrained_not_found(model, source, err, hub_repo=hub_repo, extra=extra_hint) from None


def transform_from_processor(source: str, *, model: str, hub_repo: str, crop_offset: str = "floor",
                             extra_hint: str = "") -> ImageTransform:
    """The ImageTransform a transformers CLIP image processor config describes (shortest-edge resize + crop)."""
    from transformers import CLIPImageProcessor

    try:
        with quiet_transformers():
            processor = CLIPImageProcessor.from_pretrained(source)
    except OSError as err:
        raise pretrained_not_found(model, source, err, hub_repo=hub_repo, extra=extra_hint) from None
    size, crop = dict(processor.size), dict(processor.crop_size)
    resample = int(processor.resample)
    if (set(size) != {"shortest_edge"} or crop.get("height") != crop.get("width") or resample != Image.BICUBIC
            or not (processor.do_resize and processor.do_center_crop and processor.do_normalize)):
        raise CheckpointError(f"{model}: the image processor of {source} is not CLIP's shortest-edge bicubic resize + "
                              f"square centre crop (size={size}, crop_size={crop}, resample={resample})")
    if size["shortest_edge"] != crop["height"]:
        raise CheckpointError(f"{model}: {source} resizes to {size['shortest_edge']} but crops {crop['height']}; "
                              "only equal sizes are supported")
    return ImageTransform(size=crop["height"], resize="shortest", mean=tuple(processor.image_mean),
                          std=tuple(processor.image_std), crop_offset=crop_offset, reference_resize="pil")


def has_tokenizer_files(folder: str) -> bool:
    path = Path(folder)
    return path.is_dir() and ((path / "tokenizer.json").is_file() or (path / "vocab.json").is_file())


def has_processor_files(folder: str) -> bool:
    return has_tokenizer_files(folder) and (Path(folder) / "preprocessor_config.json").is_file()


def l2_normalize(features: torch.Tensor) -> torch.Tensor:
    """x / ||x||, as the references write it (no epsilon: a zero feature vector is a bug worth seeing)."""
    return features / features.norm(dim=-1, keepdim=True)


def pooled(output) -> torch.Tensor:
    """The projected embedding: transformers 5 returns a ModelOutput from get_*_features, older versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
