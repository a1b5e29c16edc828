"""RAHF inference: load a model (embedded, a folder, or the public checkpoint file), predict in batches, and write
what people look at (heatmap overlays as PNG) and what programs read (scores and misaligned words as JSON)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ...imaging import heatmap_overlay, load_rgb, make_grid, save_png
from .configuration import HEATMAP_NAMES, SCORE_NAMES
from .modeling import RAHFModel
from .processing import RAHFProcessor, clean_prompt, load_tokenizer

EMBEDDED_RAHF = Path(__file__).resolve().parents[2] / "embedded" / "rahf-shapes"


def embedded_rahf_path() -> Path:
    if not (EMBEDDED_RAHF / "config.json").exists():
        raise FileNotFoundError(f"the embedded RAHF model is missing at {EMBEDDED_RAHF}; it ships with the repository "
                                "or can be retrained with `python scripts/train_embedded_rahf.py`")
    return EMBEDDED_RAHF


def load_rahf(weights: Optional[str | os.PathLike] = None, size: str = "large", tokenizer: Optional[str] = None,
              device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> tuple[RAHFModel, RAHFProcessor]:
    """(model, processor) from: None or "embedded" (the shipped ShapesWorld model); a folder written by
    `save_pretrained` (with its tokenizer); or a checkpoint file in the public layout (`size` names its
    architecture, "large" for the released one; `tokenizer` a folder or hub id, t5-base's by default)."""
    from .checkpoint import load_public_checkpoint

    path = embedded_rahf_path() if weights in (None, "embedded") else Path(weights)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json: not a RAHF folder written by save_pretrained")
        model = RAHFModel.from_pretrained(path, dtype=dtype)
        tok = load_tokenizer(model.config, tokenizer or path)
    else:
        model = load_public_checkpoint(path, size=size, dtype=dtype)
        if tokenizer is not None:
            model.config.tokenizer = str(tokenizer)
        tok = load_tokenizer(model.config)
    return model.to(device).eval(), RAHFProcessor(tok, model.config)


@torch.no_grad()
def predict(model: RAHFModel, processor: RAHFProcessor, images: Sequence, prompts: Sequence[str],
            batch_size: int = 32, generate: bool = True) -> list[dict]:
    """Per image: `scores` (name -> float), `heatmaps` (name -> (S, S) float array), `marked_prompt` and
    `misaligned_words` (the prompt's words the model marked)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    results = []
    for start in range(0, len(images), batch_size):
        batch_prompts = list(prompts[start : start + batch_size])
        inputs = processor(list(images[start : start + batch_size]), batch_prompts)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        output = model(**inputs)
        marked = processor.decode(model.generate_marked_prompt(output)) if generate else [None] * len(batch_prompts)
        for i, prompt in enumerate(batch_prompts):
            words = processor.misaligned_words(marked[i], prompt) if marked[i] is not None else None
            results.append({
                "prompt": prompt,
                "scores": {n: float(output.scores[n][i]) for n in SCORE_NAMES},
                "heatmaps": {n: output.heatmaps[n][i].float().cpu().numpy() for n in HEATMAP_NAMES},
                "marked_prompt": marked[i],
                "misaligned_words": None if words is None else
                [w for w, flag in zip(clean_prompt(prompt).split(), words) if flag],
            })
    return results


def write_predictions(results: list[dict], images: Sequence[np.ndarray], names: Sequence[str],
                      out_dir: str | os.PathLike) -> Path:
    """`predictions.jsonl` (scores, marked prompt, misaligned words) and, per image, a PNG strip:
    image | implausibility overlay | misalignment overlay."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "predictions.jsonl.tmp"
    with open(tmp, "w") as f:
        for name, image, result in zip(names, images, results):
            strip = [image] + [heatmap_overlay(image, result["heatmaps"][h]) for h in HEATMAP_NAMES]
            scale = max(1, 256 // image.shape[0])
            save_png(make_grid(strip, ncols=3, scale=scale), out / f"{Path(name).stem}_heatmaps.png")
            row = {k: v for k, v in result.items() if k != "heatmaps"}
            f.write(json.dumps({"image": str(name), **row}) + "\n")
    os.replace(tmp, out / "predictions.jsonl")
    return out


def load_images(paths: Sequence[str | os.PathLike]) -> tuple[list[np.ndarray], list[str], list[str]]:
    """(images, names, errors) for image files or folders; unreadable files are reported, not fatal."""
    from ...imaging import ImageLoadError, list_images

    files = []
    for p in paths:
        p = Path(p)
        files += list_images(p) if p.is_dir() else [p]
    images, names, errors = [], [], []
    for f in files:
        try:
            images.append(load_rgb(f))
            names.append(str(f))
        except ImageLoadError as err:
            errors.append(str(err))
    return images, names, errors
