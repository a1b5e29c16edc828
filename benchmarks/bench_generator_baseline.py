"""The embedded generator's baseline, as the oracle sees it: what later stages (reward-filtered LoRA, inpainting,
guidance) must improve.

Protocol (`richfeedback.shapesworld.evaluate.protocol_summary`, shared by every later comparison): 48 prompts per
split from `sample_prompts(seed=100)` for training prompts and held-out prompts, seeds 0-3 per prompt, the embedded
model's default sampler (DDIM 25 steps, CFG 4). Reports full-prompt accuracy, alignment per word kind, artifact rate,
extra-object rate and the diversity spread.
"""

from __future__ import annotations

import time

from richfeedback.generation import EMBEDDED_DEFAULTS, load_pipeline
from richfeedback.shapesworld.evaluate import PROTOCOL_PROMPT_SEED, protocol_summary


def run(quick: bool = False) -> dict:
    n_prompts, n_seeds = (8, 2) if quick else (48, 4)
    pipe = load_pipeline("embedded")
    start = time.perf_counter()
    result = protocol_summary(pipe, n_prompts, n_seeds, **EMBEDDED_DEFAULTS)
    seconds = time.perf_counter() - start
    rows = []
    for split, s in result.items():
        rows.append({"split": split, "images": s["num_images"], "prompt_acc": s["prompt_accuracy"],
                     **{f"{k}_acc": v for k, v in s["word_alignment"].items()},
                     "artifact_rate": s["artifact_rate"], "extra_obj_rate": s["extra_object_rate"],
                     "diversity": s["diversity"]["mean_std"]})
    return {"rows": rows, "s_per_image": seconds / sum(r["images"] for r in rows), "detail": result,
            "protocol": {"prompt_seed": PROTOCOL_PROMPT_SEED, "prompts_per_split": n_prompts,
                         "seeds_per_prompt": n_seeds, "sampling": EMBEDDED_DEFAULTS}}
