"""ShapesWorld images with one injected artifact that the oracle sees: what `inpaint-fix` is measured on
(benchmarks/bench_inpaint.py) and what `make demo` repairs; and the oracle's repair of any flagged image, which
teaches the embedded inpainting model the generator's own failures (scripts/train_embedded_inpainter.py).

    write_artifact_folder("out/artifacts", n=8)   # PNGs + manifest.jsonl, like a `richfeedback generate` folder
    mask, target = oracle_repair(prompt, image, dilate=2, cell=4)   # None when the oracle finds no artifact
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..imaging import save_png
from ..shapesworld import oracle
from ..shapesworld.artifacts import inject_artifact
from ..shapesworld.render import render
from ..shapesworld.scene import sample_scene
from .masks import dilate_mask, round_to_cells


def artifact_examples(n: int, seed: int = 0) -> list[dict]:
    """`n` dicts with prompt, image (uint8), kind (of artifact) and before (the oracle's report), from clean renders
    with one random artifact each; scenes where the artifact does not fit or the oracle misses it are skipped."""
    rng = np.random.default_rng(seed)
    examples = []
    while len(examples) < n:
        scene = sample_scene(rng)
        result = inject_artifact(render(scene), scene, rng)
        if result is None:
            continue
        image, artifact = result
        report = oracle.evaluate(scene.prompt, image)
        if report.has_artifact:
            examples.append({"prompt": scene.prompt.text, "image": image, "kind": artifact.kind, "before": report})
    return examples


def oracle_repair(prompt: str, image: np.ndarray, dilate: float = 2.0, cell: int = 4,
                  report: oracle.OracleReport | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(mask, target) that repair what the oracle flags in a uint8 (H, W, 3) image, or None when it flags nothing.

    The mask is the oracle's artifact map dilated by `dilate` pixels and rounded up to whole `cell`-pixel latent
    cells (as `inpaint-fix` makes masks); the target is the image with the oracle's crisp re-render of the objects it
    read pasted inside the mask: every pixel outside the mask is the image's, so deformed corners and ragged edges are
    made right and nothing else changes. `report`: the oracle's report on the image, if already computed.
    """
    report = report if report is not None else oracle.evaluate(prompt, image)
    if not report.has_artifact:
        return None
    mask = round_to_cells(dilate_mask(report.artifact_map, dilate), cell)
    return mask, np.where(mask[..., None], oracle.redraw(report.objects, image.shape[0]), image)


def write_artifact_folder(out_dir: str | os.PathLike, n: int = 8, seed: int = 0) -> Path:
    """Write `n` artifact examples as PNG files with a manifest.jsonl (file_name, prompt, artifact kind)."""
    out = Path(out_dir)
    rows = []
    for i, example in enumerate(artifact_examples(n, seed)):
        name = f"{i:04d}_{example['kind']}.png"
        save_png(example["image"], out / name)
        rows.append({"file_name": name, "prompt": example["prompt"], "artifact": example["kind"]})
    tmp = out / "manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, out / "manifest.jsonl")
    return out
