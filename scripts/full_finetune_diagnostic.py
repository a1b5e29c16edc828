"""Diagnostic, not a feature: continue the *full* training of the embedded generator (every UNet weight, optionally
the text encoder's) on an imagefolder dataset, to tell "the adapter learns too slowly" from "the data teaches too
little" (README, Fine-tuning). The product trains LoRA adapters (`richfeedback.finetune.train`); this loop is the
comparison it was measured against.

    python scripts/full_finetune_diagnostic.py --data runs/renders4k --out runs/fullft-renders --text-encoder
    python scripts/full_finetune_diagnostic.py --data runs/finetune-embedded-oracle/data --out runs/fullft-pool \
        --text-encoder

The data is any `metadata.jsonl` + PNG folder (`richfeedback pool filter`, `richfeedback shapesworld renders`).
Batch 32, AdamW (weight decay 1e-2), gradient clipping at 1, 10% of captions dropped to the empty prompt, latents
from the VAE's mean, the loss target of the scheduler's prediction type; seeded. Saves a full diffusers pipeline
every 1,000 steps and at the end (`OUT/step-N`, with the base's sampling defaults), which `richfeedback generate
--model OUT/step-N` and `load_pipeline` read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from richfeedback.errors import UsageError
from richfeedback.finetune.examples import read_imagefolder
from richfeedback.finetune.train import encode_latent_distribution, scale_latents
from richfeedback.generation import load_pipeline, pipeline_defaults, save_sampling_defaults


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="imagefolder dataset (metadata.jsonl with file_name, text)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--text-encoder", action="store_true", help="train the text encoder too")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    out = Path(args.out)
    try:
        data = read_imagefolder(Path(args.data), "image", "text")  # says what is missing and which command makes it
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pipe = load_pipeline(args.model)
    sampling = pipeline_defaults(args.model)
    pixels = np.stack([np.asarray(image.convert("RGB")) for image in data["image"]])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    latents = scale_latents(pipe.vae, encode_latent_distribution(pipe.vae, x)[0])  # the distributions' means
    tokenizer = pipe.tokenizer
    ids = tokenizer([str(t) for t in data["text"]], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids[0]

    unet, text_encoder = pipe.unet, pipe.text_encoder
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if args.text_encoder else [])
    text_encoder.requires_grad_(args.text_encoder)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    unet.train()
    text_encoder.train(args.text_encoder)
    started = time.time()
    for step in range(1, args.steps + 1):
        index = torch.from_numpy(rng.integers(len(latents), size=32))
        x0, captions = latents[index], ids[index].clone()
        captions[torch.from_numpy(rng.random(32) < 0.1)] = empty
        noise = torch.randn(x0.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (32,), generator=generator)
        with torch.set_grad_enabled(args.text_encoder):
            hidden = text_encoder(captions).last_hidden_state
        prediction = unet(scheduler.add_noise(x0, noise, timesteps), timesteps, hidden).sample
        target = (scheduler.get_velocity(x0, noise, timesteps)
                  if scheduler.config.prediction_type == "v_prediction" else noise)
        loss = F.mse_loss(prediction, target)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} ({time.time() - started:.0f} s)", flush=True)
        if step % 1000 == 0 or step == args.steps:
            unet.eval()
            text_encoder.eval()
            pipe.save_pretrained(out / f"step-{step}")
            save_sampling_defaults(out / f"step-{step}", sampling)  # samples as its base did
            print(f"saved {out / f'step-{step}'}", flush=True)
            unet.train()
            text_encoder.train(args.text_encoder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
