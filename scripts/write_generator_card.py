"""Measure the embedded generator with the oracle and write its model card beside the weights.

    python scripts/write_generator_card.py [--model src/richfeedback/embedded/shapes-sd] [--work-dir runs/embedded-generator]

Writes MODEL_CARD.md, training.json (how it was trained, copied from the training run) and baseline_oracle.json (the
numbers of `benchmarks/bench_generator_baseline.py`, the protocol later stages are compared on).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from richfeedback.generation import EMBEDDED_DEFAULTS, load_pipeline  # noqa: E402
from richfeedback.shapesworld.evaluate import PROTOCOL_PROMPT_SEED, protocol_summary  # noqa: E402


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "src/richfeedback/embedded/shapes-sd"))
    parser.add_argument("--work-dir", default=str(ROOT / "runs/embedded-generator"))
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args(argv)
    model = Path(args.model)
    stats_path = Path(args.work_dir) / "train_stats.json"
    training_json = model / "training.json"
    if stats_path.exists():
        training = json.loads(stats_path.read_text())
        training_json.write_text(json.dumps(training, indent=2))
    elif training_json.exists():
        training = json.loads(training_json.read_text())
    else:
        sys.exit(f"no training record: neither {stats_path} nor {training_json} exists; train the model first")

    pipe = load_pipeline(str(model))
    start = time.perf_counter()
    result = protocol_summary(pipe, args.prompts, args.seeds, progress=True, **EMBEDDED_DEFAULTS)
    seconds = time.perf_counter() - start
    baseline = {"protocol": {"prompt_seed": PROTOCOL_PROMPT_SEED, "prompts_per_split": args.prompts,
                             "seeds_per_prompt": args.seeds, "sampling": EMBEDDED_DEFAULTS}, "results": result}
    (model / "baseline_oracle.json").write_text(json.dumps(baseline, indent=2))

    cfg, times = training["config"], training["times"]
    params = {name: count_params(getattr(pipe, name)) for name in ("unet", "vae", "text_encoder")}
    size_mb = sum(f.stat().st_size for f in model.rglob("*") if f.is_file()) / 2**20

    def row(split):
        s = result[split]
        w = s["word_alignment"]
        return (f"| {split} | {s['num_images']} | {s['prompt_accuracy']:.3f} | {w['colour']:.3f} | {w['shape']:.3f} | "
                f"{w['position']:.3f} | {w['count']:.3f} | {w['size']:.3f} | {s['artifact_rate']:.3f} | "
                f"{s['extra_object_rate']:.3f} | {s['diversity']['mean_std']:.4f} |")

    card = f"""# Embedded ShapesWorld generator (`shapes-sd`)

A tiny Stable-Diffusion-style pipeline (diffusers `StableDiffusionPipeline`: `AutoencoderKL`, `UNet2DConditionModel`,
`CLIPTextModel`, CLIP tokenizer, DDIM scheduler) trained from scratch on clean ShapesWorld renders. It is the default
model of `richfeedback generate` and the model every later stage (reward-filtered LoRA, inpainting, guidance) is
measured on. It was trained for a fixed budget and deliberately **not polished**: its mistakes are what those stages
must fix.

```python
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained("src/richfeedback/embedded/shapes-sd")  # offline
images = pipe(["a red circle on the left"], height=64, width=64, num_inference_steps=25, guidance_scale=4.0).images
```

## Training (`scripts/train_embedded_generator.py --config configs/generator/shapes.yaml`, seed {cfg['seed']})

- Data: {cfg['num_images']:,} clean {cfg['resolution']}x{cfg['resolution']} renders of prompts sampled from the
  ShapesWorld grammar, **training prompts only** (the fixed 20% held-out part of the prompt space is never seen).
- VAE: {params['vae']:,} parameters, channels {cfg['vae']['block_out_channels']}, 4x16x16 latents (scale factor 4), no
  mid-block attention; L1 + MSE + {cfg['vae']['kl_weight']} KL; {cfg['vae']['steps']} steps of {cfg['vae']['batch_size']}
  random {cfg['vae']['crop']}x{cfg['vae']['crop']} crops, AdamW lr {cfg['vae']['lr']} with cosine decay.
  Latent scaling factor {training['latent_scaling_factor']:.4f} (1 / latent std).
- Text encoder: CLIP text transformer, {params['text_encoder']:,} parameters (hidden {cfg['text_encoder']['hidden_size']},
  {cfg['text_encoder']['num_hidden_layers']} layers, max length {cfg['text_encoder']['max_length']}), trained jointly with the UNet.
  The tokenizer is CLIP's BPE built offline from open_clip's vocabulary file (ids equal open_clip's); embedding rows of
  tokens no training prompt uses are zero.
- UNet: {params['unet']:,} parameters, channels {cfg['unet']['block_out_channels']}, cross-attention at 8x8 and 4x4;
  {cfg['unet']['prediction_type']}, {cfg['unet']['beta_schedule']} schedule (1000 steps); {cfg['unet']['steps']} steps of batch
  {cfg['unet']['batch_size']}, AdamW lr {cfg['unet']['lr']} ({cfg['unet']['warmup_steps']} warm-up, cosine to 0), grad clip 1,
  {int(cfg['prompt_dropout'] * 100)}% empty prompts for classifier-free guidance, EMA {cfg['unet']['ema_decay']} (the EMA weights are shipped).
- Time on {training.get('threads', 2)} CPU threads (torch {training['torch']}): data {times.get('data_s', 0) / 60:.1f} min,
  VAE {times.get('vae_s', 0) / 60:.1f} min, latents + UNet {times.get('unet_s', 0) / 60:.1f} min.
- Stored as fp16 safetensors for UNet and VAE (loaded as fp32 by diffusers), fp32 for the text encoder; {size_mb:.1f} MB
  on disk, most of it the (mostly zero) token-embedding table and the tokenizer files.

## Oracle numbers (the baseline)

Sampling: DDIM {EMBEDDED_DEFAULTS['num_inference_steps']} steps, guidance {EMBEDDED_DEFAULTS['guidance_scale']},
64x64 (the folder's `sampling_defaults.json`, which richfeedback's commands use when not told otherwise).
{args.prompts} prompts per split from `sample_prompts(seed={PROTOCOL_PROMPT_SEED})`, seeds 0-{args.seeds - 1} per
prompt (`benchmarks/bench_generator_baseline.py` measures the same). Word columns: the share of words of that kind the
oracle judges satisfied; prompt accuracy: every word satisfied and no extra object. Diversity: mean standard deviation
of the main object's centre and size across the seeds of a prompt.

| prompts | images | full prompt | colour | shape | position | count | size | artifact rate | extra objects | diversity |
|---|---|---|---|---|---|---|---|---|---|---|
{row('train')}
{row('heldout')}

Measured in {seconds / 60:.1f} min by `python scripts/write_generator_card.py`; raw numbers in `baseline_oracle.json`.

## Limits

64x64 only; the ShapesWorld vocabulary only (other words map to untrained, zero embeddings); not a general
text-to-image model. Trained on synthetic data generated by this repository; no third-party data or weights.
"""
    (model / "MODEL_CARD.md").write_text(card)
    print(card)
    print(f"wrote {model / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
