"""LoRA fine-tuning of a Stable Diffusion (1.x/2.x, XL or the embedded ShapesWorld) UNet on an imagefolder dataset.

    accelerate launch -m richfeedback.finetune.train --config configs/finetune/embedded.yaml
    richfeedback finetune train --config configs/finetune/sd15.yaml [--resume] [--set optim.lr=1e-4 ...]
    # two processes on CPU (tests the distributed path):
    accelerate launch --multi_gpu --num_processes 2 -m richfeedback.finetune.train --config ... --cpu

The recipe of diffusers' `train_text_to_image_lora.py` (and its SDXL sibling), in one straight loop:
- peft LoRA on the UNet attention projections (`to_q`, `to_k`, `to_v`, `to_out.0`), rank and alpha from the config;
  optionally on the text encoder(s) too (`q_proj`, `k_proj`, `v_proj`, `out_proj`). Frozen weights run in the
  mixed-precision dtype, the LoRA weights stay in float32 (under bf16 too, where diffusers' scripts keep them bf16).
- the denoising loss the noise scheduler's prediction type calls for (epsilon, v_prediction or sample), with optional
  min-SNR-gamma weighting and noise offset.
- VAE latents (the mean and std of each image's latent distribution; a fresh sample is drawn every step, as when
  encoding every step) and text embeddings are computed once before training unless the text encoder is trained.
- or, with `loss.objective: dpo`, Diffusion-DPO on preference pairs (`pool filter --policy pairs` writes them):
  `richfeedback.finetune.objectives` has both losses and says how DPO is computed.
- AdamW; diffusers' learning-rate schedules; gradient accumulation, gradient checkpointing, mixed precision.
- `accelerator.save_state` checkpoints every N steps that hold the LoRA weights (a save hook writes only them, as
  `pytorch_lora_weights.safetensors`, beside the optimizer, scheduler and RNG states), and `--resume` loads them back
  into the model: diffusers' own script silently restarted LoRA training from its initialisation until PR #12690.
  The batches and the noise of step k depend only on the seed and k, so a resumed run sees what the uninterrupted
  run would have seen.
- validation images at fixed seeds every N steps: PNG grids in OUTPUT/validation and tensorboard images.
- the result: OUTPUT/pytorch_lora_weights.safetensors, in the format `pipe.load_lora_weights(OUTPUT)` reads.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UsageError
from ..training_utils import latest_checkpoint, load_config as load_yaml_config, merge, save_checkpoint
from ..training_utils import add_training_arguments, training_main
from .examples import batch_indices, load_examples
from .objectives import adapters_off, check_objective, denoising_loss, dpo_loss

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
LORA_INFO = "richfeedback_lora.json"  # what the LoRA was trained on, and the negative prompt to use with it

DEFAULTS = {
    "seed": 0,
    "output_dir": "runs/finetune/lora",
    "model": {"pretrained": "embedded"},  # "embedded", a diffusers folder or a hub id
    "data": {"path": None, "extra_paths": [], "image_column": "image", "caption_column": "text",
             "rejected_column": "rejected", "resolution": None,
             "center_crop": True, "random_flip": False, "max_examples": None},
    "lora": {"rank": 4, "alpha": 4, "dropout": 0.0, "init": "gaussian",
             "target_modules": ["to_q", "to_k", "to_v", "to_out.0"],
             "train_text_encoder": False, "text_encoder_target_modules": ["q_proj", "k_proj", "v_proj", "out_proj"]},
    "optim": {"lr": 1.0e-4, "text_encoder_lr": None, "weight_decay": 1.0e-2, "batch_size": 16, "grad_accum": 1,
              "max_steps": 1000, "lr_scheduler": "constant", "warmup_steps": 0, "max_grad_norm": 1.0},
    # objective: "denoising" (the images' own denoising loss) or "dpo" (Diffusion-DPO on the pairs of data.path)
    # (+ dpo_sft_weight x the chosen images' denoising loss: 0 is plain Diffusion-DPO)
    "loss": {"objective": "denoising", "dpo_beta": 2500.0, "dpo_sft_weight": 0.0, "prediction_type": None,
             "snr_gamma": None, "noise_offset": 0.0},
    # Share of examples trained with the empty prompt (diffusers' --proportion_empty_prompts), so that the
    # unconditional prediction that classifier-free guidance subtracts learns the new images too.
    "proportion_empty_prompts": 0.0,
    "mixed_precision": "no",  # no | fp16 | bf16
    "gradient_checkpointing": False,
    "cache_latents": True,
    "cache_text_embeddings": True,  # ignored when the text encoder is trained
    "checkpoint_every_steps": 500,
    "keep_checkpoints": 2,
    "stop_after_steps": None,  # checkpoint and exit at this step (time-sliced or preemptible jobs); --resume goes on
    "validation": {"prompts": [], "seeds": [0, 1], "every_steps": 500, "num_inference_steps": None,
                   "guidance_scale": None, "negative_prompt": None},
    "negative_prompt": None,  # recorded with the LoRA: the prompt to pass as negative_prompt (None: the prefix of the
    # align_sd negatives when data.path was filtered with them, from its filter_report.json)
}


def load_config(path: Optional[str], sets: list[str] = ()) -> dict:
    """DEFAULTS, then the YAML file, then `--set` overrides. The file is a training config, or the four-stage
    config of `richfeedback finetune` (its `train` section, with data.path and output_dir from its output_dir)."""
    from .loop import is_loop_config, read_yaml

    if path:
        raw = read_yaml(path)
        if is_loop_config(raw):
            return config_from_loop(raw, sets)
    return load_yaml_config(path, DEFAULTS, sets, examples="configs/finetune/")


def config_from_loop(loop_cfg: dict, sets: list[str] = ()) -> dict:
    """The training config in a `richfeedback finetune` config: DEFAULTS, its `train` section (data.path and
    output_dir from the loop's output_dir), then `--set` overrides, read as every training config is read."""
    from .loop import train_section

    return load_yaml_config(None, merge(DEFAULTS, train_section(loop_cfg)), sets)


# --- model ------------------------------------------------------------------------------------------------------

def load_components(pretrained: str, device, weight_dtype):
    """The pipeline whose UNet is trained: SD or SDXL (any pipeline with a UNet, a VAE and `encode_prompt`)."""
    from diffusers import DiffusionPipeline

    from ..generation import load_pipeline, resolve_model

    path = resolve_model(pretrained)
    if Path(path).exists():
        pipe = load_pipeline(path, device="cpu")
    else:
        pipe = DiffusionPipeline.from_pretrained(path)
        pipe.set_progress_bar_config(disable=True)
    for name in ("unet", "vae"):
        if getattr(pipe, name, None) is None:
            raise UsageError(f"{pretrained}: a {type(pipe).__name__} has no {name}; LoRA training here is for "
                             "Stable Diffusion 1.x/2.x and XL pipelines")
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    for encoder in text_encoders(pipe):
        encoder.requires_grad_(False)
    pipe.to(device)
    if weight_dtype != torch.float32:
        pipe.unet.to(dtype=weight_dtype)
        for encoder in text_encoders(pipe):
            encoder.to(dtype=weight_dtype)
    # The VAE stays in float32: SDXL's VAE overflows in fp16 (diffusers keeps it in float32 too) and it runs once.
    return pipe


@contextlib.contextmanager
def base_text_encoders(pipe):
    """The pipeline's text encoders with their LoRA switched off (DPO's reference), on again afterwards."""
    with contextlib.ExitStack() as stack:
        for encoder in text_encoders(pipe):
            if getattr(encoder, "peft_config", None):
                stack.enter_context(adapters_off(encoder))
        yield


def text_encoders(pipe) -> list:
    return [e for e in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if e is not None]


def is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def add_lora(pipe, cfg: dict) -> list[torch.nn.Parameter]:
    """peft LoRA adapters on the UNet (and the text encoders when asked); returns the trainable parameters."""
    from peft import LoraConfig

    c = cfg["lora"]
    pipe.unet.add_adapter(LoraConfig(r=c["rank"], lora_alpha=c["alpha"], lora_dropout=c["dropout"],
                                     init_lora_weights=c["init"], target_modules=c["target_modules"]))
    if c["train_text_encoder"]:
        for encoder in text_encoders(pipe):
            encoder.add_adapter(LoraConfig(r=c["rank"], lora_alpha=c["alpha"], lora_dropout=c["dropout"],
                                           init_lora_weights=c["init"],
                                           target_modules=c["text_encoder_target_modules"]))
    return [p for m in trained_modules(pipe, cfg) for p in m.parameters() if p.requires_grad]


def trained_modules(pipe, cfg: dict) -> list:
    return [pipe.unet] + (text_encoders(pipe) if cfg["lora"]["train_text_encoder"] else [])


def lora_layers(pipe, modules: list) -> dict:
    """Keyword arguments of `save_lora_weights` for the LoRA state of `modules` (unwrapped), in diffusers' format,
    with each adapter's peft config as its metadata: without it `load_lora_weights` takes alpha = rank, so a LoRA
    trained with another alpha would load at the wrong scale (diffusers' own LoRA scripts force alpha = rank)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    names = {id(pipe.unet): "unet"}
    if getattr(pipe, "text_encoder", None) is not None:
        names[id(pipe.text_encoder)] = "text_encoder"
    if getattr(pipe, "text_encoder_2", None) is not None:
        names[id(pipe.text_encoder_2)] = "text_encoder_2"
    kwargs = {}
    for m in modules:
        kwargs[f"{names[id(m)]}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(m))
        kwargs[f"{names[id(m)]}_lora_adapter_metadata"] = m.peft_config["default"].to_dict()
    return kwargs


def load_lora_state(pipe, folder: str | os.PathLike, modules: list) -> None:
    """Put the LoRA weights saved in `folder` back into the adapters of `modules` (the resume path)."""
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import set_peft_model_state_dict

    state_dict, _ = type(pipe).lora_state_dict(str(folder))
    prefixes = {id(pipe.unet): "unet."}
    if getattr(pipe, "text_encoder", None) is not None:
        prefixes[id(pipe.text_encoder)] = "text_encoder."
    if getattr(pipe, "text_encoder_2", None) is not None:
        prefixes[id(pipe.text_encoder_2)] = "text_encoder_2."
    for module in modules:
        prefix = prefixes[id(module)]
        part = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if module is pipe.unet:
            part = convert_unet_state_dict_to_peft(part)
        else:
            from diffusers.utils import convert_state_dict_to_peft
            part = convert_state_dict_to_peft(part)
        result = set_peft_model_state_dict(module, part, adapter_name="default")
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise ValueError(f"{folder}: LoRA keys that match no layer of the {prefix[:-1]}, e.g. {unexpected[0]}; "
                             "was this checkpoint made with another lora.rank or target_modules?")


# --- conditioning -----------------------------------------------------------------------------------------------

def encode_text(pipe, captions: list[str], device) -> dict:
    """Text conditioning of `captions`: {"encoder_hidden_states"} (+ "text_embeds" for SDXL), with gradients if the
    text encoders are being trained."""
    if is_sdxl(pipe):
        embeds, _, pooled, _ = pipe.encode_prompt(captions, device=device, num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
        return {"encoder_hidden_states": embeds, "text_embeds": pooled}
    embeds, _ = pipe.encode_prompt(captions, device, 1, False)
    return {"encoder_hidden_states": embeds}


def sdxl_time_ids(resolution: int, batch: int, device, dtype) -> torch.Tensor:
    """SDXL's micro-conditioning (original size, crop top-left, target size) for centre-cropped square images at
    the training resolution: exact for pool images generated at that resolution. diffusers' SDXL script records each
    image's own original size and crop instead, which matters for other data (photos, `data.extra_paths`)."""
    return torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], device=device, dtype=dtype).repeat(batch, 1)


@torch.no_grad()
def encode_latent_distribution(vae, pixels: torch.Tensor, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of every image's latent distribution, unscaled."""
    means, stds = [], []
    for start in range(0, len(pixels), batch_size):
        dist = vae.encode(pixels[start:start + batch_size].to(vae.device, vae.dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


def draw_latents(vae, pixels: torch.Tensor, cache: Optional[tuple[torch.Tensor, torch.Tensor]], index: torch.Tensor,
                 generator, device) -> torch.Tensor:
    """Scaled latents of the images `index`: a sample of each one's latent distribution (from `cache`, their
    (mean, std), or encoded now), drawn with `generator`."""
    if cache is not None:
        mean, std = cache[0][index], cache[1][index]
    else:
        mean, std = encode_latent_distribution(vae, pixels[index])
    sample = mean + std * torch.randn(mean.shape, generator=generator)
    return scale_latents(vae, sample).to(device)


def scale_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    shift = getattr(vae.config, "shift_factor", None)
    return ((latents - shift) if shift is not None else latents) * vae.config.scaling_factor


# --- validation -------------------------------------------------------------------------------------------------

@torch.no_grad()
def validation_images(pipe, cfg: dict) -> list[np.ndarray]:
    from ..generation import generate_images, pipeline_defaults

    v = cfg["validation"]
    prompts = [p for p in v["prompts"] for _ in v["seeds"]]
    seeds = [s for _ in v["prompts"] for s in v["seeds"]]
    sampling = pipeline_defaults(cfg["model"]["pretrained"])
    for key in ("num_inference_steps", "guidance_scale"):
        if v[key] is not None:
            sampling[key] = v[key]
    negative = v["negative_prompt"] or cfg["negative_prompt"]
    if negative:
        sampling["negative_prompt"] = [negative] * len(prompts)
    return generate_images(pipe, prompts, seeds, **sampling)


def log_validation(pipe, cfg: dict, accelerator, out: Path, step: int) -> None:
    from ..imaging import make_grid, save_png

    if not cfg["validation"]["prompts"]:
        return
    modules = trained_modules(pipe, cfg)
    for m in modules:
        m.eval()
    images = validation_images(pipe, cfg)
    for m in modules:
        m.train()
    grid = make_grid(images, ncols=len(cfg["validation"]["seeds"]), scale=max(1, 256 // images[0].shape[0]))
    save_png(grid, out / "validation" / f"step-{step:06d}.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images("validation", np.stack(images), step, dataformats="NHWC")


# --- the loop ---------------------------------------------------------------------------------------------------

def train(cfg: dict, resume: bool = False, cpu: bool = False) -> Path:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params

    if not 0.0 <= cfg["proportion_empty_prompts"] < 1.0:
        raise UsageError(f"proportion_empty_prompts must be in [0, 1), got {cfg['proportion_empty_prompts']}")
    objective = check_objective(cfg)
    if cfg["negative_prompt"] is None and cfg["data"]["path"]:
        # a dataset filtered with align_sd's negatives ("Weird image. " + prompt) says so in its filter report: record
        # the prefix as the LoRA's negative prompt, for validation and for whoever samples from it
        from .filtering import negative_prompt_of

        cfg = {**cfg, "negative_prompt": negative_prompt_of(cfg["data"]["path"])}
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    o = cfg["optim"]
    accelerator = Accelerator(cpu=cpu or not torch.cuda.is_available(), mixed_precision=cfg["mixed_precision"],
                              gradient_accumulation_steps=o["grad_accum"], log_with="tensorboard",
                              project_dir=str(out / "logs"))
    set_seed(cfg["seed"])
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    pipe = load_components(cfg["model"]["pretrained"], accelerator.device, weight_dtype)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    resolution = cfg["data"]["resolution"] or pipe.unet.config.sample_size * pipe.vae_scale_factor
    pixels, captions, rejected = load_examples(cfg, resolution)
    global_batch = o["batch_size"] * accelerator.num_processes
    if len(pixels) < global_batch:
        unit = "pairs" if rejected is not None else "images"
        raise UsageError(f"{cfg['data']['path']} has {len(pixels)} training {unit}, fewer than one batch of "
                         f"{o['batch_size']} x {accelerator.num_processes} processes: lower optim.batch_size")

    params = add_lora(pipe, cfg)
    modules = trained_modules(pipe, cfg)

    def lora_weights_in_float32():
        # LoRA weights (and so AdamW's updates) in float32, the frozen rest in half precision; diffusers' scripts do
        # this for fp16 only, leaving bf16 LoRA weights to round away small updates
        if accelerator.mixed_precision in ("fp16", "bf16"):
            cast_training_params(modules, dtype=torch.float32)

    lora_weights_in_float32()
    if cfg["gradient_checkpointing"]:
        pipe.unet.enable_gradient_checkpointing()
        if cfg["lora"]["train_text_encoder"]:
            for encoder in text_encoders(pipe):
                encoder.gradient_checkpointing_enable()

    # Encode once: the latent distributions of all images, and the text of all captions (unless it is trained).
    started = time.perf_counter()
    cache_text = cfg["cache_text_embeddings"] and not cfg["lora"]["train_text_encoder"]
    latent_cache = rejected_cache = None  # (mean, std) of every image's latent distribution
    if cfg["cache_latents"]:
        latent_cache = encode_latent_distribution(pipe.vae, pixels)
        if rejected is not None:
            rejected_cache = encode_latent_distribution(pipe.vae, rejected)
    # The cache holds each distinct caption once (the empty one too when examples are dropped to it); an example
    # looks its caption's row up in it.
    text_cache = caption_rows = empty_row = None
    if cache_text:
        with torch.no_grad():
            unique = sorted(set(captions) | ({""} if cfg["proportion_empty_prompts"] else set()))
            encoded = [encode_text(pipe, unique[i:i + 64], accelerator.device) for i in range(0, len(unique), 64)]
            text_cache = {k: torch.cat([e[k] for e in encoded]).cpu() for k in encoded[0]}
            row = {c: i for i, c in enumerate(unique)}
            caption_rows = torch.tensor([row[c] for c in captions])
            empty_row = row.get("")
    cache_seconds = time.perf_counter() - started

    te_lr = o["text_encoder_lr"] or o["lr"]
    groups = [{"params": [p for p in pipe.unet.parameters() if p.requires_grad], "lr": o["lr"]}]
    if cfg["lora"]["train_text_encoder"]:
        groups.append({"params": [p for e in text_encoders(pipe) for p in e.parameters() if p.requires_grad],
                       "lr": te_lr})
    optimizer = torch.optim.AdamW(groups, lr=o["lr"], weight_decay=o["weight_decay"])
    total_steps = o["max_steps"]
    lr_scheduler = get_scheduler(o["lr_scheduler"], optimizer=optimizer, num_warmup_steps=o["warmup_steps"],
                                 num_training_steps=total_steps)
    # Only the UNet is wrapped for distributed training; text-encoder LoRA gradients (when trained) are averaged
    # across processes by hand below, because `encode_prompt` calls the encoders directly, not through a wrapper.
    unet, optimizer = accelerator.prepare(pipe.unet, optimizer)
    # The scheduler is stepped by hand once per optimizer step (a prepared one steps once per process).
    accelerator.register_for_checkpointing(lr_scheduler)
    encoder_params = [p for e in modules[1:] for p in e.parameters() if p.requires_grad]

    # Checkpoints hold only the LoRA weights of the trained modules (not a copy of the frozen model) and load them
    # back into the adapters on resume.
    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            type(pipe).save_lora_weights(output_dir, **lora_layers(pipe, modules), safe_serialization=True)
        while weights:
            weights.pop()

    def load_hook(models, input_dir):
        while models:
            models.pop()
        load_lora_state(pipe, input_dir, modules)
        lora_weights_in_float32()

    base_unet = functools.partial(adapters_off, accelerator.unwrap_model(unet))  # DPO's reference: LoRA off

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
    accelerator.init_trackers("finetune", config={"config": json.dumps(cfg)})

    step = 0
    if resume:
        checkpoint = latest_checkpoint(out)
        if checkpoint is None:
            accelerator.print(f"no checkpoint in {out / 'checkpoints'}: starting from scratch")
        else:
            accelerator.load_state(str(checkpoint))
            step = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
            accelerator.print(f"resumed from {checkpoint} at step {step}")
    if step >= total_steps and (out / LORA_WEIGHTS).exists():
        accelerator.print(f"{out} finished training already; LoRA weights in {out / LORA_WEIGHTS}")
        accelerator.end_training()
        return out

    for m in modules:
        m.train()
    bar = tqdm(total=total_steps, initial=step, desc="lora train", disable=not accelerator.is_local_main_process)
    train_started = time.perf_counter()
    steps_this_run = 0
    while step < total_steps:
        step_loss = 0.0
        step_stats = {}  # DPO's implicit accuracy and denoising loss
        for micro in range(o["grad_accum"]):
            micro_step = step * o["grad_accum"] + micro
            index = batch_indices(micro_step, len(pixels), o["batch_size"], accelerator.process_index,
                                  accelerator.num_processes, cfg["seed"])
            # The step's noise and timesteps come from its own generator: the same after a resume.
            generator = torch.Generator().manual_seed(cfg["seed"] * 7_919 + micro_step * 104_729
                                                      + accelerator.process_index)
            with accelerator.accumulate(unet):
                latents = draw_latents(pipe.vae, pixels, latent_cache, index, generator, accelerator.device)
                rejected_latents = None
                if rejected is not None:  # DPO: the pairs' rejected images, drawn after the chosen ones
                    rejected_latents = draw_latents(pipe.vae, rejected, rejected_cache, index, generator,
                                                    accelerator.device)
                base_conditioning = None  # DPO's reference conditioning when the text encoders' LoRA is trained
                dropped = torch.zeros(len(index), dtype=torch.bool)
                if cfg["proportion_empty_prompts"]:  # drawn only when asked, so other runs keep their noise
                    dropped = torch.rand(len(index), generator=generator) < cfg["proportion_empty_prompts"]
                if text_cache is not None:
                    rows = caption_rows[index]
                    if dropped.any():
                        rows = torch.where(dropped, empty_row, rows)
                    conditioning = {k: v[rows].to(accelerator.device) for k, v in text_cache.items()}
                else:
                    batch_captions = ["" if d else captions[i] for i, d in zip(index.tolist(), dropped.tolist())]
                    if rejected is not None and cfg["lora"]["train_text_encoder"]:
                        # DPO's reference reads the base text encoders' conditioning (before the trained pass: see
                        # dpo_loss on switching adapters)
                        with torch.no_grad(), base_text_encoders(pipe):
                            base_conditioning = encode_text(pipe, batch_captions, accelerator.device)
                    with torch.set_grad_enabled(cfg["lora"]["train_text_encoder"]):
                        conditioning = encode_text(pipe, batch_captions, accelerator.device)
                time_ids = None
                if "text_embeds" in conditioning:
                    time_ids = sdxl_time_ids(resolution, len(index), accelerator.device,
                                             conditioning["text_embeds"].dtype)
                with accelerator.autocast():
                    if rejected_latents is None:
                        loss = denoising_loss(unet, noise_scheduler, latents, conditioning, generator, cfg, time_ids)
                    else:
                        loss, stats = dpo_loss(unet, base_unet, noise_scheduler, latents, rejected_latents,
                                               conditioning, base_conditioning, generator, cfg, time_ids)
                        for name, value in stats.items():
                            step_stats[name] = step_stats.get(name, 0.0) + value.float() / o["grad_accum"]
                accelerator.backward(loss)
                step_loss += loss.detach().float() / o["grad_accum"]
                if accelerator.sync_gradients:
                    if encoder_params and accelerator.num_processes > 1:
                        for p in encoder_params:
                            p.grad = accelerator.reduce(p.grad, reduction="mean")
                    accelerator.clip_grad_norm_(params, o["max_grad_norm"])
                optimizer.step()
                optimizer.zero_grad()
        lr_scheduler.step()
        step += 1
        steps_this_run += 1
        loss_value = accelerator.gather(step_loss[None]).mean().item()
        extra = {name: accelerator.gather(value[None]).mean().item() for name, value in step_stats.items()}
        bar.update(1)
        postfix = {"loss": f"{loss_value:.4f}"}
        if "implicit_accuracy" in extra:
            postfix["implicit_accuracy"] = f"{extra['implicit_accuracy']:.3f}"
        bar.set_postfix(postfix)
        accelerator.log({"loss": loss_value, "lr": lr_scheduler.get_last_lr()[0], **extra}, step=step)
        if accelerator.is_main_process:
            with open(out / "train_log.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "loss": loss_value, **extra}) + "\n")
        stopping = cfg["stop_after_steps"] is not None and step >= cfg["stop_after_steps"]
        if step % cfg["checkpoint_every_steps"] == 0 or step == total_steps or stopping:
            save_checkpoint(accelerator, out, step, {}, cfg["keep_checkpoints"])
        if accelerator.is_main_process and (step % cfg["validation"]["every_steps"] == 0 or step == total_steps):
            log_validation(pipe, cfg, accelerator, out, step)
        if stopping and step < total_steps:
            bar.close()
            accelerator.end_training()
            accelerator.print(f"stopped at step {step} as asked; continue with --resume ({out / 'checkpoints'})")
            return out
    bar.close()
    train_seconds = time.perf_counter() - train_started
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_lora(pipe, modules, cfg, out, resolution)
        summary = {"steps": step, "steps_this_run": steps_this_run, "train_seconds": train_seconds,
                   "steps_per_second": steps_this_run / train_seconds if train_seconds else None,
                   "cache_seconds": cache_seconds, "num_examples": len(pixels), "objective": objective,
                   "num_processes": accelerator.num_processes,
                   "trainable_parameters": sum(p.numel() for p in params)}
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.end_training()
    accelerator.print(f"done: LoRA weights in {out / LORA_WEIGHTS} (load with pipe.load_lora_weights({str(out)!r})); "
                      f"validation images in {out / 'validation'}, logs in {out / 'logs'}")
    return out


def save_lora(pipe, modules: list, cfg: dict, out: Path, resolution: int) -> None:
    """pytorch_lora_weights.safetensors and richfeedback_lora.json, each replaced atomically."""
    tmp = out / ".final.tmp"
    tmp.mkdir(exist_ok=True)
    type(pipe).save_lora_weights(str(tmp), **lora_layers(pipe, modules), safe_serialization=True)
    info = {"base_model": cfg["model"]["pretrained"], "pipeline": type(pipe).__name__, "rank": cfg["lora"]["rank"],
            "alpha": cfg["lora"]["alpha"], "train_text_encoder": cfg["lora"]["train_text_encoder"],
            "resolution": resolution, "data": cfg["data"]["path"], "objective": cfg["loss"]["objective"],
            "steps": cfg["optim"]["max_steps"],
            "negative_prompt": cfg["negative_prompt"]}
    (tmp / LORA_INFO).write_text(json.dumps(info, indent=2) + "\n")
    for name in (LORA_WEIGHTS, LORA_INFO):
        os.replace(tmp / name, out / name)
    tmp.rmdir()


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return add_training_arguments(parser, "configs/finetune/")


def main(argv=None) -> int:
    return training_main(argv, __doc__, "configs/finetune/", load_config, train, "finetune train")


if __name__ == "__main__":
    sys.exit(main())
