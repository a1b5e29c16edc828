"""Distil the embedded generator's VAE decoder into a tiny one (diffusers `AutoencoderTiny`, the TAESD design) for the
cheap path of reward guidance, where the decoder's backward pass is most of the cost of a guided step.

    python scripts/train_tiny_decoder.py --out src/richfeedback/embedded/shapes-sd-tiny-decoder

What it learns from (training prompts only, seeded): the latents reward guidance decodes, i.e. the scheduler's
predicted x0 at every step of sampling runs of the embedded pipeline, plus the VAE latents of ShapesWorld
rich-feedback images (clean, with artifacts, misaligned). Targets are the VAE decoder's own outputs (MSE in [-1, 1]);
the tiny decoder takes the pipeline's scaled latents directly (scaling_factor 1.0), as TAESD does for Stable Diffusion.
The encoder half is not trained (guidance never encodes); it is kept so the folder loads with
`AutoencoderTiny.from_pretrained`. Evaluated on latents from held-out prompts: PSNR against the VAE's decode, and the
cosine between the reward gradients with respect to the latents through each decoder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from richfeedback.generation import EMBEDDED_DEFAULTS, load_pipeline  # noqa: E402
from richfeedback.guidance.reward_guidance import decode_to_unit_range  # noqa: E402
from richfeedback.guidance.schedulers import recording_predicted_x0  # noqa: E402
from richfeedback.shapesworld.scene import sample_prompts  # noqa: E402

TINY_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, act_fn="relu", upsample_fn="nearest",
                   encoder_block_out_channels=(16, 16, 16), num_encoder_blocks=(1, 1, 1),
                   decoder_block_out_channels=(32, 32, 32), num_decoder_blocks=(2, 2, 1),
                   upsampling_scaling_factor=2, scaling_factor=1.0, shift_factor=0.0)


def trajectory_latents(pipe, prompts: list[str], seed: int) -> torch.Tensor:
    """The predicted x0 (scaled latents) at every sampling step of the embedded pipeline, one run per prompt."""
    with recording_predicted_x0(pipe) as recorded:
        for start in tqdm(range(0, len(prompts), 16), desc="trajectories"):
            batch = prompts[start : start + 16]
            generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(batch))]
            pipe(batch, generator=generators, output_type="latent", **EMBEDDED_DEFAULTS)
    return torch.cat(recorded)


def image_latents(pipe, n: int, split: str, offset: int) -> torch.Tensor:
    """VAE latents (scaled, the posterior mean) of ShapesWorld rich-feedback images: clean, with artifacts, misaligned."""
    from richfeedback.shapesworld.dataset import make_example

    vae = pipe.vae
    out = []
    for start in tqdm(range(0, n, 64), desc=f"encode {split}"):
        pixels = torch.stack([torch.from_numpy(np.asarray(make_example(split, offset + i)["image"].convert("RGB")))
                              for i in range(start, min(n, start + 64))]).permute(0, 3, 1, 2).float() / 127.5 - 1
        out.append(vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out)


@torch.no_grad()
def teacher(pipe, latents: torch.Tensor) -> torch.Tensor:
    return torch.cat([decode_to_unit_range(pipe.vae, z) * 2 - 1 for z in latents.split(128)])


def gradient_cosine(pipe, tiny, reward, prompts: list[str], latents: torch.Tensor) -> float:
    """Mean cosine between d reward / d latents through the VAE and through the tiny decoder."""
    cos = []
    for decode in (lambda z: decode_to_unit_range(pipe.vae, z), lambda z: (tiny.decode(z).sample / 2 + 0.5).clamp(0, 1)):
        z = latents.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(reward.differentiable(prompts, decode(z)).sum(), z)
        cos.append(g.flatten(1))
    return float(F.cosine_similarity(cos[0], cos[1]).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="src/richfeedback/embedded/shapes-sd-tiny-decoder")
    parser.add_argument("--work-dir", default="runs/tiny-decoder")
    parser.add_argument("--prompts", type=int, default=192, help="sampling runs (x 25 steps of x0 latents)")
    parser.add_argument("--images", type=int, default=3000, help="rich-feedback images encoded by the VAE")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from diffusers import AutoencoderTiny

    from richfeedback.reward_models import load_reward_model

    torch.manual_seed(args.seed)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(None)
    pipe.set_progress_bar_config(disable=True)
    data_path = work / "latents.pt"
    if data_path.exists():
        data = torch.load(data_path, weights_only=True)
    else:
        train_prompts = sample_prompts(args.prompts, seed=args.seed + 11, split="train")
        test_prompts = sample_prompts(16, seed=args.seed + 12, split="heldout")
        with torch.no_grad():
            train = torch.cat([trajectory_latents(pipe, train_prompts, args.seed),
                               image_latents(pipe, args.images, "train", 0)])
            test = torch.cat([trajectory_latents(pipe, test_prompts, args.seed + 10_000),
                              image_latents(pipe, 256, "test", 0)])
            data = {"train": train, "train_target": teacher(pipe, train), "test": test,
                    "test_target": teacher(pipe, test), "test_prompts": torch.tensor([0])}
        (work / "test_prompts.json").write_text(json.dumps(test_prompts))
        torch.save(data, work / "latents.tmp.pt")
        os.replace(work / "latents.tmp.pt", data_path)
    print(f"{len(data['train'])} training latents, {len(data['test'])} test latents", flush=True)

    tiny = AutoencoderTiny(**TINY_CONFIG)
    decoder = tiny.decoder
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    for step in (bar := tqdm(range(args.steps), desc="distil")):
        index = torch.randint(0, len(data["train"]), (args.batch_size,), generator=generator)
        loss = F.mse_loss(decoder(data["train"][index]), data["train_target"][index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.5f}")
    seconds = time.perf_counter() - started

    tiny.eval()
    with torch.no_grad():
        pred = torch.cat([tiny.decode(z).sample for z in data["test"].split(128)])
    mse = F.mse_loss(pred.clamp(-1, 1), data["test_target"].clamp(-1, 1), reduction="none").flatten(1).mean(1)
    psnr = float((10 * torch.log10(4 / mse)).mean())
    reward = load_reward_model("rahf:aesthetics")
    test_prompts = json.loads((work / "test_prompts.json").read_text())
    n_traj = len(test_prompts) * EMBEDDED_DEFAULTS["num_inference_steps"]
    # trajectory latents are stored step-major per batch: latent k of a batch belongs to prompt k % batch
    traj_prompts = [test_prompts[i % len(test_prompts)] for i in range(n_traj)]
    pick = torch.arange(0, n_traj, 7)
    cosine = gradient_cosine(pipe, tiny, reward, [traj_prompts[i] for i in pick], data["test"][pick])
    metrics = {"test_psnr_db": round(psnr, 2), "reward_gradient_cosine": round(cosine, 3),
               "decoder_parameters": sum(p.numel() for p in decoder.parameters()),
               "vae_decoder_parameters": sum(p.numel() for p in pipe.vae.decoder.parameters()) +
               sum(p.numel() for p in pipe.vae.post_quant_conv.parameters()),
               "train_seconds": round(seconds, 1), "train_latents": len(data["train"]), "steps": args.steps,
               "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
    print(json.dumps(metrics), flush=True)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tiny.save_pretrained(tmp)
    (tmp / "training.json").write_text(json.dumps(metrics, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
