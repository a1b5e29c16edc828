"""SD 1.5 LoRA training steps/s at 512 px in bf16: `richfeedback.finetune.train` beside diffusers' own
`examples/text_to_image/train_text_to_image_lora.py` at the same settings, in one run (issue 5's GPU item).

    python benchmarks/gpu_sd15_lora_steps.py --diffusers-script .peer/train_text_to_image_lora.py --out OUT
    python benchmarks/gpu_sd15_lora_steps.py --diffusers-script ... --out OUT --model embedded --resolution 64 \
        --mixed-precision no --steps 3 12        # a smoke run on CPU (the embedded generator at 64 px)

Not part of `make bench` (it needs a GPU and diffusers' script, which is not ours to ship: fetch it from the
diffusers repository at the installed version's tag). The components are SD 1.5's architecture (the 860M UNet,
the VAE, CLIP ViT-L/14's text encoder) built from their configs with random weights, the tokenizer the embedded
generator's (CLIP's BPE ids; only the 77-token length enters the step): a step's time does not depend on the
weights' values, and the GPU machine cannot download the real ones (`--model PATH` takes a real SD 1.5 folder).

Same settings for both: 64 ShapesWorld renders at the resolution, centre crop, no flip, batch 4, no accumulation,
LoRA rank 4 / alpha 4 on to_q, to_k, to_v, to_out.0, AdamW lr 1e-4 constant, no min-SNR, no gradient checkpointing,
the mixed precision asked for, seed 0, no validation or checkpoints. diffusers' script encodes the VAE latents and
the text every step; ours caches both once (its default) and is also run with the caches off (the same steps, except
that our VAE stays in float32 where diffusers' casts it to the mixed-precision dtype, and that diffusers' decodes
the PNGs every step in its data loader, with `--dataloader_num_workers 0` as its default). Steps/s is
(N - N0) / (T(N) - T(N0)) from the wall times of whole runs of N0 and N steps, so loading, caching and saving cancel
out the same way for every system; one discarded run of diffusers' script first builds the `datasets` cache and
warms the file cache. Beside it, each trainer's own in-loop rate of the N-step run (ours: train_summary.json;
diffusers': the last rate of its progress bar). Writes OUT/gpu_sd15_lora_steps.json with the ratios against
diffusers' script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"batch_size": 4, "rank": 4, "lr": 1e-4, "images": 64, "seed": 0}


def build_sd15_random(folder: Path) -> None:
    """A StableDiffusionPipeline folder with SD 1.5's component architectures and random weights."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from richfeedback.generation import embedded_generator_path

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2,
                        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                                num_hidden_layers=12, num_attention_heads=12,
                                                max_position_embeddings=77, hidden_act="quick_gelu",
                                                projection_dim=768))
    tokenizer = CLIPTokenizer.from_pretrained(embedded_generator_path() / "tokenizer", model_max_length=77)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)


def ours_command(model: str, data: Path, out: Path, steps: int, resolution: int, precision: str, cached: bool):
    sets = [f"model.pretrained={model}", f"data.path={data}", f"output_dir={out}", f"data.resolution={resolution}",
            "data.center_crop=true", "data.random_flip=false", f"optim.batch_size={SETTINGS['batch_size']}",
            "optim.grad_accum=1", f"optim.max_steps={steps}", f"optim.lr={SETTINGS['lr']}",
            "optim.lr_scheduler=constant", "optim.warmup_steps=0", f"lora.rank={SETTINGS['rank']}",
            f"lora.alpha={SETTINGS['rank']}", "loss.snr_gamma=null", f"mixed_precision={precision}",
            "gradient_checkpointing=false", f"cache_latents={str(cached).lower()}",
            f"cache_text_embeddings={str(cached).lower()}", "checkpoint_every_steps=100000",
            "validation.prompts=[]", f"seed={SETTINGS['seed']}"]
    return [sys.executable, "-m", "richfeedback.finetune.train", "--config", str(ROOT / "configs/finetune/sd15.yaml"),
            *[arg for s in sets for arg in ("--set", s)]]


def diffusers_command(script: str, model: str, data: Path, out: Path, steps: int, resolution: int, precision: str):
    return [sys.executable, script, f"--pretrained_model_name_or_path={model}", f"--train_data_dir={data}",
            "--caption_column=text", f"--resolution={resolution}", "--center_crop",
            f"--train_batch_size={SETTINGS['batch_size']}", "--gradient_accumulation_steps=1",
            f"--max_train_steps={steps}", f"--learning_rate={SETTINGS['lr']}", "--lr_scheduler=constant",
            "--lr_warmup_steps=0", f"--rank={SETTINGS['rank']}", f"--mixed_precision={precision}",
            "--checkpointing_steps=100000", f"--seed={SETTINGS['seed']}", "--dataloader_num_workers=0",
            f"--output_dir={out}"]


class RunFailed(RuntimeError):
    pass


def timed(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as f:
        # offline: every file is local, and a hub lookup must not stall a machine with no network
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        result = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RunFailed(f"{command[1]} {command[2] if command[1] == '-m' else ''} failed (exit "
                        f"{result.returncode}); its output is in {log}")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--diffusers-script", required=True, help="diffusers' train_text_to_image_lora.py")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default=None, help="an SD 1.5 folder, or 'embedded' (default: SD 1.5's "
                        "architecture with random weights, built in OUT/sd15-random)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--mixed-precision", default="bf16", choices=["no", "fp16", "bf16"])
    parser.add_argument("--steps", type=int, nargs=2, default=(10, 110), metavar=("N0", "N"))
    args = parser.parse_args(argv)
    if not Path(args.diffusers_script).is_file():
        parser.error(f"--diffusers-script {args.diffusers_script} is not a file: fetch "
                     "examples/text_to_image/train_text_to_image_lora.py from the diffusers repository")
    n0, n = args.steps
    if not 0 < n0 < n:
        parser.error(f"--steps N0 N needs 0 < N0 < N, got {n0} {n}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        model = str(out / "sd15-random")
        if not (Path(model) / "model_index.json").exists():
            build_sd15_random(Path(model))
    elif model == "embedded":
        from richfeedback.generation import embedded_generator_path

        model = str(embedded_generator_path())
    data = out / f"renders-{args.resolution}"
    if not (data / "metadata.jsonl").exists():
        from richfeedback.shapesworld.renders import write_render_folder

        write_render_folder(data, SETTINGS["images"], seed=0, split="all", size=args.resolution)
    systems = {
        "diffusers train_text_to_image_lora.py": lambda s, o: diffusers_command(
            args.diffusers_script, model, data, o, s, args.resolution, args.mixed_precision),
        "richfeedback (latents and text cached)": lambda s, o: ours_command(
            model, data, o, s, args.resolution, args.mixed_precision, cached=True),
        "richfeedback (encoding every step)": lambda s, o: ours_command(
            model, data, o, s, args.resolution, args.mixed_precision, cached=False),
    }
    try:
        warm_up = timed(next(iter(systems.values()))(n0, out / "warm-up"), out / "warm-up.log")
        print(f"warm-up (discarded): {warm_up:.1f} s", flush=True)
    except RunFailed as failure:
        print(f"warm-up failed: {failure}", flush=True)
    rows = []
    for i, (name, command) in enumerate(systems.items()):
        seconds = {}
        try:  # a system that fails is recorded as failed; the others still run and are written
            for steps in (n0, n):
                run_dir = out / f"system{i}-{steps}"
                seconds[steps] = timed(command(steps, run_dir), out / f"system{i}-{steps}.log")
                print(f"{name}: {steps} steps in {seconds[steps]:.1f} s", flush=True)
        except RunFailed as failure:
            print(f"{name}: {failure}", flush=True)
            rows.append({"system": name, "steps_per_s": None, "error": str(failure)})
            continue
        extra = seconds[n] - seconds[n0]
        row = {"system": name, "steps_per_s": (n - n0) / extra if extra > 0 else None,
               "in_loop_steps_per_s": in_loop_rate(out / f"system{i}-{n}", out / f"system{i}-{n}.log"),
               "wall_s_short": seconds[n0], "wall_s_long": seconds[n]}
        if extra <= 0:
            row["error"] = f"the {n}-step run was no slower than the {n0}-step one: noise swamps the steps; raise N"
        rows.append(row)
    reference = rows[0]
    for row in rows:
        if row["steps_per_s"] and reference["steps_per_s"]:
            row["ratio_to_diffusers"] = row["steps_per_s"] / reference["steps_per_s"]
        if row.get("in_loop_steps_per_s") and reference.get("in_loop_steps_per_s"):
            row["in_loop_ratio_to_diffusers"] = row["in_loop_steps_per_s"] / reference["in_loop_steps_per_s"]
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result = {"rows": rows, "device": device, "model": args.model or "SD 1.5 architecture, random weights",
              "resolution": args.resolution, "mixed_precision": args.mixed_precision, "steps": [n0, n],
              "settings": SETTINGS, "versions": versions()}
    path = out / "gpu_sd15_lora_steps.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        if row["steps_per_s"] is None:
            print(f"{row['system']:42s} failed: {row['error']}")
            continue
        in_loop, ratio = row["in_loop_steps_per_s"], row.get("ratio_to_diffusers")
        print(f"{row['system']:42s} {row['steps_per_s']:.3f} steps/s  "
              + (f"x{ratio:.2f}" if ratio else "(no diffusers rate)")
              + (f"  (in-loop {in_loop:.3f})" if in_loop else "  (in-loop rate not found)"))
    print(f"wrote {path}")
    return 1 if any(row["steps_per_s"] is None for row in rows) else 0


def in_loop_rate(run_dir: Path, log: Path):
    """A trainer's own steps/s: ours from train_summary.json, diffusers' from the last rate its tqdm bar printed."""
    import re

    summary = run_dir / "train_summary.json"
    if summary.exists():
        return json.loads(summary.read_text())["steps_per_second"]
    rates = re.findall(r"Steps:[^\r\n]*?(\d+(?:\.\d+)?)(it/s|s/it)", log.read_text(errors="replace"))
    if not rates:
        return None
    value, unit = rates[-1]
    return float(value) if unit == "it/s" else 1.0 / float(value)


def versions() -> dict:
    import importlib.metadata as metadata

    return {name: metadata.version(name) for name in ("torch", "diffusers", "transformers", "peft", "accelerate")}


if __name__ == "__main__":
    sys.exit(main())
