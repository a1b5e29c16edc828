"""Example sheets of ShapesWorld for people: clean renders, injected artifacts and misalignments, what the oracle found."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..imaging import make_grid, save_png
from .artifacts import ARTIFACT_KINDS, inject_artifact
from .misalign import MISALIGNMENT_KINDS, inject_misalignment
from .oracle import evaluate
from .render import render
from .scene import sample_scene


def overlay(image: np.ndarray, mask: np.ndarray, colour=(255, 0, 255), alpha: float = 0.6) -> np.ndarray:
    """The image with `mask` tinted, for showing regions."""
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.array(colour, np.float32)
    return out.round().astype(np.uint8)


def write_samples(out_dir: str | os.PathLike, n: int = 8, seed: int = 0, size: int = 64) -> Path:
    """Write `n` rows of [clean | artifact | true region | oracle's region | misaligned] and a JSON legend."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    tiles, legend = [], []
    for i in range(n):
        scene = sample_scene(rng)
        clean = render(scene, size)
        kind = ARTIFACT_KINDS[i % len(ARTIFACT_KINDS)]
        result = inject_artifact(clean, scene, rng, kind)
        damaged, region = (result[0], result[1].region) if result else (clean, np.zeros(clean.shape[:2], bool))
        found = evaluate(scene.prompt, damaged).artifact_map
        misaligned, mis = clean, None
        for mis_kind in rng.permutation(MISALIGNMENT_KINDS):
            res = inject_misalignment(scene, rng, str(mis_kind), size)
            if res is not None:
                misaligned, mis = render(res[0], size), res[1]
                break
        tiles += [clean, damaged, overlay(damaged, region), overlay(damaged, found, (0, 200, 255)),
                  overlay(misaligned, mis.region if mis is not None else np.zeros_like(region), (255, 120, 0))]
        legend.append({"row": i, "prompt": scene.prompt.text, "artifact": kind if result else None,
                       "misalignment": mis.kind if mis else None,
                       "misaligned_words": [w for (w, _, _), l in zip(scene.prompt.word_roles(), mis.word_labels)
                                            if l == 0] if mis else []})
    grid = make_grid(tiles, ncols=5, scale=max(1, 128 // size))
    save_png(grid, out / "samples.png")
    (out / "samples.json").write_text(json.dumps(
        {"columns": ["clean", "artifact", "true artifact region", "oracle's artifact region", "misaligned"],
         "rows": legend}, indent=2))
    return out
