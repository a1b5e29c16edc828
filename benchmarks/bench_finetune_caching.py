"""LoRA training steps/s with VAE latents and text embeddings cached once, against encoding every step (what
diffusers' `train_text_to_image_lora.py` does), on the embedded model: same data, batch size, LoRA and step count,
measured in one run. The one-off encoding time of the cached run is reported beside it (it is paid once).

On a GPU, SD 1.5 at 512 px in bf16 beside diffusers' own script is benchmarks/gpu_sd15_lora_steps.py (not part of
`make bench`: it needs a GPU and diffusers' example script).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from richfeedback.finetune.train import load_config, train
from richfeedback.shapesworld.renders import write_render_folder


def run(quick: bool = False) -> dict:
    steps, batch = (10, 8) if quick else (60, 32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_render_folder(Path(tmp) / "data", 4 * batch, seed=0, split="all")
        for cached in (True, False):
            out = Path(tmp) / f"cached-{cached}"
            cfg = load_config(None, [f"data.path={data}", f"output_dir={out}", f"optim.batch_size={batch}",
                                     f"optim.max_steps={steps}", "checkpoint_every_steps=100000",
                                     "validation.every_steps=100000", f"cache_latents={cached}",
                                     f"cache_text_embeddings={cached}", "lora.rank=16", "lora.alpha=16"])
            train(cfg)
            summary = json.loads((out / "train_summary.json").read_text())
            rows.append({"latents_and_text": "cached once" if cached else "encoded every step",
                         "steps": steps, "batch": batch, "steps_per_s": summary["steps_per_second"],
                         "one_off_encoding_s": summary["cache_seconds"]})
    rows[0]["speedup"] = rows[0]["steps_per_s"] / rows[1]["steps_per_s"]
    rows[1]["speedup"] = 1.0
    return {"rows": rows, "speedup_cached_over_encoding": rows[0]["speedup"]}
