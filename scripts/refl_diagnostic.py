"""Diagnostic, not a feature: ReFL (ImageReward's reward feedback learning) on the embedded generator, with a
differentiable reward from `richfeedback.guidance.rewards` (default: the embedded RAHF's alignment score), to tell
whether the reward's *gradient* teaches the generator what filtering by the same reward does not (README,
Fine-tuning: it does not; the reward creeps up while the oracle's held-out accuracy falls below the base's).

    python scripts/refl_diagnostic.py --out runs/refl-rahf --steps 200
    python scripts/refl_diagnostic.py --out runs/refl-rahf-pre --steps 200 \
        --pretrain-data runs/finetune-embedded/data            # + the filtered images' denoising loss

Each step: 16 training-split ShapesWorld prompts (never the held-out ones), DDIM sampling at the pipeline's own
settings (25 steps, CFG 4) without gradients up to a step drawn uniformly from the last `--grad-steps` (6), then
one step with gradients: the CFG noise prediction, the scheduler's predicted x0, the VAE decode, the reward; the
loss is -reward (ImageReward's relu(2 - reward) for a reward in [0, 1]; Adam does not see its 1e-3 scale), plus
`--pretrain-weight` x the denoising loss of a batch of `--pretrain-data` images when given (the ReFL paper's
regulariser; here one AdamW step on the sum, where the paper alternates the two updates and ImageReward's code
scales the reward loss by 1e-3). The LoRA (rank 16 on the UNet attention and the text encoder, as
configs/finetune/embedded.yaml; both guidance branches go through the text encoder's LoRA) trains with AdamW at
1e-3; seeded. Where this differs from ImageReward's ReFL.py: the pipeline's own sampler (DDIM, 25 steps, CFG 4)
instead of DDPM at 40 steps without CFG, and a LoRA instead of the full UNet at 1e-5 with a frozen text encoder. Saves `OUT/step-N` every `--save-every` steps, which
`pipe.load_lora_weights(OUT/step-N)` reads; `OUT/log.jsonl` has the reward of every step.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from richfeedback.finetune.examples import load_examples
from richfeedback.finetune.objectives import denoising_loss
from richfeedback.finetune.train import (DEFAULTS, add_lora, draw_latents, encode_latent_distribution, encode_text,
                                         load_components, lora_layers, trained_modules)
from richfeedback.generation import EMBEDDED_DEFAULTS
from richfeedback.guidance.reward_guidance import decode_to_unit_range
from richfeedback.guidance.rewards import load_reward
from richfeedback.shapesworld.scene import sample_prompts
from richfeedback.training_utils import merge


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--reward", default="rahf:alignment", help="a reward spec, as `generate --guidance` takes")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--grad-steps", type=int, default=6, help="the grad step is one of the last N sampling steps")
    parser.add_argument("--pretrain-data", default=None, help="imagefolder whose denoising loss is added")
    parser.add_argument("--pretrain-weight", type=float, default=1.0)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    num_steps, cfg_scale = EMBEDDED_DEFAULTS["num_inference_steps"], EMBEDDED_DEFAULTS["guidance_scale"]
    if not 1 <= args.grad_steps <= num_steps:
        parser.error(f"--grad-steps must be in [1, {num_steps}], got {args.grad_steps}")
    from diffusers import DDIMScheduler, DDPMScheduler

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = merge(DEFAULTS, {"seed": args.seed, "lora": {"rank": 16, "alpha": 16, "train_text_encoder": True}})
    pipe = load_components("embedded", "cpu", torch.float32)
    params = add_lora(pipe, cfg)
    modules = trained_modules(pipe, cfg)
    reward = load_reward(args.reward).requires_grad_(False)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    sampler = DDIMScheduler.from_config(pipe.scheduler.config)
    sampler.set_timesteps(num_steps)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    if args.pretrain_data:
        pixels, captions, _ = load_examples(merge(DEFAULTS, {"data": {"path": args.pretrain_data}}),
                                            pipe.unet.config.sample_size * pipe.vae_scale_factor)
        latent_cache = encode_latent_distribution(pipe.vae, pixels)
    prompts_all = sample_prompts(args.steps * args.batch_size, seed=123 + args.seed, split="train")
    size, channels = pipe.unet.config.sample_size, pipe.unet.config.in_channels
    started = time.perf_counter()
    with open(out / "log.jsonl", "w") as log:  # a rerun into the same folder starts the log again
        for step in range(args.steps):
            prompts = prompts_all[step * args.batch_size:(step + 1) * args.batch_size]
            generator = torch.Generator().manual_seed(args.seed * 7_919 + step)
            latents = torch.randn(len(prompts), channels, size, size, generator=generator)
            grad_index = rng.randint(num_steps - args.grad_steps, num_steps - 1)
            # both branches of classifier-free guidance through the text encoder's LoRA, with gradients
            text = encode_text(pipe, prompts, "cpu")["encoder_hidden_states"]
            empty = encode_text(pipe, [""] * len(prompts), "cpu")["encoder_hidden_states"]
            with torch.no_grad():
                for t in sampler.timesteps[:grad_index]:
                    latents = sampler.step(cfg_noise(pipe, sampler, latents, t, empty.detach(), text.detach(),
                                                     cfg_scale), t, latents).prev_sample
            t = sampler.timesteps[grad_index]
            x0 = sampler.step(cfg_noise(pipe, sampler, latents, t, empty, text, cfg_scale), t,
                              latents).pred_original_sample
            rewards = reward.differentiable(prompts, decode_to_unit_range(pipe.vae, x0))
            loss = -rewards.mean()
            if args.pretrain_data:
                index = torch.randint(0, len(pixels), (len(prompts),), generator=generator)
                clean = draw_latents(pipe.vae, pixels, latent_cache, index, generator, "cpu")
                conditioning = encode_text(pipe, [captions[i] for i in index.tolist()], "cpu")
                loss = loss + args.pretrain_weight * denoising_loss(pipe.unet, noise_scheduler, clean, conditioning,
                                                                    generator, cfg)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            log.write(json.dumps({"step": step + 1, "reward": rewards.mean().item(), "grad_index": grad_index,
                                  "loss": loss.item()}) + "\n")
            log.flush()
            if step % 10 == 0:
                print(f"step {step + 1}: reward {rewards.mean().item():.3f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
            if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
                type(pipe).save_lora_weights(str(out / f"step-{step + 1}"), **lora_layers(pipe, modules),
                                             safe_serialization=True)
    print(f"done: LoRA checkpoints in {out}/step-N, rewards in {out / 'log.jsonl'}")
    return 0


def cfg_noise(pipe, sampler, latents, t, empty, text, scale):
    """The classifier-free-guided noise prediction at `t`, as the pipeline combines it."""
    model_input = sampler.scale_model_input(torch.cat([latents, latents]), t)
    uncond, cond = pipe.unet(model_input, t, torch.cat([empty, text]), return_dict=False)[0].chunk(2)
    return uncond + scale * (cond - uncond)


if __name__ == "__main__":
    sys.exit(main())
