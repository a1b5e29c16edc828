"""Train RAHF with accelerate: one straight loop, its options in a YAML file.

    accelerate launch -m richfeedback.reward_models.rahf.train --config configs/rahf/shapes.yaml
    richfeedback rahf train --config configs/rahf/shapes.yaml [--resume] [--set optim.lr=1e-4 ...]
    # two processes on CPU (tests the distributed path; no speed-up on 2 cores):
    accelerate launch --multi_gpu --num_processes 2 -m richfeedback.reward_models.rahf.train --config ...

Loss: heatmap MSE + score MSE + teacher-forced cross-entropy of the marked prompt (padding ignored), each weighted
(and, on ShapesWorld data, optionally the training-only losses of an object probe: `loss_weights.object_centres`,
`object_attributes`, `patch_shapes`).
AdamW with warm-up then cosine decay per step; gradient accumulation; mixed precision; checkpoints every N steps
(written atomically) and `--resume` from the latest; the dev split is evaluated after each epoch with the paper's
metrics, and the best model by the reference's selection rule is kept in `OUTPUT/best` (a `from_pretrained`
folder with its tokenizer); `OUTPUT/final` is the last. Tensorboard logs are in `OUTPUT/logs`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...training_utils import latest_checkpoint, load_config as load_yaml_config, lr_factor, save_atomically
from ...training_utils import add_training_arguments, training_main
from ...training_utils import save_checkpoint as save_training_state
from ...shapesworld.scene import COLORS, SHAPES
from .configuration import HEATMAP_NAMES, SCORE_NAMES, RAHFConfig
from .modeling import RAHFModel, add_sincos_position_embeddings, grow_encoder, with_variant

DEFAULTS = {
    "seed": 0,
    "output_dir": "runs/rahf",
    # encoder_layers: deepen the T5 encoder of the `init` model to this many blocks, the new ones starting as the
    # identity (modeling.grow_encoder); None keeps the model's own depth.
    # add_sincos_positions: add this multiple of a fixed 2-D sine-cosine table to the ViT's position embeddings once,
    # when the model is built (modeling.add_sincos_position_embeddings; for ViTs trained from scratch); None: no.
    "model": {"size": "shapes", "variant": "multi_head", "init": None, "encoder_layers": None,
              "add_sincos_positions": None},
    "data": {"path": None, "train_split": "train", "dev_split": "dev", "num_workers": 0, "max_dev_examples": None,
             # more datasets in the same schema whose train_split is appended to the training data (the first
             # extra_max_examples of each, if set), e.g. the synthetic dataset beside feedback on generated images
             "extra_paths": [], "extra_max_examples": None,
             # [train, dev, test]: the ShapesWorld dataset scripts/train_embedded_rahf.py makes at `path` if missing
             "make_sizes": None,
             # each training example whose labeled prompt marks a misaligned word appears this many times per epoch
             # (1: once, as the rest). A few percent of the words are marked, so their examples are worth repeating.
             "repeat_misaligned": 1,
             # {word: N}: an example whose labeled prompt marks one of these words appears N times per epoch (the
             # largest N of its marked words, if more than repeat_misaligned): for the kinds of mistakes a model
             # misses most (e.g. position words); {} none
             "repeat_marked_words": {}},
    "optim": {"lr": 3.0e-4, "decoder_lr_scale": 1.0, "weight_decay": 2.0e-3, "epochs": 10, "batch_size": 32,
              "grad_accum": 1, "warmup_steps": 100, "min_lr_ratio": 0.05, "max_grad_norm": 1.0, "max_steps": None},
    # marked_tokens: the weight, inside the sequence loss, of the target tokens that mark a word misaligned (the "_0"
    # suffix's tokens). They are a few percent of the target tokens (the rest copy the prompt), so the plain mean
    # (1.0, the reference) spends almost all of the sequence loss on copying.
    # object_centres, object_attributes: the weights of training-only losses (not in the paper; 0 = off): linear
    # probes on each fused text token predict where the object its phrase names is drawn (MSE), and what shape and
    # colour it was drawn with (cross-entropy) (ShapesWorld data only; ObjectProbe). The sequence loss alone asks the
    # encoder to bind a word to its object through a few marked words; these ask it on every word of every phrase.
    # The probe is dropped when the model is saved. object_attribute_changes: inside the attribute loss, the weight of
    # the tokens whose phrase's object was drawn with another shape or colour than the phrase names (on the others
    # the prompt alone gives the answer), as marked_tokens for the sequence loss. patch_shapes: the weight of a third
    # probe loss, on the fused image patch tokens: the shape drawn on each patch, or background.
    "loss_weights": {"heatmap": 1.0, "score": 1.0, "seq": 1.0, "marked_tokens": 1.0, "object_centres": 0.0,
                     "object_attributes": 0.0, "object_attribute_changes": 1.0, "patch_shapes": 0.0},
    # "mse" as the reference. "bce" (binary cross-entropy on the same [0, 1] maps) keeps a useful gradient where a
    # sigmoid output sits near 0 over mostly-empty maps, which MSE loses; models trained from scratch need it.
    "heatmap_loss": "mse",
    "mixed_precision": "no",
    "checkpoint_every_steps": 200,
    "stop_after_steps": None,  # checkpoint and exit at this step (time-sliced or preemptible jobs); --resume goes on
    "keep_checkpoints": 2,
    "eval_generate": True,
}


def load_config(path: Optional[str], sets: list[str] = ()) -> dict:
    return load_yaml_config(path, DEFAULTS, sets, examples="configs/rahf/")


def build_model(cfg: dict):
    from .checkpoint import load_public_checkpoint
    from .processing import RAHFProcessor, load_tokenizer

    init = cfg["model"].get("init")
    if init and Path(init).is_dir():
        # a multi-head model can start the augmented-prompt variant (shared weights copied; see with_variant)
        model = with_variant(RAHFModel.from_pretrained(init), cfg["model"]["variant"])
        tokenizer = load_tokenizer(model.config, init)
    elif init:
        model = load_public_checkpoint(init, size=cfg["model"]["size"])
        tokenizer = load_tokenizer(model.config)
    else:
        model = RAHFModel(RAHFConfig.from_size(cfg["model"]["size"], variant=cfg["model"]["variant"]))
        tokenizer = load_tokenizer(model.config)
    if len(tokenizer) > model.config.t5["vocab_size"]:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's T5 only {model.config.t5['vocab_size']}")
    if cfg["model"].get("encoder_layers"):
        grow_encoder(model, int(cfg["model"]["encoder_layers"]))
    if cfg["model"].get("add_sincos_positions"):
        add_sincos_position_embeddings(model, float(cfg["model"]["add_sincos_positions"]))
    model.vit.pooler.requires_grad_(False)  # unused by RAHF, as in the reference
    return model, RAHFProcessor(tokenizer, model.config)


def marker_token_ids(tokenizer) -> list[int]:
    """The token ids that marking a word misaligned adds to it, sorted: the ones the sequence loss can weight."""
    from .processing import mark_token_ids

    return sorted(set(mark_token_ids(tokenizer)))


def sequence_loss(output, labels: torch.Tensor, marker_ids: list[int], marked_weight: float) -> torch.Tensor:
    """Teacher-forced cross-entropy over the target tokens (padding, -100, ignored), the marker tokens weighted
    `marked_weight` and every other token 1; with weight 1 it is the model's own `seq_loss`."""
    if marked_weight == 1.0:
        return output.seq_loss
    per_token = F.cross_entropy(output.seq_logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
    is_marker = torch.isin(labels, torch.tensor(marker_ids, device=labels.device))
    weight = torch.where(is_marker, marked_weight, 1.0) * (labels != -100)
    return (per_token * weight).sum() / weight.sum()


def repeat_misaligned(split, times: int, word_times: Optional[dict] = None):
    """`split` with every example whose `labeled_prompt` marks a misaligned word repeated `times` times in all, and
    one that marks a word of `word_times` (e.g. {"left": 6}) as many times as the largest such entry, if larger."""
    from .processing import MISALIGNED_SUFFIX, marked_word_flags

    word_times = {str(w): int(n) for w, n in (word_times or {}).items()}
    if times < 1 or any(n < 1 for n in word_times.values()):
        raise ValueError(f"data.repeat_misaligned and data.repeat_marked_words must be at least 1, got {times} and "
                         f"{word_times}")
    if times == 1 and all(n == 1 for n in word_times.values()):
        return split

    def copies_of(text: str) -> int:
        marked = [w.removesuffix(MISALIGNED_SUFFIX) for w, f in zip(text.split(), marked_word_flags(text)) if f]
        return max([times, *(word_times.get(w, 1) for w in marked)]) if marked else 1

    copies = [copies_of(text) for text in split["labeled_prompt"]]
    order = list(range(len(split)))
    for k in range(2, max(copies, default=1) + 1):  # every second copy first, then every third, ...
        order += [i for i, n in enumerate(copies) if n >= k]
    return split.select(order)


# The object probe's losses, each named by its loss weight (and the ObjectProbe part it needs, in this order).
PROBE_LOSSES = ("object_centres", "object_attributes", "patch_shapes")


class ObjectProbe(torch.nn.Module):
    """Training only: linear probes on each fused text token (d_model) for the object its phrase names: where it is
    drawn, (x, y) in [0, 1] (`centres`), and what shape and colour it was drawn with, as logits over SHAPES and
    COLORS (`attributes`); and on each fused image patch token, the shape drawn there, as logits over SHAPES and
    background (`patch_shapes`).

    Linear, so what they read must already be in the encoder's tokens: their losses make the encoder carry, on each
    word of a phrase, the place and look of that phrase's object in the image, the binding that judging a position,
    shape or colour word needs, and on each patch what is drawn there."""

    def __init__(self, d_model: int, centres: bool = True, attributes: bool = False, patch_shapes: bool = False):
        super().__init__()
        if not (centres or attributes or patch_shapes):
            raise ValueError("an ObjectProbe predicts centres, attributes, patch shapes or several")
        # made in this order so that a centres-only probe starts from the same draws whether or not the others exist
        self.centre = torch.nn.Linear(d_model, 2) if centres else None
        self.shape = torch.nn.Linear(d_model, len(SHAPES)) if attributes else None
        self.colour = torch.nn.Linear(d_model, len(COLORS)) if attributes else None
        self.patch_shape = torch.nn.Linear(d_model, len(SHAPES) + 1) if patch_shapes else None

    def forward(self, text_hidden: torch.Tensor, image_hidden: Optional[torch.Tensor] = None
                ) -> dict[str, torch.Tensor]:
        hidden = text_hidden.float()
        out = {}
        if self.centre is not None:
            out["centres"] = torch.sigmoid(self.centre(hidden))
        if self.shape is not None:
            out["shape_logits"], out["colour_logits"] = self.shape(hidden), self.colour(hidden)
        if self.patch_shape is not None:
            out["patch_shape_logits"] = self.patch_shape(image_hidden.float())
        return out


def object_probe_losses(probe: ObjectProbe, output, batch: dict, changed_weight: float = 1.0
                        ) -> dict[str, torch.Tensor]:
    """Per part of the probe, its loss over the tokens that have a target (others are NaN): "object_centres", the
    mean squared error of (x, y) against `target_token_centres` (B, L, 2); "object_attributes", the mean of the shape
    and colour cross-entropies against `target_token_attributes` (B, L, 4: drawn shape, drawn colour, named shape,
    named colour; `scene.word_object_attributes`), each a weighted mean over tokens where an attribute drawn other
    than named weighs `changed_weight`: on every other token the prompt alone gives the answer; "patch_shapes", the
    cross-entropy of each image patch token's shape (or background) against `target_patch_shapes` (B, g*g), its
    means over object patches and over background patches weighing half each."""
    predicted = probe(output.text_hidden_states, output.image_hidden_states)
    losses = {}
    if "centres" in predicted:
        targets = batch["target_token_centres"]
        valid = ~torch.isnan(targets[..., 0])
        # a batch of plural groups only: still a graph through the probe, as DDP expects
        losses["object_centres"] = (F.mse_loss(predicted["centres"][valid], targets[valid]) if valid.any()
                                    else predicted["centres"].sum() * 0.0)
    if "shape_logits" in predicted:
        targets = batch["target_token_attributes"]
        valid = ~torch.isnan(targets[..., 0])
        if valid.any():
            classes = targets[valid].long()
            parts = []
            for i, logits in enumerate((predicted["shape_logits"][valid], predicted["colour_logits"][valid])):
                drawn, named = classes[:, i], classes[:, i + 2]
                weight = 1.0 + (changed_weight - 1.0) * (drawn != named).float()
                parts.append((F.cross_entropy(logits, drawn, reduction="none") * weight).sum() / weight.sum())
            losses["object_attributes"] = (parts[0] + parts[1]) / 2
        else:
            losses["object_attributes"] = (predicted["shape_logits"].sum() + predicted["colour_logits"].sum()) * 0.0
    if "patch_shape_logits" in predicted:
        logits = predicted["patch_shape_logits"]
        logits, targets = logits.reshape(-1, logits.shape[-1]), batch["target_patch_shapes"].reshape(-1).long()
        each = F.cross_entropy(logits, targets, reduction="none")
        # most patches are background: the mean over object patches and the mean over background weigh half each
        on_object = targets < len(SHAPES)
        losses["patch_shapes"] = sum(each[part].mean() if part.any() else each.sum() * 0.0
                                     for part in (on_object, ~on_object)) / 2
    return losses


def compute_loss(output, batch: dict, weights: dict, heatmap_loss: str = "mse",
                 marker_ids: Optional[list[int]] = None, probe: Optional[ObjectProbe] = None
                 ) -> tuple[torch.Tensor, dict]:
    """The weighted sum of the heatmap, score and sequence losses (and the object probe's when `probe` is given),
    and each part (the sequence part unweighted)."""
    if heatmap_loss not in ("mse", "bce"):
        raise ValueError(f"heatmap_loss must be 'mse' or 'bce', got {heatmap_loss!r}")

    def map_loss(predicted, target):
        if heatmap_loss == "mse":
            return F.mse_loss(predicted, target)
        return F.binary_cross_entropy(predicted.clamp(1e-6, 1 - 1e-6), target)  # sigmoid outputs can round to 0 or 1

    heatmap = sum(map_loss(output.heatmaps[n].float(), batch["target_heatmaps"][:, i]) for i, n in enumerate(HEATMAP_NAMES))
    score = sum(F.mse_loss(output.scores[n].float(), batch["target_scores"][:, i]) for i, n in enumerate(SCORE_NAMES))
    marked_weight = float(weights.get("marked_tokens", 1.0))
    if marked_weight != 1.0 and marker_ids is None:
        raise ValueError("loss_weights.marked_tokens needs the marker token ids (marker_token_ids(tokenizer))")
    seq = sequence_loss(output, batch["labels"], marker_ids or [], marked_weight)
    total = weights["heatmap"] * heatmap + weights["score"] * score + weights["seq"] * seq
    parts = {"loss/heatmap": heatmap.item(), "loss/score": score.item(), "loss/seq": output.seq_loss.item()}
    if probe is not None:
        changed_weight = float(weights.get("object_attribute_changes", 1.0))
        for name, loss in object_probe_losses(probe, output, batch, changed_weight).items():
            total = total + float(weights[name]) * loss
            parts[f"loss/{name}"] = loss.item()
    return total, {**parts, "loss/total": total.item()}


def train(cfg: dict, resume: bool = False, cpu: bool = False) -> Path:
    import datasets
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from torch.utils.data import DataLoader

    from ...shapesworld.dataset import load_shapesworld_dataset
    from .data import Collator, RichFeedbackDataset, check_columns, model_inputs
    from .evaluate import compute_metrics, predict_split

    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    o = cfg["optim"]
    accelerator = Accelerator(
        cpu=cpu or not torch.cuda.is_available(), mixed_precision=cfg["mixed_precision"],
        gradient_accumulation_steps=o["grad_accum"], log_with="tensorboard", project_dir=str(out / "logs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(cfg["seed"])
    if not cfg["data"]["path"]:
        raise ValueError("set data.path to a dataset folder (richfeedback shapesworld make-dataset --out DIR)")
    data = load_shapesworld_dataset(cfg["data"]["path"])
    for split in (cfg["data"]["train_split"], cfg["data"]["dev_split"]):
        if split not in data:
            raise ValueError(f"{cfg['data']['path']} has no split {split!r}; it has {list(data)}")
        check_columns(data[split], f"{cfg['data']['path']}[{split}]")
    dev = data[cfg["data"]["dev_split"]]
    if cfg["data"]["max_dev_examples"]:
        dev = dev.select(range(min(len(dev), cfg["data"]["max_dev_examples"])))

    train_data = data[cfg["data"]["train_split"]]
    for extra_path in cfg["data"]["extra_paths"] or []:
        extra = load_shapesworld_dataset(extra_path)
        if cfg["data"]["train_split"] not in extra:
            raise ValueError(f"{extra_path} has no split {cfg['data']['train_split']!r}; it has {list(extra)}")
        extra = extra[cfg["data"]["train_split"]]
        if extra.features != train_data.features:
            raise ValueError(f"{extra_path} has other columns than {cfg['data']['path']}; data.extra_paths must "
                             "have the same schema (e.g. ShapesWorld datasets from make-dataset or generated feedback)")
        if cfg["data"]["extra_max_examples"]:
            extra = extra.select(range(min(len(extra), cfg["data"]["extra_max_examples"])))
        train_data = datasets.concatenate_datasets([train_data, extra])
    train_data = repeat_misaligned(train_data, int(cfg["data"]["repeat_misaligned"]),
                                   cfg["data"].get("repeat_marked_words"))

    model, processor = build_model(cfg)
    marker_ids = marker_token_ids(processor.tokenizer) if cfg["loss_weights"].get("marked_tokens", 1.0) != 1.0 \
        else None
    probe_parts = [bool(float(cfg["loss_weights"].get(k) or 0.0)) for k in PROBE_LOSSES]
    probe = ObjectProbe(model.config.t5["d_model"], *probe_parts) if any(probe_parts) else None
    loader = DataLoader(RichFeedbackDataset(train_data, processor, object_targets=probe is not None),
                        batch_size=o["batch_size"],
                        shuffle=True, drop_last=True, collate_fn=Collator(processor),
                        num_workers=cfg["data"]["num_workers"], generator=torch.Generator().manual_seed(cfg["seed"]))
    # The loader is prepared first: under several processes each gets a shard, and an epoch is that many batches.
    loader = accelerator.prepare(loader)
    decoder = [p for n, p in model.named_parameters() if n.startswith("t5.decoder.") and p.requires_grad]
    decoder_ids = {id(p) for p in decoder}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in decoder_ids]
    if probe is not None:
        others += list(probe.parameters())
    optimizer = torch.optim.AdamW([{"params": others, "lr": o["lr"]},
                                   {"params": decoder, "lr": o["lr"] * o["decoder_lr_scale"]}],
                                  lr=o["lr"], weight_decay=o["weight_decay"])
    steps_per_epoch = len(loader) // o["grad_accum"]
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has {len(loader.dataset)} examples: fewer than one optimizer step of "
                         f"{o['batch_size']} x {o['grad_accum']} accumulation x {accelerator.num_processes} processes")
    total_steps = o["max_steps"] or steps_per_epoch * o["epochs"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, o["warmup_steps"], o["min_lr_ratio"]))
    # The scheduler is stepped by hand once per optimizer step (a prepared one would step once per process).
    if probe is None:
        model, optimizer = accelerator.prepare(model, optimizer)
    else:  # the probe is a second model to accelerate: synced under DDP, saved in checkpoints
        model, optimizer, probe = accelerator.prepare(model, optimizer, probe)
    accelerator.register_for_checkpointing(scheduler)
    accelerator.init_trackers("rahf", config={"config": json.dumps(cfg)})
    if accelerator.is_main_process:
        (out / "distributed.txt").write_text(f"{accelerator.distributed_type} processes={accelerator.num_processes}\n")

    step, best = 0, -float("inf")
    if resume:
        checkpoint = latest_checkpoint(out)
        if checkpoint is None:
            accelerator.print(f"no checkpoint in {out / 'checkpoints'}: starting from scratch")
        elif json.loads((checkpoint / "trainer_state.json").read_text())["step"] >= total_steps and (out / "best").exists():
            accelerator.print(f"{out} finished training already ({checkpoint.name}); best model in {out / 'best'}")
            accelerator.end_training()
            return out / "best"
        else:
            accelerator.load_state(str(checkpoint))
            state = json.loads((checkpoint / "trainer_state.json").read_text())
            step, best = state["step"], state["best"]
            accelerator.print(f"resumed from {checkpoint} at step {step}")

    def save_checkpoint():
        save_training_state(accelerator, out, step, {"best": best}, cfg["keep_checkpoints"])

    def save_model(name: str):
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)

            def write(tmp):
                unwrapped.save_pretrained(tmp)
                processor.tokenizer.save_pretrained(tmp / "tokenizer")
            save_atomically(out / name, write)

    bar = tqdm(total=total_steps, initial=step, desc="rahf train", disable=not accelerator.is_local_main_process)
    model.train()
    while step < total_steps:
        epoch = step // steps_per_epoch
        loader.set_epoch(epoch)
        skip = (step % steps_per_epoch) * o["grad_accum"]
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        step_at_epoch_start = step
        for batch in epoch_loader:
            with accelerator.accumulate(*[m for m in (model, probe) if m is not None]):
                output = model(**model_inputs(batch))
                loss, parts = compute_loss(output, batch, cfg["loss_weights"], cfg["heatmap_loss"], marker_ids,
                                           probe)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), o["max_grad_norm"])
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss/total']:.4f}")
            accelerator.log({**parts, "lr": scheduler.get_last_lr()[0]}, step=step)
            if accelerator.is_main_process:
                with open(out / "train_log.jsonl", "a") as f:
                    f.write(json.dumps({"step": step, **parts}) + "\n")
            stopping = cfg["stop_after_steps"] is not None and step >= cfg["stop_after_steps"]
            if step % cfg["checkpoint_every_steps"] == 0 or step == total_steps or stopping:
                save_checkpoint()
            if stopping:
                bar.close()
                accelerator.end_training()
                accelerator.print(f"stopped at step {step} as asked; continue with --resume ({out / 'checkpoints'})")
                return out / "checkpoints" / f"step-{step}"
            if step >= total_steps or step % steps_per_epoch == 0:
                break
        if step == step_at_epoch_start:
            raise RuntimeError(f"an epoch made no optimizer step (step {step} of {total_steps}); please report this")
        if step % steps_per_epoch == 0 or step >= total_steps:
            # dev evaluation after each epoch (and at the end), on the main process
            if accelerator.is_main_process:
                result = compute_metrics(predict_split(accelerator.unwrap_model(model), processor, dev,
                                                       generate=cfg["eval_generate"], device=accelerator.device))
                accelerator.log({f"dev/{k}": v for k, v in result.items() if isinstance(v, float)}, step=step)
                if result["avg_metric"] > best:
                    best = result["avg_metric"]
                    save_model("best")
                    (out / "best_metrics.json").write_text(json.dumps({"step": step, **result}, indent=2))
                accelerator.print(f"step {step} (epoch {epoch + 1}): dev avg_metric {result['avg_metric']:.4f} "
                                  f"(best {best:.4f})")
            model.train()
            accelerator.wait_for_everyone()
    bar.close()
    save_model("final")
    accelerator.end_training()
    accelerator.print(f"done: best model in {out / 'best'}, last in {out / 'final'}, logs in {out / 'logs'}")
    return out / "best"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return add_training_arguments(parser, "configs/rahf/")


def main(argv=None) -> int:
    return training_main(argv, __doc__, "configs/rahf/", load_config, train, "rahf train")


if __name__ == "__main__":
    sys.exit(main())
