"""Reward guidance on the embedded ShapesWorld generator: guided against unguided, same prompts and seeds.

Protocol: prompts from `sample_prompts(seed=100)` (the generator comparison protocol), half training prompts and half
held-out prompts, seeds 0..k-1 each; the embedded sampler (DDIM 25 steps, CFG 4). Two guiding rewards, both aesthetic
predictors, each the other's held-out judge:
  * `latent-aesthetic` (the default on the embedded model): the noise-aware latent aesthetic model, classifier
    guidance proper (the gradient at x_t, no decoding; `reward_models.latent_aesthetic`);
  * `rahf:aesthetics`: the embedded RAHF's aesthetics head on the decoded predicted x0 (cheap or accurate path).
Per configuration:

- guiding reward: its gain in units of its own unguided standard deviation (target >= 1), and the win rate against
  the unguided image of the same prompt and seed (ties count one half);
- held-out judgements, so that a gain is not just the guide being fooled:
  * the other aesthetic model's gain in its own unguided standard deviations (target: not worse);
  * `true_aes`: ShapesWorld's exact aesthetics quality, the function both models were trained to predict
    (`shapesworld.raters.aesthetics`: composition of the objects the oracle finds, damaged by the artifacts it
    finds). No model is involved, so it cannot be hacked by adversarial pixels (target: not worse);
  * `rahf_plaus`: RAHF's plausibility head;
  * the oracle's full-prompt accuracy and artifact rate;
- sampling time and peak memory as ratios to unguided. Each configuration runs in its own subprocess, after a
  warm-up, which generates each batch unguided and then guided in turns, so that both meet the same load on a
  shared machine (and checks that its unguided images equal every other worker's). Peak memory is measured in two
  more subprocesses per configuration, one batch unguided in one and guided in the other, each after its warm-up:
  the rise of the process's peak resident set during the batch (Linux VmHWM, reset through /proc/self/clear_refs)
  over its resident set before it, with glibc's allocator told to give freed memory back (a fixed mmap threshold
  of 64 KiB and a trim threshold of 0, MEMORY_ENV). Without that, glibc's adaptive threshold keeps freed tensors
  mapped, so the rise depended on what earlier batches had left in the allocator (two runs of RAHF every step read
  0.9x and 2.0x); and with both systems in one process the second read what the first had left (guided 0.91x).
  The timing worker keeps the default allocator, the one users run. The time target (<= 2x) is for the
  default configuration (latent-aesthetic, scale 0.2, every 2nd step of 20%-80% of the schedule).
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
RAHF = "rahf:aesthetics"
LATENT = "latent-aesthetic"
HELD_OUT = {LATENT: RAHF, RAHF: LATENT}
# glibc: every allocation of 64 KiB or more its own mapping, given back when freed, and the heap trimmed, so that the
# resident set follows the memory in use (the memory worker only)
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}

# Guided configurations (options of `load_guidance`, plus the reward); each is compared with the unguided sampler.
CONFIGS: dict[str, dict] = {
    # The library's defaults: the latent aesthetic model, scale 0.2 on every 2nd step of 20%-80% of the schedule.
    "default": {},
    "latent-first-60%": {"window": [0.0, 0.6]},  # the image rewards' window
    "latent-every-step": {"every": 1, "window": [0.0, 1.0]},  # past the defaults: does it start to game?
    # RAHF's aesthetics head on the decoded x0 with the image rewards' defaults (0.15 on every 2nd step of the first
    # 60%); the predicted x0 decoded by the embedded tiny decoder (decoder="auto" on the embedded model), or the full
    # VAE, or back through the UNet.
    "rahf": {"reward": RAHF},
    "rahf-vae-decoder": {"reward": RAHF, "decoder": "vae"},
    "rahf-accurate": {"reward": RAHF, "path": "accurate"},
    "rahf-every-step": {"reward": RAHF, "every": 1, "window": [0.0, 1.0]},
}


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def worker(config_json: str, out_path: str) -> None:
    """Generate the protocol's images unguided and guided, batch by batch in turns (so that both meet the same load
    on a shared machine); write them with the time of each. A memory job (`memory`: "unguided" or "guided", run
    under MEMORY_ENV) loads and warms up that system only and writes the rise of the peak resident set over one
    batch."""
    import time

    import torch

    from richfeedback.generation import EMBEDDED_DEFAULTS, generate_images, load_pipeline
    from richfeedback.guidance import load_guidance

    job = json.loads(config_json)
    torch.manual_seed(0)
    pipe = load_pipeline(None)
    options = dict(job["guidance"])
    names = [job["memory"]] if job.get("memory") else ["unguided", "guided"]
    systems = {name: load_guidance(options.pop("reward", None), **options) if name == "guided" else None
               for name in names}
    prompts, seeds, size = job["prompts"], job["seeds"], job["batch_size"]
    for guidance in systems.values():  # warm-up
        generate_images(pipe, prompts[:2], seeds[:2], guidance=guidance, **EMBEDDED_DEFAULTS)
    if job.get("memory"):
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM) to the current one
        rss_before = _status_kb("VmRSS")
        generate_images(pipe, prompts[:size], seeds[:size], guidance=systems[job["memory"]], **EMBEDDED_DEFAULTS)
        np.savez(out_path, peak_mb=(_status_kb("VmHWM") - rss_before) / 1024)
        return
    images = {name: [] for name in systems}
    seconds = dict.fromkeys(systems, 0.0)
    for i in range(0, len(prompts), size):
        for name, guidance in systems.items():
            start = time.perf_counter()
            images[name] += generate_images(pipe, prompts[i : i + size], seeds[i : i + size], guidance=guidance,
                                            **EMBEDDED_DEFAULTS)
            seconds[name] += time.perf_counter() - start
    np.savez(out_path, **{f"{name}_images": np.stack(images[name]) for name in systems},
             **{f"{name}_seconds": seconds[name] for name in systems})


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
            memory = {}  # each system's peak in its own process: nothing left over from the other's batch
            for system in ("unguided", "guided"):
                memory_out = Path(tmp) / f"{name}-{system}-memory.npz"
                subprocess.run([sys.executable, __file__, "--worker", json.dumps({**job, "memory": system}),
                                str(memory_out)], check=True, env={**env, **MEMORY_ENV})
                memory[f"{system}_peak_mb"] = float(np.load(memory_out)["peak_mb"])
            if "unguided" not in results:
                results["unguided"] = {"images": data["unguided_images"], "time_ratio": 1.0, "peak_mem_ratio": 1.0,
                                       "peak_mb": memory["unguided_peak_mb"],
                                       "unguided_peak_mb": memory["unguided_peak_mb"]}
            # Every worker makes the same unguided images (seeded per image): a check on the comparison itself.
            assert np.array_equal(data["unguided_images"], results["unguided"]["images"])
            results[name] = {"images": data["guided_images"],
                             "time_ratio": float(data["guided_seconds"] / data["unguided_seconds"]),
                             "peak_mem_ratio": memory["guided_peak_mb"] / max(memory["unguided_peak_mb"], 1e-6),
                             "peak_mb": memory["guided_peak_mb"], "unguided_peak_mb": memory["unguided_peak_mb"]}

    from richfeedback.guidance import DEFAULT_REWARD, SCHEDULE_DEFAULTS

    rahf, latent = load_reward_model(RAHF), load_reward_model(LATENT)
    base = None
    rows = []
    for name, r in results.items():
        images = list(torch.from_numpy(r["images"]).permute(0, 3, 1, 2))
        rahf_scores = rahf.outputs(prompts, images, ("aesthetics", "plausibility"))  # one RAHF pass for both
        scores = {RAHF: rahf_scores["aesthetics"].numpy(), LATENT: latent.score(prompts, images).numpy()}
        reports = [evaluate(p, image) for p, image in zip(prompts, r["images"])]
        r.update(scores=scores, true_aes=np.array([true_aesthetics(rep) for rep in reports]))
        if base is None:
            base = r
        # gain of each judge in units of its own unguided spread, and same-seed win rates
        gain = {j: float((s - base["scores"][j]).mean() / base["scores"][j].std()) for j, s in scores.items()}
        wins = {j: float(((s > base["scores"][j]) + 0.5 * (s == base["scores"][j])).mean()) for j, s in scores.items()}
        reward = configs.get(name, {}).get("reward", DEFAULT_REWARD) if name != "unguided" else None
        rows.append({
            "config": name,
            "reward": reward or "-",
            "images": len(prompts),
            "guiding_gain_sd": gain[reward] if reward else 0.0,
            "win_rate": wins[reward] if reward else 0.5,
            "heldout_reward": HELD_OUT.get(reward, "-"),
            "heldout_gain_sd": gain[HELD_OUT[reward]] if reward else 0.0,
            "latent_aes": float(scores[LATENT].mean()),
            "rahf_aes": float(scores[RAHF].mean()),
            "true_aes": float(r["true_aes"].mean()),
            "rahf_plaus": float(rahf_scores["plausibility"].mean()),
            "prompt_acc": float(np.mean([rep.prompt_correct for rep in reports])),
            "artifact_rate": float(np.mean([rep.has_artifact for rep in reports])),
            "time_ratio": r["time_ratio"],
            "peak_mem_ratio": r["peak_mem_ratio"],
            "peak_mb": r["peak_mb"],
            "unguided_peak_mb": r["unguided_peak_mb"],
        })
    defaults = {"reward": DEFAULT_REWARD, **{kind: {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
                                             for kind, d in SCHEDULE_DEFAULTS.items()}}
    return {"rows": rows, "defaults": defaults, "configs": configs,
            "unguided_sd": {j: float(s.std()) for j, s in base["scores"].items()},
            "protocol": {"prompt_seed": PROTOCOL_PROMPT_SEED, "prompts_per_split": n_prompts,
                         "seeds_per_prompt": n_seeds}}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        sys.path.insert(0, str(HERE))
        from run import main

        sys.exit(main(["--only", "guidance", *sys.argv[1:]]))
