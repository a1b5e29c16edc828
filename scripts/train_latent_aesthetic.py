"""Train the embedded noise-aware latent aesthetic model (`richfeedback.reward_models.latent_aesthetic`): the reward
that classifier guidance climbs on the embedded generator.

    python scripts/train_latent_aesthetic.py            # writes src/richfeedback/embedded/shapes-latent-aesthetic

Data (seeded; nothing from the guidance benchmark's prompts, `PROTOCOL_PROMPT_SEED`):
  * ShapesWorld rich-feedback images (`dataset.make_example`: clean renders, injected artifacts, misalignments) with
    their raters' aesthetics score (mean Likert of three simulated raters, in [0, 1]);
  * the embedded generator's own images of training prompts, labelled by the same raters through the oracle
    (`shapesworld.generated_feedback.label_generated_image`), repeated `--generated-repeats` times: guidance sees
    the generator's latents, so the model must know what they look like.
Every image is encoded once by the generator's VAE (posterior mean x scaling factor: the pipelines' latents) and
cached in the work folder, so a rerun or a crash after that point does not redo it.

Training: at each step a random timestep t of the generator's noise schedule per example, x_t = sqrt(abar_t) z0 +
sqrt(1 - abar_t) eps, MSE between the model's score and the raters' score; AdamW, warm-up and cosine decay. Dev: PLCC
with the raters' score at t = 0, 250, 500, 750 on rich-feedback dev images and on generated images of held-out
prompts. Progress by tqdm, losses and dev metrics to tensorboard (`<work-dir>/logs`). The model is written atomically
with `training.json` (settings, data sizes, dev metrics, times) beside it; the model card (`MODEL_CARD.md`) is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from richfeedback.eval.metrics import plcc  # noqa: E402
from richfeedback.generation import EMBEDDED_DEFAULTS, generate_images, load_pipeline  # noqa: E402
from richfeedback.reward_models.latent_aesthetic import (EMBEDDED_LATENT_AESTHETIC, LatentAestheticModel,  # noqa: E402
                                                         add_noise, schedule_of, vae_latents)
from richfeedback.shapesworld.dataset import make_example  # noqa: E402
from richfeedback.shapesworld.generated_feedback import label_generated_image  # noqa: E402
from richfeedback.shapesworld.scene import sample_prompts  # noqa: E402
from richfeedback.training_utils import lr_factor, save_atomically, start_script_run, write_train_stats  # noqa: E402

EVAL_TIMESTEPS = (0, 250, 500, 750)


@torch.no_grad()
def encode(vae, images: list[np.ndarray], batch_size: int = 256) -> torch.Tensor:
    out = []
    for start in range(0, len(images), batch_size):
        pixels = torch.from_numpy(np.stack(images[start : start + batch_size])).permute(0, 3, 1, 2).float() / 127.5 - 1
        out.append(vae_latents(vae, pixels))
    return torch.cat(out)


def rich_feedback_set(vae, split: str, n: int) -> dict:
    images, scores = [], []
    for i in tqdm(range(n), desc=f"rich feedback {split}"):
        row = make_example(split, i)
        images.append(np.asarray(row["image"].convert("RGB")))
        scores.append(row["aesthetics_score"])
    return {"latents": encode(vae, images), "scores": torch.tensor(scores, dtype=torch.float32)}


def generated_set(pipe, split: str, prompts: list[str], per_prompt: int, seed: int) -> dict:
    """The generator's images of `prompts` (seed `seed + i * per_prompt + k`), labelled by the simulated raters."""
    all_prompts = [p for p in prompts for _ in range(per_prompt)]
    seeds = [seed + i for i in range(len(all_prompts))]
    images = []
    for start in tqdm(range(0, len(all_prompts), 16), desc=f"generate {split}"):
        images += generate_images(pipe, all_prompts[start : start + 16], seeds[start : start + 16], **EMBEDDED_DEFAULTS)
    scores = [label_generated_image(p, im, split, s)["aesthetics_score"] for p, im, s in zip(all_prompts, images, seeds)]
    return {"latents": encode(pipe.vae, images), "scores": torch.tensor(scores, dtype=torch.float32)}


def make_data(pipe, args) -> dict:
    """Every latent and score the run needs, cached in `<work-dir>/data.pt` (written atomically)."""
    path = Path(args.work_dir) / "data.pt"
    if path.exists():
        print(f"reusing the encoded data in {path}", flush=True)
        return torch.load(path, weights_only=True)
    train_prompts = sample_prompts(args.generated_prompts, seed=args.seed + 31, split="train")
    dev_prompts = sample_prompts(args.generated_dev_prompts, seed=args.seed + 32, split="heldout")
    data = {
        "rich_feedback_train": rich_feedback_set(pipe.vae, "train", args.rich_feedback_images),
        "rich_feedback_dev": rich_feedback_set(pipe.vae, "dev", args.dev_images),
        "generated_train": generated_set(pipe, "train", train_prompts, args.per_prompt, args.seed * 100_000),
        "generated_dev": generated_set(pipe, "dev", dev_prompts, args.per_prompt, args.seed * 100_000 + 50_000),
    }
    tmp = path.with_name("data.tmp.pt")
    torch.save(data, tmp)
    os.replace(tmp, path)
    return data


@torch.no_grad()
def evaluate(model, data: dict, alphas_cumprod: torch.Tensor, seed: int) -> dict:
    """PLCC of the model's score with the raters' at each of `EVAL_TIMESTEPS`, on both dev sets (fixed noise)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name in ("rich_feedback_dev", "generated_dev"):
        z, y = data[name]["latents"], data[name]["scores"]
        for t in EVAL_TIMESTEPS:
            timesteps = torch.full((len(z),), t)
            noisy = add_noise(z, torch.randn(z.shape, generator=generator), timesteps, alphas_cumprod)
            out[f"{name}/plcc@{t}"] = round(float(plcc(model(noisy, timesteps).numpy(), y.numpy())), 4)
    model.train()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(EMBEDDED_LATENT_AESTHETIC))
    parser.add_argument("--work-dir", default="runs/latent-aesthetic")
    parser.add_argument("--rich-feedback-images", type=int, default=20_000)
    parser.add_argument("--dev-images", type=int, default=500)
    parser.add_argument("--generated-prompts", type=int, default=600, help="training prompts the generator draws")
    parser.add_argument("--generated-dev-prompts", type=int, default=64, help="held-out prompts, for the dev metric")
    parser.add_argument("--per-prompt", type=int, default=4, help="generated images per prompt")
    parser.add_argument("--generated-repeats", type=int, default=4,
                        help="how many times each generated image is in an epoch (there are fewer of them)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine is shared: keep it low)")
    args = parser.parse_args(argv)

    work = Path(args.work_dir)
    accelerator = start_script_run(work, "latent-aesthetic", vars(args), args.threads)
    pipe = load_pipeline(None)
    pipe.set_progress_bar_config(disable=True)
    started = time.perf_counter()
    data = make_data(pipe, args)
    data_seconds = time.perf_counter() - started

    latents = torch.cat([data["rich_feedback_train"]["latents"]]
                        + [data["generated_train"]["latents"]] * args.generated_repeats)
    scores = torch.cat([data["rich_feedback_train"]["scores"]] + [data["generated_train"]["scores"]] * args.generated_repeats)
    alphas_cumprod = pipe.scheduler.alphas_cumprod
    num_train_timesteps = pipe.scheduler.config.num_train_timesteps
    model = LatentAestheticModel(latent_channels=pipe.vae.config.latent_channels,
                                 sample_size=pipe.unet.config.sample_size, vae="embedded",
                                 schedule=schedule_of(pipe.scheduler.config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = len(latents) // args.batch_size
    total = args.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, args.warmup_steps, 0.0))
    generator = torch.Generator().manual_seed(args.seed)
    step, history = 0, []
    started = time.perf_counter()
    with tqdm(total=total, desc="train latent aesthetic") as bar:
        for epoch in range(args.epochs):
            order = torch.randperm(len(latents), generator=generator)
            for start in range(0, steps_per_epoch * args.batch_size, args.batch_size):
                index = order[start : start + args.batch_size]
                timesteps = torch.randint(0, num_train_timesteps, (len(index),), generator=generator)
                noise = torch.randn(latents[index].shape, generator=generator)
                noisy = add_noise(latents[index], noise, timesteps, alphas_cumprod)
                loss = F.mse_loss(model(noisy, timesteps), scores[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                bar.update()
                if step % 25 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                    accelerator.log({"train/loss": loss.item(), "train/lr": schedule.get_last_lr()[0]}, step=step)
            metrics = evaluate(model, data, alphas_cumprod, seed=args.seed)
            accelerator.log({f"dev/{k}": v for k, v in metrics.items()}, step=step)
            history.append({"epoch": epoch, "step": step, **metrics})
            tqdm.write(json.dumps(history[-1]))
    train_seconds = time.perf_counter() - started
    accelerator.end_training()

    record = {"settings": vars(args), "parameters": sum(p.numel() for p in model.parameters()),
              "data": {name: len(part["scores"]) for name, part in data.items()},
              "dev": history[-1], "history": history,
              "times": {"data_s": round(data_seconds, 1), "train_s": round(train_seconds, 1)}}
    write_train_stats(work, record)
    out = Path(args.out)
    card = out / "MODEL_CARD.md"  # kept: its guidance numbers come from benchmarks/bench_guidance.py
    kept_card = card.read_text() if card.exists() else None

    def write(tmp: Path) -> None:
        model.eval().save_pretrained(tmp)  # config.json + diffusion_pytorch_model.safetensors
        (tmp / "training.json").write_text(json.dumps(record, indent=1) + "\n")
        if kept_card is not None:
            (tmp / card.name).write_text(kept_card)

    save_atomically(out, write)
    print(f"wrote {out} (dev: {json.dumps(history[-1])}); logs in {work / 'logs'}", flush=True)


if __name__ == "__main__":
    main()
