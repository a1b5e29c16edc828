"""Train the embedded ShapesWorld generator: a tiny Stable-Diffusion-style diffusers pipeline, from scratch, on CPU.

    python scripts/train_embedded_generator.py --config configs/generator/shapes.yaml

Stages (each writes into --work-dir and is skipped when its output exists, so a killed run resumes):
  1. data   clean 64x64 renders of training prompts (held-out prompts excluded), seeded
  2. vae    AutoencoderKL, L1 + MSE + KL, on random crops
  3. unet   UNet2DConditionModel + CLIPTextModel trained jointly on cached VAE latents, v-prediction, EMA
  4. export StableDiffusionPipeline.save_pretrained (fp16 safetensors) into --out
The model card beside the weights is written by `scripts/write_generator_card.py` from the baseline benchmark.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from richfeedback.generation import EMBEDDED_DEFAULTS, save_sampling_defaults  # noqa: E402
from richfeedback.shapesworld.render import render  # noqa: E402
from richfeedback.shapesworld.scene import is_heldout_prompt, sample_scene  # noqa: E402
from richfeedback.tokenizers import build_clip_tokenizer  # noqa: E402
from richfeedback.training_utils import start_script_run, write_train_stats  # noqa: E402


def make_data(cfg: dict, work: Path) -> tuple[np.ndarray, list[str]]:
    path = work / "data.npz"
    if path.exists():
        data = np.load(path)
        return data["images"], json.loads(str(data["prompts"]))
    rng = np.random.default_rng(cfg["seed"])
    images, prompts = [], []
    with tqdm(total=cfg["num_images"], desc="render") as bar:
        while len(images) < cfg["num_images"]:
            scene = sample_scene(rng)
            if is_heldout_prompt(scene.prompt.text):
                continue
            images.append(render(scene, cfg["resolution"]))
            prompts.append(scene.prompt.text)
            bar.update(1)
    images = np.stack(images)
    tmp = work / "data.tmp.npz"
    np.savez(tmp, images=images, prompts=json.dumps(prompts))
    os.replace(tmp, path)
    return images, prompts


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_vae(cfg: dict, images: np.ndarray, work: Path, accelerator: Accelerator) -> AutoencoderKL:
    out = work / "vae"
    if (out / "config.json").exists():
        return AutoencoderKL.from_pretrained(out)
    c = cfg["vae"]
    n_blocks = len(c["block_out_channels"])
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=c["latent_channels"],
        block_out_channels=c["block_out_channels"], layers_per_block=c["layers_per_block"],
        down_block_types=["DownEncoderBlock2D"] * n_blocks, up_block_types=["UpDecoderBlock2D"] * n_blocks,
        norm_num_groups=c["norm_num_groups"], mid_block_add_attention=False, sample_size=cfg["resolution"],
    )
    opt = torch.optim.AdamW(vae.parameters(), lr=c["lr"], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / c["steps"], 1.0))))
    rng = np.random.default_rng(cfg["seed"] + 1)
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    vae.train()
    crop, res = c["crop"], cfg["resolution"]
    for step in tqdm(range(c["steps"]), desc="vae"):
        idx = rng.integers(len(images), size=c["batch_size"])
        y0, x0 = rng.integers(0, res - crop + 1, size=2)
        x = to_tensor(images[idx, y0 : y0 + crop, x0 : x0 + crop])
        posterior = vae.encode(x).latent_dist
        z = posterior.sample(generator=gen)
        recon = vae.decode(z).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        kl = posterior.kl().mean() / x[0].numel()
        loss = rec + c["kl_weight"] * kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0:
            mse = F.mse_loss(recon.clamp(-1, 1), x).item() / 4  # in [0, 1] pixel units
            accelerator.log({"vae/loss": loss.item(), "vae/psnr": 10 * math.log10(1 / max(mse, 1e-10))}, step=step)
    vae.eval()
    vae.save_pretrained(out)
    return vae


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: np.ndarray, work: Path) -> torch.Tensor:
    path = work / "latents.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    chunks = []
    for i in tqdm(range(0, len(images), 256), desc="encode latents"):
        chunks.append(vae.encode(to_tensor(images[i : i + 256])).latent_dist.mean)
    latents = torch.cat(chunks)
    torch.save(latents, path)
    return latents


def train_unet(cfg: dict, prompts: list[str], latents: torch.Tensor, tokenizer, work: Path,
               accelerator: Accelerator) -> tuple[UNet2DConditionModel, CLIPTextModel, float]:
    out = work / "unet"
    scaling = float(1.0 / latents.std())
    if (out / "unet" / "config.json").exists():
        return (UNet2DConditionModel.from_pretrained(out / "unet"), CLIPTextModel.from_pretrained(out / "text_encoder"),
                scaling)
    c, t = cfg["unet"], cfg["text_encoder"]
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["num_hidden_layers"], num_attention_heads=t["num_attention_heads"],
        max_position_embeddings=t["max_length"], projection_dim=t["hidden_size"],
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    n = len(c["block_out_channels"])
    unet = UNet2DConditionModel(
        sample_size=cfg["resolution"] // 2 ** (len(cfg["vae"]["block_out_channels"]) - 1),
        in_channels=cfg["vae"]["latent_channels"], out_channels=cfg["vae"]["latent_channels"],
        block_out_channels=c["block_out_channels"], layers_per_block=c["layers_per_block"],
        down_block_types=["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1),
        up_block_types=["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"],
        cross_attention_dim=t["hidden_size"], attention_head_dim=c["attention_head_dim"],
        norm_num_groups=c["norm_num_groups"],
    )
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=c["beta_schedule"],
                                    prediction_type=c["prediction_type"], clip_sample=False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=c["lr"], weight_decay=1e-2)

    def lr_lambda(step):
        if step < c["warmup_steps"]:
            return (step + 1) / c["warmup_steps"]
        return 0.5 * (1 + math.cos(math.pi * (step - c["warmup_steps"]) / max(1, c["steps"] - c["warmup_steps"])))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    ema = EMAModel(params, decay=c["ema_decay"])
    ids = tokenizer(prompts, padding="max_length", max_length=t["max_length"], truncation=True,
                    return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=t["max_length"], return_tensors="pt").input_ids[0]
    rng = np.random.default_rng(cfg["seed"] + 2)
    gen = torch.Generator().manual_seed(cfg["seed"] + 2)
    unet.train()
    text_encoder.train()
    for step in tqdm(range(c["steps"]), desc="unet"):
        idx = torch.from_numpy(rng.integers(len(latents), size=c["batch_size"]))
        x0 = latents[idx] * scaling
        batch_ids = ids[idx].clone()
        drop = torch.from_numpy(rng.random(len(idx)) < cfg["prompt_dropout"])
        batch_ids[drop] = empty
        noise = torch.randn(x0.shape, generator=gen)
        timesteps = torch.randint(0, 1000, (len(idx),), generator=gen)
        noisy = noise_scheduler.add_noise(x0, noise, timesteps)
        target = noise_scheduler.get_velocity(x0, noise, timesteps) if c["prediction_type"] == "v_prediction" else noise
        hidden = text_encoder(batch_ids).last_hidden_state
        pred = unet(noisy, timesteps, hidden).sample
        loss = F.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.step(params)
        if step % 20 == 0:
            accelerator.log({"unet/loss": loss.item(), "unet/lr": sched.get_last_lr()[0]}, step=step)
    ema.copy_to(params)
    unet.eval()
    text_encoder.eval()
    tmp = work / "unet.tmp"
    unet.save_pretrained(tmp / "unet")
    text_encoder.save_pretrained(tmp / "text_encoder")
    os.replace(tmp, out)
    return unet, text_encoder, scaling


def export(cfg, vae, unet, text_encoder, tokenizer, scaling, prompts, out: Path) -> None:
    # Rows of the token embedding that no training prompt used were never trained: zero them so the shipped file
    # compresses to almost nothing in git (the table has CLIP's full 49,408 rows so that ids match open_clip).
    used = torch.zeros(len(tokenizer), dtype=torch.bool)
    for p in prompts[:5000] + [""]:
        used[tokenizer(p).input_ids] = True
    with torch.no_grad():
        text_encoder.get_input_embeddings().weight[~used] = 0
    vae.register_to_config(scaling_factor=scaling)
    c = cfg["unet"]
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule=c["beta_schedule"],
                              prediction_type=c["prediction_type"], clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1, timestep_spacing="trailing")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    # UNet and VAE are stored in fp16 (diffusers upcasts them to the pipeline's fp32 on load); the text encoder stays
    # fp32 because transformers 5 would otherwise load it as fp16 next to fp32 components.
    pipe.unet.to(torch.float16)
    pipe.vae.to(torch.float16)
    tmp = out.with_name(out.name + ".tmp")
    pipe.save_pretrained(tmp, safe_serialization=True)
    save_sampling_defaults(tmp, EMBEDDED_DEFAULTS)  # what the generator was trained to sample with
    if out.exists():
        import shutil
        shutil.rmtree(out)
    os.replace(tmp, out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/generator/shapes.yaml")
    parser.add_argument("--work-dir", default="runs/embedded-generator")
    parser.add_argument("--out", default="src/richfeedback/embedded/shapes-sd")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    work = Path(args.work_dir)
    accelerator = start_script_run(work, "embedded-generator", cfg, args.threads)
    times = {}
    t0 = time.time()
    images, prompts = make_data(cfg, work)
    times["data_s"] = time.time() - t0
    tokenizer = build_clip_tokenizer(work / "tokenizer", model_max_length=cfg["text_encoder"]["max_length"])
    t0 = time.time()
    vae = train_vae(cfg, images, work, accelerator)
    times["vae_s"] = time.time() - t0
    t0 = time.time()
    latents = encode_latents(vae, images, work)
    unet, text_encoder, scaling = train_unet(cfg, prompts, latents, tokenizer, work, accelerator)
    times["unet_s"] = time.time() - t0
    export(cfg, vae, unet, text_encoder, tokenizer, scaling, prompts, Path(args.out))
    accelerator.end_training()
    stats_path = write_train_stats(work, {"config": cfg, "latent_scaling_factor": scaling, "times": times,
                                          "torch": torch.__version__, "threads": args.threads})
    print(f"wrote the pipeline to {args.out}; training stats in {stats_path}")


if __name__ == "__main__":
    main()
