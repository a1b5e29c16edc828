"""Batched generation against one image per call, same prompts and seeds, on the embedded model.

Reports the throughput ratio (batch 8 / batch 1) and the largest pixel difference between the two, which shows that
an image depends on its prompt and seed, not on its batch (per-image generators).
"""

from __future__ import annotations

import numpy as np

from richfeedback.generation import EMBEDDED_DEFAULTS, generate_images, load_pipeline
from richfeedback.shapesworld.scene import sample_prompts

from timing import best_time  # benchmarks/timing.py


def run(quick: bool = False) -> dict:
    pipe = load_pipeline("embedded")
    prompts = sample_prompts(8, seed=7)
    seeds = list(range(8))
    repeats = 1 if quick else 3
    t1, singles = best_time(lambda: [generate_images(pipe, [p], [s], **EMBEDDED_DEFAULTS)[0]
                                     for p, s in zip(prompts, seeds)], repeats)
    t8, batched = best_time(lambda: generate_images(pipe, prompts, seeds, **EMBEDDED_DEFAULTS), repeats)
    max_diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(singles, batched))
    return {"rows": [{"images": len(prompts), "batch1_s": t1, "batch8_s": t8, "speedup_batch8_vs_1": t1 / t8,
                      "max_pixel_diff_0_255": max_diff}]}
