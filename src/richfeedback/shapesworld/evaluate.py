"""The oracle over a folder of generations: per-image reports, the summary numbers, and a diversity measure.

A folder is what `richfeedback generate` writes: PNG files and a `manifest.jsonl` with each file's prompt and seed.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..imaging import ImageLoadError, load_rgb
from .oracle import OracleReport, evaluate, summarize
from .render import render
from .scene import layout_scene, parse_prompt


def diversity(reports: Sequence[OracleReport]) -> dict:
    """Spread of what was drawn for the same prompt: mean over prompts of the standard deviation, across the images
    of that prompt, of object centre x, centre y and half-extent (as fractions of the image side).

    Fine-tuning that raises accuracy by always drawing one layout shows up here as a collapse of the spread.
    """
    by_prompt = defaultdict(list)
    for r in reports:
        by_prompt[r.prompt].append(r)
    spreads = {"cx": [], "cy": [], "h": []}
    for group in by_prompt.values():
        if len(group) < 2:
            continue
        # The largest object of each image stands for the image: comparable across images of one prompt.
        firsts = [r.objects[0] for r in group if r.objects]
        if len(firsts) < 2:
            continue
        for key in spreads:
            spreads[key].append(float(np.std([getattr(o, key) for o in firsts])))
    out = {f"{k}_std": (float(np.mean(v)) if v else None) for k, v in spreads.items()}
    values = [v for v in out.values() if v is not None]
    out["mean_std"] = float(np.mean(values)) if values else None
    return out


def reference_diversity(prompts: Sequence[str], seeds_per_prompt: int) -> dict:
    """`diversity` of what a perfect generator would draw: each prompt laid out by ShapesWorld's own grammar with seeds
    0..seeds_per_prompt-1 and rendered. The floor beside a ratio to a base model: a base that scatters objects more
    than its prompts allow spreads wider than the truth, so a generator that learned the prompts exactly reads as a
    fall in spread against that base."""
    reports = []
    for prompt in prompts:
        spec = parse_prompt(prompt)
        for seed in range(seeds_per_prompt):
            scene = layout_scene(spec, np.random.default_rng(seed))
            if scene is None:
                raise ValueError(f"ShapesWorld's grammar found no layout for {prompt!r} (seed {seed})")
            reports.append(evaluate(prompt, render(scene)))
    return diversity(reports)


def evaluate_folder(folder: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """Run the oracle on every image of a generation folder; write oracle.jsonl and oracle_summary.json.

    Returns the summary. Unreadable images and prompts outside ShapesWorld's grammar are counted and reported, not
    fatal.
    """
    folder = Path(folder)
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        raise FileNotFoundError(
            f"{manifest} not found: the oracle needs the manifest that `richfeedback generate` writes "
            "(one JSON line per image with file_name and prompt)"
        )
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    out = Path(out_dir) if out_dir is not None else folder
    out.mkdir(parents=True, exist_ok=True)
    reports, skipped = [], []
    tmp = out / "oracle.jsonl.tmp"
    with open(tmp, "w") as f:
        for row in rows:
            try:
                report = evaluate(row["prompt"], load_rgb(folder / row["file_name"]))
            except (ImageLoadError, ValueError) as err:
                skipped.append({"file_name": row.get("file_name"), "error": str(err)})
                continue
            reports.append(report)
            f.write(json.dumps({"file_name": row["file_name"], "seed": row.get("seed"), **report.to_dict()}) + "\n")
    os.replace(tmp, out / "oracle.jsonl")
    if not reports:
        raise ValueError(f"no image in {folder} could be judged: {skipped[:3]}")
    summary = {**summarize(reports), "diversity": diversity(reports), "skipped": skipped}
    (out / "oracle_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


# The protocol every generator comparison uses (baseline, fine-tuned, guided): prompts from `sample_prompts` with
# this seed, for the training-prompt and held-out splits, and seeds 0..k-1 for each prompt.
PROTOCOL_PROMPT_SEED = 100


def evaluate_pipeline(pipe, prompts: Sequence[str], seeds_per_prompt: int, batch_size: int = 16,
                      progress: bool = False, **sampling) -> list[OracleReport]:
    """Generate `seeds_per_prompt` images for each prompt (seeds 0..k-1) and judge each with the oracle."""
    from tqdm.auto import tqdm

    from ..generation import generate_images

    jobs = [(p, s) for p in prompts for s in range(seeds_per_prompt)]
    reports = []
    for i in tqdm(range(0, len(jobs), batch_size), desc="generate+judge", disable=not progress):
        batch = jobs[i : i + batch_size]
        images = generate_images(pipe, [p for p, _ in batch], [s for _, s in batch], **sampling)
        reports += [evaluate(p, image) for (p, _), image in zip(batch, images)]
    return reports


def protocol_summary(pipe, n_prompts: int = 48, seeds_per_prompt: int = 4, progress: bool = False,
                     **sampling) -> dict[str, dict]:
    """Oracle summary and diversity on the protocol's training-prompt and held-out splits."""
    from .scene import sample_prompts

    out = {}
    for split in ("train", "heldout"):
        prompts = sample_prompts(n_prompts, seed=PROTOCOL_PROMPT_SEED, split=split)
        reports = evaluate_pipeline(pipe, prompts, seeds_per_prompt, progress=progress, **sampling)
        out[split] = {**summarize(reports), "diversity": diversity(reports)}
    return out
