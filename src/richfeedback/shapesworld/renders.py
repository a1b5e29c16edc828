"""Clean renders of ShapesWorld prompts as an `imagefolder` dataset (file_name, text): regularisation data for
fine-tuning, the part of align_sd's recipe that LAION-Aesthetics images play (`data.extra_paths` of
richfeedback.finetune.train), and the control that says how much of a fine-tuning gain the feedback itself buys.

    richfeedback shapesworld renders --n 512 --seed 11 --split train --out runs/renders
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..dataset_io import folder_written_atomically
from ..imaging import save_png
from .render import render
from .scene import is_heldout_prompt, sample_scene


def write_render_folder(out_dir: str | os.PathLike, n: int, seed: int = 0, split: str = "train",
                        size: int = 64) -> Path:
    """`n` clean renders of random scenes whose prompts are in `split` ("train", "heldout" or "all")."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be train, heldout or all, got {split!r}")
    rng = np.random.default_rng(seed)
    rows = []
    with folder_written_atomically(Path(out_dir)) as tmp:
        while len(rows) < n:
            scene = sample_scene(rng)
            heldout = is_heldout_prompt(scene.prompt.text)
            if (split == "train" and heldout) or (split == "heldout" and not heldout):
                continue
            name = f"{len(rows):06d}.png"
            save_png(render(scene, size), tmp / name)
            rows.append({"file_name": name, "text": scene.prompt.text})
        (tmp / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Path(out_dir)
