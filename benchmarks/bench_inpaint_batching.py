"""N inpainting candidates of one image in one batched pipeline call against N sequential calls (same image, mask,
prompt and seeds) on the embedded ShapesWorld model at its own settings (25 DDIM steps, CFG 4, 64x64).

Reports the time ratio (sequential / batched) and the largest pixel difference of candidate 0 between the two (the
same seed drawn first in both; diffusers draws the VAE's posterior sample of the input from the first generator of a
call, so later candidates of a batched call differ from the same seeds drawn alone, and are as valid).
"""

from __future__ import annotations

import numpy as np

from richfeedback.generation import EMBEDDED_DEFAULTS
from richfeedback.inpaint.repair import inpaint_candidates, load_inpaint_pipeline
from richfeedback.shapesworld.render import render
from richfeedback.shapesworld.scene import sample_scene

from timing import best_time  # benchmarks/timing.py


def run(quick: bool = False) -> dict:
    pipe = load_inpaint_pipeline(None)
    scene = sample_scene(np.random.default_rng(11))
    image = render(scene)
    mask = np.zeros(image.shape[:2], bool)
    mask[16:40, 16:40] = True
    sampling = {**EMBEDDED_DEFAULTS, "strength": 1.0}
    repeats = 1 if quick else 3
    rows = []
    for n in ((4, 8) if quick else (4, 8, 16)):
        seeds = list(range(n))

        def batched():
            return inpaint_candidates(pipe, image, mask, scene.prompt.text, seeds, **sampling)

        def sequential():
            return inpaint_candidates(pipe, image, mask, scene.prompt.text, seeds, batch_size=1, **sampling)

        t_seq, one_by_one = best_time(sequential, repeats)
        t_batch, together = best_time(batched, repeats)
        max_diff = int(np.abs(one_by_one[0].astype(int) - together[0].astype(int)).max())
        rows.append({"candidates": n, "sequential_s": t_seq, "batched_s": t_batch,
                     "speedup_batched_vs_sequential": t_seq / t_batch, "candidate0_max_pixel_diff": max_diff})
    return {"rows": rows, "settings": {**sampling, "repeats": repeats, "timing": "best of repeats"}}
