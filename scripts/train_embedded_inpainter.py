"""Train the embedded ShapesWorld inpainting model: the embedded generator made into a 9-channel inpainting checkpoint.

    python scripts/train_embedded_inpainter.py --config configs/generator/shapes-inpainting.yaml

The recipe of Stable Diffusion's inpainting checkpoints (runwayml/stable-diffusion-inpainting, SD-2 inpainting), at
ShapesWorld size: the generator's UNet gets 5 more input channels, the mask (1) and the VAE latents of the masked
image (4), whose first-layer weights start at zero, so that step 0 is exactly the generator; it is then fine-tuned
with the text encoder and the VAE frozen, on masks like the ones `inpaint-fix` makes. The channel layout is the one
diffusers' `StableDiffusionInpaintPipeline` feeds a 9-channel UNet: [noisy latents, mask, masked-image latents], the
mask at latent resolution (nearest), the masked image `image * (mask < 0.5)` in [-1, 1].

Training examples (clean renders of *training* prompts only, seeded; never the benchmark's scenes):
- artifact: one injected ShapesWorld artifact; the mask is its region grown by 1-4 pixels (sometimes with an extra
  box); the model sees the damaged image outside the mask and learns the *clean* render inside;
- box: 1-2 random boxes or ellipses on a clean render (shape completion from the context);
- object: one object's footprint grown by 2 pixels (the object redrawn from the prompt);
- full: the whole image (text-to-image, so that the prompt keeps its hold);
- generated: the embedded generator's own failures (`generated_repairs`): its images of training prompts (none of
  the evaluation protocol's; image seeds from 10,000) that the oracle flags; the mask is the oracle's artifact map
  grown by 1-3 pixels, the context the generated image, the target the same image with the oracle's crisp re-render
  of the objects it read pasted inside the mask (`inpaint.examples.oracle_repair`: the deformed corners and ragged
  edges a text-to-image model leaves, made right, and nothing else changed).
Every mask is rounded up to whole latent cells, as `inpaint-fix` does.

Stages (each writes into --work-dir and is skipped when its output exists, so a killed run resumes):
  1. data    renders, masks, masked images; VAE latents of targets and masked images; text states of the prompts
  2. unet    the fine-tuning (v-prediction, EMA), tensorboard logs through accelerate
  3. export  StableDiffusionInpaintPipeline.save_pretrained (fp16 UNet/VAE safetensors) into --out
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from diffusers import DDPMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from richfeedback.generation import (EMBEDDED_DEFAULTS, embedded_generator_path, generate_images,  # noqa: E402
                                     save_sampling_defaults)
from richfeedback.inpaint.convert import inpainting_unet  # noqa: E402
from richfeedback.inpaint.examples import oracle_repair  # noqa: E402
from richfeedback.inpaint.masks import dilate_mask, round_to_cells  # noqa: E402
from richfeedback.shapesworld import oracle  # noqa: E402
from richfeedback.shapesworld.artifacts import inject_artifact  # noqa: E402
from richfeedback.shapesworld.evaluate import PROTOCOL_PROMPT_SEED  # noqa: E402
from richfeedback.shapesworld.render import object_mask, pixel_grid, render  # noqa: E402
from richfeedback.shapesworld.scene import is_heldout_prompt, sample_prompts, sample_scene  # noqa: E402
from richfeedback.training_utils import lr_factor, save_atomically, start_script_run, write_train_stats  # noqa: E402


def random_box_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    x, y = pixel_grid(size)  # pixel centres in [0, 1]
    for _ in range(int(rng.integers(1, 3))):
        cx, cy = rng.uniform(0.1, 0.9, size=2)
        hw, hh = rng.uniform(0.06, 0.25, size=2)
        if rng.random() < 0.5:
            mask |= (np.abs(x - cx) <= hw) & (np.abs(y - cy) <= hh)
        else:
            mask |= ((x - cx) / hw) ** 2 + ((y - cy) / hh) ** 2 <= 1.0
    return mask


GENERATION_SEED = 10_000  # image seeds of the generated examples (the inpainting benchmark samples with seed 0)


@torch.no_grad()
def generated_repairs(pipe: StableDiffusionPipeline, cfg: dict) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]:
    """(context, mask, target, prompt) from the generator's own flagged images of training prompts.

    Prompts are training prompts that are not among the evaluation protocol's (the inpainting benchmark repairs the
    generator's images of those); image seeds start at GENERATION_SEED. The target keeps every pixel of the generated
    image outside the mask and has the oracle's re-render of the objects it read inside it.
    """
    spec = cfg["generated"]
    rng = np.random.default_rng(cfg["seed"] + 2)
    protocol = set(sample_prompts(2000, seed=PROTOCOL_PROMPT_SEED, split="all"))
    prompts = [p for p in sample_prompts(spec["num_prompts"] + len(protocol), seed=cfg["seed"], split="train")
               if p not in protocol][: spec["num_prompts"]]
    examples = []
    batch = spec.get("batch_size", 32)
    pipe.set_progress_bar_config(disable=True)
    for start in tqdm(range(0, len(prompts), batch), desc="generated examples"):
        chunk = prompts[start : start + batch]
        seeds = [GENERATION_SEED + start + i for i in range(len(chunk))]
        for prompt, image in zip(chunk, generate_images(pipe, chunk, seeds, **EMBEDDED_DEFAULTS)):
            report = oracle.evaluate(prompt, image)
            if report.has_artifact:  # the dilation is drawn for flagged images only
                mask, target = oracle_repair(prompt, image, float(rng.integers(1, 4)), cfg["cell"], report)
                examples.append((image, mask, target, prompt))
    tqdm.write(f"{len(examples)} of the generator's {len(prompts)} images are flagged by the oracle: the generated "
               "examples")
    return examples


def make_example(rng: np.random.Generator, cfg: dict, generated=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(context image, mask, target image, prompt) of one training example; `generated`: the examples of
    `generated_repairs`, drawn from when the kind is "generated"."""
    size, cell = cfg["resolution"], cfg["cell"]
    while True:
        scene = sample_scene(rng)
        if not is_heldout_prompt(scene.prompt.text):
            break
    clean = render(scene, size)
    kinds, weights = zip(*cfg["mask_kinds"].items())
    kind = rng.choice(kinds, p=np.asarray(weights) / sum(weights))
    if kind == "generated":
        return generated[int(rng.integers(len(generated)))]
    context = clean
    if kind == "artifact":
        result = inject_artifact(clean, scene, rng)
        if result is None:
            kind = "box"
        else:
            context, artifact = result
            mask = dilate_mask(artifact.region, float(rng.integers(1, 5)))
            if rng.random() < 0.2:
                mask |= random_box_mask(rng, size)
    if kind == "box":
        mask = random_box_mask(rng, size)
    elif kind == "object":
        obj = scene.objects[int(rng.integers(len(scene.objects)))]
        mask = dilate_mask(object_mask(obj, size), 2.0)
    elif kind == "full":
        mask = np.ones((size, size), dtype=bool)
    return context, round_to_cells(mask, cell), clean, scene.prompt.text


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def make_data(cfg: dict, pipe: StableDiffusionPipeline, work: Path) -> dict:
    path = work / "data.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    generated = generated_repairs(pipe, cfg) if cfg["mask_kinds"].get("generated") else None
    rng = np.random.default_rng(cfg["seed"])
    contexts, masks, targets, prompts = [], [], [], []
    for _ in tqdm(range(cfg["num_examples"]), desc="examples"):
        context, mask, target, prompt = make_example(rng, cfg, generated)
        contexts.append(context)
        masks.append(mask)
        targets.append(target)
        prompts.append(prompt)
    masks_t = torch.from_numpy(np.stack(masks)).float()[:, None]  # (N, 1, H, W), 1 = repaint
    gen = torch.Generator().manual_seed(cfg["seed"])
    vae, scale = pipe.vae, pipe.vae.config.scaling_factor
    target_latents, masked_latents = [], []
    for i in tqdm(range(0, len(targets), 256), desc="encode latents"):
        target = to_tensor(np.stack(targets[i : i + 256]))
        context = to_tensor(np.stack(contexts[i : i + 256]))
        masked = context * (masks_t[i : i + 256] < 0.5)  # what the pipeline feeds the VAE
        target_latents.append(vae.encode(target).latent_dist.mean * scale)
        masked_latents.append(vae.encode(masked).latent_dist.sample(generator=gen) * scale)
    unique = sorted(set(prompts))
    index = {p: i for i, p in enumerate(unique)}
    states = []
    for i in tqdm(range(0, len(unique), 256), desc="text states"):
        ids = pipe.tokenizer(unique[i : i + 256] + ([""] if i == 0 else []), padding="max_length",
                             max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        hidden = pipe.text_encoder(ids).last_hidden_state
        if i == 0:
            empty_state, hidden = hidden[-1], hidden[:-1]
        states.append(hidden)
    latent_size = target_latents[0].shape[-1]
    data = {
        "target_latents": torch.cat(target_latents), "masked_latents": torch.cat(masked_latents),
        "latent_masks": F.interpolate(masks_t, size=(latent_size, latent_size)),  # nearest, as the pipeline does
        "prompt_index": torch.tensor([index[p] for p in prompts]), "text_states": torch.cat(states),
        "empty_state": empty_state, "mask_area": masks_t.mean((1, 2, 3)),
    }
    tmp = work / "data.tmp.pt"
    torch.save(data, tmp)
    os.replace(tmp, path)
    return data


def train_unet(cfg: dict, pipe: StableDiffusionPipeline, data: dict, work: Path,
               accelerator: Accelerator) -> UNet2DConditionModel:
    out = work / "unet"
    if (out / "config.json").exists():
        return UNet2DConditionModel.from_pretrained(out)
    c = cfg["unet"]
    unet = inpainting_unet(pipe.unet)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # the generator's v-prediction schedule
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=c["lr"], weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, c["steps"], c["warmup_steps"], 0.0))
    ema = EMAModel(params, decay=c["ema_decay"])
    rng = np.random.default_rng(cfg["seed"] + 1)
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    n = len(data["target_latents"])
    unet.train()
    for step in tqdm(range(c["steps"]), desc="inpainting unet"):
        idx = torch.from_numpy(rng.integers(n, size=c["batch_size"]))
        x0 = data["target_latents"][idx]
        states = data["text_states"][data["prompt_index"][idx]]
        drop = torch.from_numpy(rng.random(len(idx)) < cfg["prompt_dropout"])
        states[drop] = data["empty_state"]
        noise = torch.randn(x0.shape, generator=gen)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        noisy = noise_scheduler.add_noise(x0, noise, timesteps)
        target = noise_scheduler.get_velocity(x0, noise, timesteps)
        inputs = torch.cat([noisy, data["latent_masks"][idx], data["masked_latents"][idx]], dim=1)
        loss = F.mse_loss(unet(inputs, timesteps, states).sample, target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.step(params)
        if step % 20 == 0:
            accelerator.log({"inpaint/loss": loss.item(), "inpaint/lr": sched.get_last_lr()[0]}, step=step)
    ema.copy_to(params)
    save_atomically(out, unet.save_pretrained)
    return UNet2DConditionModel.from_pretrained(out)  # as a resumed run gets it (config names the work dir)


def export(pipe: StableDiffusionPipeline, unet: UNet2DConditionModel, out: Path) -> None:
    # The generator's tokenizer as loaded (the one used here has padding state that would be saved with it): the
    # tokenizer, text encoder and VAE files are then byte-identical to the generator's, stored once by git.
    tokenizer = type(pipe.tokenizer).from_pretrained(embedded_generator_path() / "tokenizer")
    inpaint = StableDiffusionInpaintPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=tokenizer,
                                             unet=unet, scheduler=pipe.scheduler, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    inpaint.unet.to(torch.float16)
    inpaint.vae.to(torch.float16)  # as the generator ships it (fp16 UNet/VAE, fp32 text encoder)
    card = out / "MODEL_CARD.md"  # kept: its numbers come from benchmarks/bench_inpaint.py, re-run it after training
    card_text = card.read_text() if card.exists() else None

    def write(tmp: Path) -> None:
        inpaint.save_pretrained(tmp, safe_serialization=True)
        save_sampling_defaults(tmp, EMBEDDED_DEFAULTS)
        if card_text is not None:
            (tmp / card.name).write_text(card_text)

    save_atomically(out, write)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/generator/shapes-inpainting.yaml")
    parser.add_argument("--work-dir", default="runs/embedded-inpainter")
    parser.add_argument("--out", default="src/richfeedback/embedded/shapes-sd-inpainting")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    work = Path(args.work_dir)
    accelerator = start_script_run(work, "embedded-inpainter", cfg, args.threads)
    pipe = StableDiffusionPipeline.from_pretrained(embedded_generator_path(), local_files_only=True)
    pipe.vae.float()
    pipe.unet.float()
    times = {}
    t0 = time.time()
    data = make_data(cfg, pipe, work)
    times["data_s"] = time.time() - t0
    t0 = time.time()
    unet = train_unet(cfg, pipe, data, work, accelerator)
    times["unet_s"] = time.time() - t0
    export(pipe, unet, Path(args.out))
    accelerator.end_training()
    stats_path = write_train_stats(work, {"config": cfg, "times": times, "torch": torch.__version__,
                                          "threads": args.threads, "mask_area_mean": float(data["mask_area"].mean())})
    print(f"wrote the inpainting pipeline to {args.out}; training stats in {stats_path}")


if __name__ == "__main__":
    main()
