"""Train a reward adapter (LoRA or head) on a frozen reward model with accelerate; options in a YAML file.

    accelerate launch -m richfeedback.reward_models.train_adapter --config configs/adapters/pickscore-lora.yaml
    richfeedback adapter train --config configs/adapters/pickscore-lora.yaml [--resume] [--set optim.lr=1e-4 ...]

Data (`data.source`): "preferences" (a preferences file: `ab results`, Pick-a-Pic, HPDv2), "pool" (a pool or generate
folder ranked by the oracle or a score), "shapesworld" (oracle-judged ShapesWorld pairs), or "scores" (a rich-feedback
dataset's scores, regression). A held-out split by prompt (`data.heldout_fraction`) is evaluated after every epoch.
With `data.group_by_prompt`, a batch is `optim.batch_size` *prompts* with all their pairs, each distinct image
encoded once per step (HPSv2 trains on a prompt's images together): with four renders and six pairs per prompt that
is a third of the image passes per pair, for the same mean pairwise loss.

Adapter (`adapter.kind`): "lora" (peft LoRA; `adapter.target_modules` defaults to the family's: every attention and
MLP linear of both towers and the patch embedding, see `adapters.modeling.FAMILIES`), "head" (the family's score
head in full), "lora+head" (both), "patch_head" (a new prompt-free head over the image tower's final tokens whose
smooth maximum is subtracted from the score: room for local defects, see `adapters.patch_head`; hidden width
`adapter.patch_head_hidden`) or "lora+patch_head" (LoRA and the patch head: the ShapesWorld benchmark's recipe).

Loss (`loss.type`, default the family's own): "pairwise_softmax" (PickScore, HPS: softmax over the pair's scores,
ties as [0.5, 0.5]), "ranking" (ImageReward: -log sigmoid(r_win - r_lose), ties skipped), "mse" (scores; with a
learned affine map onto the targets' scale when `loss.calibrate`). `loss.scale` multiplies the scores first; "auto"
(the default) puts HPS's 100 * cos and CLIPScore's 2.5 * cos at the backbone's own learned temperature
exp(logit_scale) (1 and 40 for the released models; less for a CLIP whose learned logit scale is lower).

AdamW with warm-up and cosine decay per step, gradient accumulation, mixed precision, gradient clipping. Checkpoints
(adapter weights, optimizer, scheduler, step, written atomically) every N steps and `--resume` from the latest; the
frozen base is never copied into them. `OUTPUT/best` is the adapter with the best held-out preference accuracy (or
Spearman correlation for scores), `OUTPUT/final` the last; `OUTPUT/base_metrics.json` has the base model's numbers on
the same held-out split, `OUTPUT/train_log.jsonl` and tensorboard logs (`OUTPUT/logs`) the curves. Load the result:

    load_reward_model("pickscore", weights=..., adapter="runs/adapter-pickscore/best")
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from ..training_utils import latest_checkpoint, load_config as load_yaml_config, lr_factor
from ..training_utils import add_training_arguments, prune_checkpoints, training_main

from .adapters.losses import check_loss, pairwise_loss, score_mse
from .adapters.modeling import (AdapterSpec, FAMILIES, add_adapter, adapter_state_dict, json_default,
                                load_adapter_state, save_adapter)
from .adapters.preferences import PreferencePair, split_by_prompt
from .base import load_image

DEFAULTS = {
    "seed": 0,
    "output_dir": "runs/adapter",
    # options: passed to load_reward_model (e.g. config= for a reduced HPS, processor= for PickScore)
    "base": {"name": None, "weights": None, "options": {}},
    # target_modules / head_parameters: null = the family's (reward_models.adapters.modeling.FAMILIES)
    "adapter": {"kind": "lora", "r": 8, "alpha": 8.0, "dropout": 0.0, "target_modules": None,
                "head_parameters": None, "patch_head_hidden": 64},
    # group_by_prompt: batches of prompts with all their pairs, each image encoded once (pairs only)
    "data": {"source": None, "path": None, "by": "oracle", "keep_ties": True, "max_pairs_per_prompt": None,
             "n_prompts": 400, "split": "train", "score_weights": {"overall": 1.0}, "heldout_fraction": 0.2,
             "num_workers": 0, "group_by_prompt": False},
    # scale multiplies scores before the loss: a number, or "auto" (pairwise losses: the backbone's own temperature,
    # see auto_loss_scale; 1 for mse); calibrate: affine map for "mse"
    "loss": {"type": None, "scale": "auto", "calibrate": True},
    "optim": {"lr": 1.0e-3, "weight_decay": 0.0, "epochs": 5, "batch_size": 16, "grad_accum": 1, "warmup_steps": 10,
              "min_lr_ratio": 0.1, "max_grad_norm": 1.0, "max_steps": None},
    "mixed_precision": "no",
    "checkpoint_every_steps": 100,
    "keep_checkpoints": 2,
    "stop_after_steps": None,  # checkpoint and exit at this step; --resume goes on
    "eval_batch_size": 64,
}


def load_config(path: Optional[str], sets: list[str] = ()) -> dict:
    return load_yaml_config(path, DEFAULTS, sets, examples="configs/adapters/")


# -- data -------------------------------------------------------------------------------------------------------------

def load_examples(cfg: dict) -> list:
    from .adapters.preferences import pairs_from_pool, read_preference_file, score_examples, shapesworld_pairs

    d = cfg["data"]
    source = d["source"]
    if source == "shapesworld":
        return shapesworld_pairs(d["n_prompts"], seed=cfg["seed"], keep_ties=d["keep_ties"])
    if not d["path"]:
        raise ValueError(f"data.source {source!r} needs data.path")
    if source == "preferences":
        pairs = read_preference_file(d["path"])
        return pairs if d["keep_ties"] else [p for p in pairs if p.label != 0.5]
    if source == "pool":
        return pairs_from_pool(d["path"], by=d["by"], keep_ties=d["keep_ties"],
                               max_pairs_per_prompt=d["max_pairs_per_prompt"], seed=cfg["seed"])
    if source == "scores":
        return score_examples(d["path"], d["split"], d["score_weights"])
    raise ValueError(f"data.source must be preferences, pool, shapesworld or scores, got {source!r}")


def preprocess(transform, image) -> torch.Tensor:
    image = load_image(str(image) if isinstance(image, Path) else image)
    return transform.from_tensor(image[None].float())[0] if isinstance(image, torch.Tensor) else \
        transform.from_pixels(image)


class AdapterDataset(torch.utils.data.Dataset):
    """Pairs give (prompt, pixels A, pixels B, label); score examples (prompt, pixels, target)."""

    def __init__(self, examples: list, transform):
        self.examples = examples
        self.transform = transform

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        x = self.examples[i]
        if isinstance(x, PreferencePair):
            return x.prompt, preprocess(self.transform, x.image_a), preprocess(self.transform, x.image_b), x.label
        return x.prompt, preprocess(self.transform, x.image), x.target


def collate(items):
    prompts = [item[0] for item in items]
    tensors = [torch.stack([item[k] for item in items]) for k in range(1, len(items[0]) - 1)]
    return prompts, tensors, torch.tensor([item[-1] for item in items], dtype=torch.float32)


def _image_key(image) -> object:
    return id(image) if not isinstance(image, (str, Path)) else str(image)


def group_by_prompt(pairs: list) -> list[tuple[str, list, list[tuple[int, int, float]]]]:
    """[(prompt, its distinct images, its pairs as (index A, index B, label))], in order of first appearance."""
    groups: dict[str, tuple[list, dict, list]] = {}
    for pair in pairs:
        images, index, indexed = groups.setdefault(pair.prompt, ([], {}, []))
        ends = []
        for image in (pair.image_a, pair.image_b):
            key = _image_key(image)
            if key not in index:
                index[key] = len(images)
                images.append(image)
            ends.append(index[key])
        indexed.append((ends[0], ends[1], pair.label))
    return [(prompt, images, indexed) for prompt, (images, _, indexed) in groups.items()]


class PromptGroupDataset(torch.utils.data.Dataset):
    """One item per prompt: its distinct images (each encoded once per step) and every pair among them, as
    HPSv2 trains on all of a prompt's images at once; the loss is still the mean over pairs."""

    def __init__(self, pairs: list, transform):
        self.groups = group_by_prompt(pairs)
        self.transform = transform

    def __len__(self):
        return len(self.groups)

    def __getitem__(self, i):
        prompt, images, indexed = self.groups[i]
        pixels = torch.stack([preprocess(self.transform, image) for image in images])
        return prompt, pixels, torch.tensor([(a, b) for a, b, _ in indexed]), torch.tensor([l for _, _, l in indexed])


def collate_groups(items):
    """(a prompt per image, pixels, pair indices into the batch's images (P, 2), labels (P,))."""
    prompts, pixels, ends, labels, offset = [], [], [], [], 0
    for prompt, group_pixels, group_ends, group_labels in items:
        prompts += [prompt] * len(group_pixels)
        pixels.append(group_pixels)
        ends.append(group_ends + offset)
        labels.append(group_labels)
        offset += len(group_pixels)
    return prompts, torch.cat(pixels), torch.cat(ends), torch.cat(labels).float()


# -- model ------------------------------------------------------------------------------------------------------------

def build_model(cfg: dict):
    """The base reward model (fp32, frozen) with a fresh adapter; returns (model, trainable parameter names)."""
    from .registry import load_reward_model

    b = cfg["base"]
    if not b["name"]:
        raise ValueError(f"set base.name to one of {', '.join(FAMILIES)}")
    model = load_reward_model(b["name"], b["weights"], **(b.get("options") or {}))
    a = cfg["adapter"]
    spec = AdapterSpec(kind=a["kind"], r=a["r"], alpha=a["alpha"], dropout=a["dropout"],
                       target_modules=a["target_modules"], head_parameters=a["head_parameters"],
                       patch_head_hidden=a["patch_head_hidden"])
    return model, add_adapter(model, spec)


def auto_loss_scale(model) -> float:
    """What turns a family's score into the logits of its backbone's own contrastive temperature exp(logit_scale):
    PickScore's score is exactly that (1); HPS reports 100 * cos (exp(logit_scale) / 100: 1 for the released HPS
    models, whose scale sits at CLIP's cap of 100); CLIPScore reports 2.5 * max(cos, 0) (exp(logit_scale) / 2.5: 40
    for OpenAI's CLIP). A backbone whose learned temperature is lower (a small or briefly trained CLIP) would otherwise
    see logits several times sharper than it was trained with. Other families (ImageReward, aesthetic): 1."""
    if model.name in ("hpsv2", "hpsv2.1", "clipscore"):
        temperature = float(model.clip.logit_scale.detach().float().exp())
        return temperature / (2.5 if model.name == "clipscore" else 100.0)
    return 1.0


def evaluate_split(model, examples: list, batch_size: int) -> dict:
    """Held-out numbers: preference accuracy (pairs) or Spearman / Pearson correlation (scores)."""
    from .adapters.evaluate import preference_accuracy

    model.eval()
    if isinstance(examples[0], PreferencePair):
        return preference_accuracy(model, examples, batch_size=batch_size, bootstrap=0)
    from scipy.stats import pearsonr, spearmanr

    scores = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        scores += model.score([x.prompt for x in chunk], [x.image for x in chunk]).tolist()
    targets = [x.target for x in examples]
    return {"spearman": float(spearmanr(scores, targets)[0]), "pearson": float(pearsonr(scores, targets)[0]),
            "examples": len(examples)}


def selection_metric(result: dict) -> float:
    return result["accuracy"] if "accuracy" in result else result["spearman"]


# -- checkpoints (adapter, optimizer, scheduler, calibration, step; never the frozen base) ----------------------------

def write_checkpoint(out: Path, step: int, best: float, model, optimizer, scheduler, calibration, keep: int) -> Path:
    from safetensors.torch import save_file

    path = out / "checkpoints" / f"step-{step}"
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(adapter_state_dict(model), str(tmp / "adapter_model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "calibration": calibration.detach().cpu(), "torch_rng": torch.get_rng_state()}, tmp / "state.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "best": best}))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    prune_checkpoints(path.parent, keep)
    return path


def read_checkpoint(path: Path, model, optimizer, scheduler, calibration) -> dict:
    from safetensors.torch import load_file

    load_adapter_state(model, load_file(str(path / "adapter_model.safetensors")), where=str(path))
    extra = torch.load(path / "state.pt", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    with torch.no_grad():
        calibration.copy_(extra["calibration"])
    torch.set_rng_state(extra["torch_rng"])
    return json.loads((path / "trainer_state.json").read_text())


# -- the loop ---------------------------------------------------------------------------------------------------------

def train(cfg: dict, resume: bool = False, cpu: bool = False) -> Path:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    o, lcfg = cfg["optim"], cfg["loss"]
    check_loss(lcfg["type"])
    accelerator = Accelerator(
        cpu=cpu or not torch.cuda.is_available(), mixed_precision=cfg["mixed_precision"],
        gradient_accumulation_steps=o["grad_accum"], log_with="tensorboard", project_dir=str(out / "logs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    set_seed(cfg["seed"])

    examples = load_examples(cfg)
    train_examples, heldout = split_by_prompt(examples, cfg["data"]["heldout_fraction"], cfg["seed"])
    if not train_examples or not heldout:
        raise ValueError(f"{len(examples)} examples over too few prompts for a held-out split of "
                         f"{cfg['data']['heldout_fraction']}: give more data")
    pairwise = isinstance(examples[0], PreferencePair)
    model, trainable = build_model(cfg)
    loss_type = lcfg["type"] or (FAMILIES[model.name].pairwise_loss if pairwise else "mse")
    if pairwise == (loss_type == "mse"):
        raise ValueError(f"loss.type {loss_type!r} does not fit data.source {cfg['data']['source']!r}: "
                         "pairs take pairwise_softmax or ranking, scores take mse")
    if lcfg["scale"] == "auto":
        lcfg["scale"] = 1.0 if loss_type == "mse" else auto_loss_scale(model)
    elif not isinstance(lcfg["scale"], (int, float)):
        raise ValueError(f"loss.scale must be a number or 'auto', got {lcfg['scale']!r}")
    if accelerator.is_main_process:
        accelerator.print(f"{model.name} + {model.adapter_info['kind']} adapter: "
                          f"{model.adapter_info['trainable_parameters']:,} trainable parameters; "
                          f"{len(train_examples)} training / {len(heldout)} held-out examples; loss {loss_type} "
                          f"(scale {lcfg['scale']:.4g})")

    grouped = pairwise and cfg["data"]["group_by_prompt"]
    dataset = (PromptGroupDataset(train_examples, model.transform) if grouped else
               AdapterDataset(train_examples, model.transform))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=o["batch_size"], shuffle=True, drop_last=True,
        collate_fn=collate_groups if grouped else collate, num_workers=cfg["data"]["num_workers"],
        generator=torch.Generator().manual_seed(cfg["seed"]))
    loader = accelerator.prepare(loader)
    steps_per_epoch = len(loader) // o["grad_accum"]
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_examples)} training examples make no optimizer step of {o['batch_size']} x "
                         f"{o['grad_accum']} accumulation x {accelerator.num_processes} processes")
    total_steps = o["max_steps"] or steps_per_epoch * o["epochs"]
    # The affine map that puts the model's scale onto score targets (MSE only); trained, not part of the adapter.
    calibration = torch.nn.Parameter(torch.tensor([1.0, 0.0]),
                                     requires_grad=loss_type == "mse" and bool(lcfg["calibrate"]))
    parameters = dict(model.named_parameters())
    optimizer = torch.optim.AdamW([parameters[n] for n in trainable] + [calibration], lr=o["lr"],
                                  weight_decay=o["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, o["warmup_steps"], o["min_lr_ratio"]))
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers("adapter", config={"config": json.dumps(cfg, default=json_default)})
    unwrapped = accelerator.unwrap_model(model)

    step, best = 0, -float("inf")
    checkpoint = latest_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        accelerator.print(f"no checkpoint in {out / 'checkpoints'}: starting from scratch")
    if checkpoint is not None:
        state = read_checkpoint(checkpoint, unwrapped, optimizer, scheduler, calibration)
        step, best = state["step"], state["best"]
        if step >= total_steps and (out / "final").exists():
            accelerator.print(f"{out} finished training already; adapters in {out / 'best'} and {out / 'final'}")
            accelerator.end_training()
            return out / "best"
        accelerator.print(f"resumed from {checkpoint} at step {step}")
    elif accelerator.is_main_process:
        base = evaluate_split(unwrapped, heldout, cfg["eval_batch_size"])
        (out / "base_metrics.json").write_text(json.dumps({"model": cfg["base"]["name"], **base}, indent=2))
        accelerator.print(f"base {cfg['base']['name']} on the held-out split: {json.dumps(base)}")
        if (out / "train_log.jsonl").exists():
            (out / "train_log.jsonl").unlink()  # a fresh run, not a resumed one

    training_summary = {"config": cfg, "loss": loss_type, "train_examples": len(train_examples),
                        "heldout_examples": len(heldout)}

    def save(name: str, result: dict):
        if accelerator.is_main_process:
            save_adapter(unwrapped, out / name, extra={**training_summary, "step": step, "heldout": result})

    def loss_of(batch):
        if grouped:
            prompts, pixels, ends, labels = batch
            scores = model(prompts, pixels).float()
            return pairwise_loss(loss_type, scores[ends[:, 0]], scores[ends[:, 1]], labels, lcfg["scale"])
        prompts, tensors, labels = batch
        if pairwise:
            pixels = torch.cat(tensors, dim=0)
            scores = model(prompts + prompts, pixels).float()
            a, b = scores[: len(prompts)], scores[len(prompts):]
            return pairwise_loss(loss_type, a, b, labels, lcfg["scale"])
        scores = model(prompts, tensors[0]).float()
        return score_mse(scores * lcfg["scale"], labels, calibration[0], calibration[1])

    started = time.perf_counter()
    bar = tqdm(total=total_steps, initial=step, desc="adapter train", disable=not accelerator.is_local_main_process)
    # The frozen backbone runs in eval mode (no dropout) while the adapter trains: its features must be the ones it
    # gives at inference, and LoRA's own dropout is an option of its own (adapter.dropout).
    model.eval()
    while step < total_steps:
        epoch = step // steps_per_epoch
        loader.set_epoch(epoch)
        skip = (step % steps_per_epoch) * o["grad_accum"]
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                loss = loss_of(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_([parameters[n] for n in trainable], o["max_grad_norm"])
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            accelerator.log({"loss": loss.item(), "lr": scheduler.get_last_lr()[0]}, step=step)
            if accelerator.is_main_process:
                with open(out / "train_log.jsonl", "a") as f:
                    f.write(json.dumps({"step": step, "loss": loss.item()}) + "\n")
            end_of_epoch = step % steps_per_epoch == 0 or step >= total_steps
            if end_of_epoch and accelerator.is_main_process:
                result = evaluate_split(unwrapped, heldout, cfg["eval_batch_size"])
                accelerator.log({f"heldout/{k}": v for k, v in result.items()}, step=step)
                if selection_metric(result) > best:
                    best = selection_metric(result)
                    save("best", result)
                accelerator.print(f"step {step} (epoch {epoch + 1}): held-out {json.dumps(result)}")
                model.eval()
            stopping = cfg["stop_after_steps"] is not None and step >= cfg["stop_after_steps"]
            if step % cfg["checkpoint_every_steps"] == 0 or step >= total_steps or stopping:
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    write_checkpoint(out, step, best, unwrapped, optimizer, scheduler, calibration,
                                     cfg["keep_checkpoints"])
            if stopping and step < total_steps:
                bar.close()
                accelerator.end_training()
                accelerator.print(f"stopped at step {step} as asked; continue with --resume ({out / 'checkpoints'})")
                return out / "checkpoints" / f"step-{step}"
            if step >= total_steps or step % steps_per_epoch == 0:
                break
    bar.close()
    final = evaluate_split(unwrapped, heldout, cfg["eval_batch_size"]) if accelerator.is_main_process else {}
    training_summary["train_seconds"] = round(time.perf_counter() - started, 2)
    save("final", final)
    accelerator.end_training()
    accelerator.print(f"done: best adapter in {out / 'best'}, last in {out / 'final'}, logs in {out / 'logs'}; load "
                      f"with load_reward_model({cfg['base']['name']!r}, weights=..., adapter={str(out / 'best')!r})")
    return out / "best"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return add_training_arguments(parser, "configs/adapters/")


def main(argv=None) -> int:
    return training_main(argv, __doc__, "configs/adapters/", load_config, train, "adapter train")


if __name__ == "__main__":
    sys.exit(main())
