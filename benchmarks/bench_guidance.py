"""Reward guidance on the embedded ShapesWorld generator: guided against unguided, same prompts and seeds.

Protocol: prompts from `sample_prompts(seed=100)` (the generator comparison protocol), half training prompts and half
held-out prompts, seeds 0..k-1 each; the embedded sampler (DDIM 25 steps, CFG 4). Guidance climbs the embedded
RAHF's aesthetics head (`rahf:aesthetics`, the default on the embedded model). Per configuration:

- guiding reward: mean rahf:aesthetics, its gain in units of the unguided standard deviation (target >= 1), and the
  win rate against the unguided image of the same prompt and seed (ties count one half);
- held-out judgements, so that a gain is not just the guide being fooled:
  * `true_aes`: ShapesWorld's exact aesthetics quality, the function RAHF's aesthetics head was trained to predict
    (`shapesworld.raters.aesthetics`: composition of the objects the oracle finds, damaged by the artifacts it
    finds). No model is involved, so it cannot be hacked by adversarial pixels (target: not worse);
  * `rahf_plaus`: RAHF's plausibility head (another head of the same network: it shares the backbone, so it is a
    weaker check than the oracle);
  * the oracle's full-prompt accuracy and artifact rate;
- sampling time and peak memory as ratios to unguided. Each configuration runs in its own subprocess, after a
  warm-up, which generates each batch unguided and then guided in turns, so that both meet the same load on a
  shared machine (and checks that its unguided images equal every other worker's). Peak memory is the rise of the
  process's peak resident set during a batch (Linux VmHWM, reset through /proc/self/clear_refs before each batch)
  over its resident set before it, the largest over the batches. The time target (<= 2x) is for the
  default configuration (cheap path, scale 0.15, every 2nd step in the first 60% of the schedule).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REWARD = "rahf:aesthetics"

# Guided configurations (options of `load_guidance`); each is compared with the unguided sampler.
CONFIGS: dict[str, dict] = {
    # The library's defaults: scale 0.15, cheap path, every 2nd step of the first 60% (8 of 25 steps guided), the
    # predicted x0 decoded for the reward by the embedded tiny decoder (decoder="auto" on the embedded model).
    "default": {},
    "default-vae-decoder": {"decoder": "vae"},  # the same through the full VAE decoder
    "every-3rd": {"every": 3},  # 5 of 25 steps
    "accurate": {"path": "accurate"},
    "every-step": {"every": 1, "window": [0.0, 1.0]},
    "scale-0.3": {"scale": 0.3},
}


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def worker(config_json: str, out_path: str) -> None:
    """Generate the protocol's images unguided and guided, batch by batch in turns (so that both meet the same load
    on a shared machine); write them with the time and peak memory of each."""
    import time

    import torch

    from richfeedback.generation import EMBEDDED_DEFAULTS, generate_images, load_pipeline
    from richfeedback.guidance import load_guidance

    job = json.loads(config_json)
    torch.manual_seed(0)
    pipe = load_pipeline(None)
    systems = {"unguided": None, "guided": load_guidance(REWARD, **job["guidance"])}
    prompts, seeds, size = job["prompts"], job["seeds"], job["batch_size"]
    for guidance in systems.values():  # warm-up
        generate_images(pipe, prompts[:2], seeds[:2], guidance=guidance, **EMBEDDED_DEFAULTS)
    images = {name: [] for name in systems}
    seconds = dict.fromkeys(systems, 0.0)
    peak_mb = dict.fromkeys(systems, 0.0)
    for i in range(0, len(prompts), size):
        for name, guidance in systems.items():
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM) to the current one
            rss_before = _status_kb("VmRSS")
            start = time.perf_counter()
            images[name] += generate_images(pipe, prompts[i : i + size], seeds[i : i + size], guidance=guidance,
                                            **EMBEDDED_DEFAULTS)
            seconds[name] += time.perf_counter() - start
            peak_mb[name] = max(peak_mb[name], (_status_kb("VmHWM") - rss_before) / 1024)
    np.savez(out_path, **{f"{name}_images": np.stack(images[name]) for name in systems},
             **{f"{name}_seconds": seconds[name] for name in systems}, **{f"{name}_peak_mb": peak_mb[name]
                                                                           for name in systems})


def true_aesthetics(report) -> float:
    from richfeedback.shapesworld.raters import aesthetics

    return aesthetics([o.as_scene_object() for o in report.objects], report.artifact_area)


def run(quick: bool = False) -> dict:
    import torch

    from richfeedback.reward_models import load_reward_model
    from richfeedback.shapesworld.evaluate import PROTOCOL_PROMPT_SEED
    from richfeedback.shapesworld.oracle import evaluate
    from richfeedback.shapesworld.scene import sample_prompts

    n_prompts, n_seeds = (4, 1) if quick else (16, 2)  # per split
    prompts, seeds = [], []
    for split in ("train", "heldout"):
        for p in sample_prompts(n_prompts, seed=PROTOCOL_PROMPT_SEED, split=split):
            prompts += [p] * n_seeds
            seeds += list(range(n_seeds))
    configs = {"default": {}} if quick else CONFIGS

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in configs.items():
            out = Path(tmp) / f"{name}.npz"
            job = {"guidance": config, "prompts": prompts, "seeds": seeds, "batch_size": 8}
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            subprocess.run([sys.executable, __file__, "--worker", json.dumps(job), str(out)], check=True, env=env)
            data = np.load(out)
            if "unguided" not in results:
                results["unguided"] = {"images": data["unguided_images"], "time_ratio": 1.0, "peak_mem_ratio": 1.0,
                                       "peak_mb": float(data["unguided_peak_mb"])}
            # Every worker makes the same unguided images (seeded per image): a check on the comparison itself.
            assert np.array_equal(data["unguided_images"], results["unguided"]["images"])
            results[name] = {"images": data["guided_images"],
                             "time_ratio": float(data["guided_seconds"] / data["unguided_seconds"]),
                             "peak_mem_ratio": float(data["guided_peak_mb"] / max(data["unguided_peak_mb"], 1e-6)),
                             "peak_mb": float(data["guided_peak_mb"])}

    guide = load_reward_model(REWARD)
    plaus = load_reward_model("rahf:plausibility")
    base = None
    rows = []
    for name, r in results.items():
        images = torch.from_numpy(r["images"]).permute(0, 3, 1, 2)
        guiding = guide.score(prompts, list(images)).numpy()
        reports = [evaluate(p, image) for p, image in zip(prompts, r["images"])]
        r.update(guiding=guiding, true_aes=np.array([true_aesthetics(rep) for rep in reports]))
        if base is None:
            base = r
        diff = guiding - base["guiding"]
        rows.append({
            "config": name,
            "images": len(prompts),
            "rahf_aes": float(guiding.mean()),
            "gain_in_sd": float(diff.mean() / base["guiding"].std()) if name != "unguided" else 0.0,
            "win_rate": float(((diff > 0) + 0.5 * (diff == 0)).mean()) if name != "unguided" else 0.5,
            "true_aes": float(r["true_aes"].mean()),
            "rahf_plaus": float(plaus.score(prompts, list(images)).mean()),
            "prompt_acc": float(np.mean([rep.prompt_correct for rep in reports])),
            "artifact_rate": float(np.mean([rep.has_artifact for rep in reports])),
            "time_ratio": r["time_ratio"],
            "peak_mem_ratio": r["peak_mem_ratio"],
            "peak_mb": r["peak_mb"],
        })
    from richfeedback.guidance import DEFAULT_EVERY, DEFAULT_SCALE, DEFAULT_WINDOW

    defaults = {"scale": DEFAULT_SCALE, "every": DEFAULT_EVERY, "window": list(DEFAULT_WINDOW), "path": "cheap"}
    return {"rows": rows, "reward": REWARD, "defaults": defaults, "configs": configs,
            "unguided_rahf_aes_sd": float(base["guiding"].std()),
            "protocol": {"prompt_seed": PROTOCOL_PROMPT_SEED, "prompts_per_split": n_prompts,
                         "seeds_per_prompt": n_seeds}}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        sys.path.insert(0, str(HERE))
        from run import main

        sys.exit(main(["--only", "guidance", *sys.argv[1:]]))
