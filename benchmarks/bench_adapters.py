"""Reward adapters on ShapesWorld: held-out preference accuracy of each base model and of its trained adapter.

What is compared, per family (PickScore, HPSv2.1, ImageReward, LAION aesthetic, CLIPScore):

- The base. No real weights can be downloaded here, so each base is a *reduced-size backbone in its family's
  official file layout* (2 layers, width 64, 64 px input with 8 px patches), seeded, then pretrained here for a few
  CPU minutes on clean ShapesWorld renders of training prompts with their captions:
  - one transformers CLIP, trained with CLIP's contrastive loss (`CLIPModel(..., return_loss=True)`), shared by
    PickScore, CLIPScore and the aesthetic predictor (whose MLP head is then fitted by MSE to the simulated raters'
    aesthetics scores of a ShapesWorld rich-feedback sample, as the reference fits it to AVA ratings);
  - an open_clip model for HPS, with open_clip's `ClipLoss`;
  - a BLIP ViT + BERT for ImageReward, with the same InfoNCE over the B x B matrix of its scores (image-text
    matching).
  Each base so knows prompt alignment on clean images and has never been told that rendering artifacts are bad:
  it stands for a public reward model meeting feedback it never saw.
- The adapter: `richfeedback.reward_models.train_adapter` on a preferences file of oracle-judged ShapesWorld pairs
  (four renders per prompt in one layout that differ one thing at a time: clean, misaligned, damaged by artifacts, and
  the misaligned scene with the same artifacts; every pair), loaded back through `load_reward_model(..., adapter=DIR)`
  for the evaluation. Recipe: "lora+patch_head" for every family: LoRA rank 16 on the family's default targets (every
  attention and MLP linear of both towers and the patch embedding; for open_clip, peft's MultiheadAttention layer)
  and a patch head (hidden width 64) over the image tower's final tokens; batches of 8 prompts with all their pairs
  (`data.group_by_prompt`: each render encoded once per step), AdamW lr 2e-3, 20 warm-up steps, cosine decay over
  ADAPTER_EPOCHS epochs (ImageReward: 10); the aesthetic predictor's ranking loss at scale 10 (see LOSS_SCALE_OF);
  the adapter kept is the one with the best accuracy on the trainer's own held-out split (20% of the training file's
  prompts), never on the evaluation pairs below.
- Evaluation: preference accuracy on held-out pairs (prompts that neither the pretraining nor the adapter training
  saw; ties left out), judged by the oracle (more prompt words satisfied, then smaller artifact area), with a 95%
  bootstrap interval over prompts, and split by what decides the pair (the same prompt words satisfied: artifacts;
  otherwise alignment); trainable parameters and the adapter's training time on the CPU (one thread, shared machine:
  compare times within one run only). Target (issue 9): every adapter 10 points above its base.

Where this stands (full run, 2026-11-22, 951 s on one thread; 3,514 held-out pairs over 389 prompts): the target is
met by every family. Held-out accuracy, base -> adapter (gain; on artifact-decided / alignment-decided pairs):
PickScore 0.749 -> 0.857 (+10.8; 0.56 -> 0.92 / 0.84 -> 0.82), HPSv2.1 0.662 -> 0.794 (+13.1; 0.57 -> 0.82 /
0.71 -> 0.78), ImageReward 0.567 -> 0.802 (+23.5; 0.54 -> 0.93 / 0.58 -> 0.74), aesthetic 0.452 -> 0.672 (+22.0;
0.42 -> 0.94 / 0.47 -> 0.54), CLIPScore 0.669 -> 0.840 (+17.1; 0.53 -> 0.92 / 0.74 -> 0.80). Every adapter's
interval lies above its base's.

How it got here (each step measured on the trainer's own held-out split unless said):
- The pairs. Until 2026-11-22 the fourth render ("both") drew its own misalignment and its own artifacts, so the
  misaligned-vs-both pairs, a sixth of all pairs and nearly half of those the oracle decides by artifacts, differed
  in two things at once: the artifacts, and *which* word was wrong (the oracle only counts them). Adapters judged
  those at 0.59-0.63 while they judged clean-vs-damaged at 0.88-0.95. "Both" is now the misaligned scene with the
  damaged render's artifact draw (`shapesworld_variants`, tested). That changes training and evaluation pairs alike; the
  last full run on the old pairs (1,000 evaluation prompts drawn) read: PickScore +5.3, HPSv2.1 +3.6, ImageReward
  +6.5, aesthetic (LoRA + MLP head) +4.3, CLIPScore +11.3.
- The patch head. On the new pairs, LoRA alone / LoRA + patch head: PickScore 0.831 / 0.844, HPSv2.1 0.785 / 0.803,
  CLIPScore 0.825 / 0.843, ImageReward 0.731 / 0.714 (6 epochs; 0.760 with the patch head at 10), aesthetic (LoRA +
  MLP head) 0.520 / 0.578. On the old pairs it moved PickScore's clean-vs-damaged pairs from 0.88 to 0.95 but the
  overall number little (0.801 -> 0.804), because the misaligned-vs-both pairs stayed unreadable.
- A first full run with the new pairs and the patch head everywhere (6 epochs, loss scale auto, 1,000 evaluation
  prompts drawn: 1,151 pairs over 152 prompts) gave PickScore +10.9, HPSv2.1 +13.4, ImageReward +7.0, aesthetic +7.6,
  CLIPScore +19.8. ImageReward's 10 epochs and the aesthetic loss scale were then chosen on the split (see above), and
  the evaluation set was drawn from 3,000 prompts for tighter intervals (+-2 instead of +-4 points): the numbers
  above are that second run.
- Earlier findings that still hold: loss.scale "auto" (HPS's 100 * cos and CLIPScore's 2.5 * cos at the backbone's
  learned temperature, ~15 here, not a released CLIP's 100); LoRA on every block linear and the patch embedding rather
  than attention only; several epochs of prompt-grouped batches rather than one pass of pairs; a learning rate of
  5e-3 or more diverges, 1e-3 matches 2e-3; batches of 4 prompts are noisier than 8.
What is left: alignment. A 2-layer CLIP's pooled cosine barely learns colour-shape binding, positions or counts from
these pairs (PickScore's alignment-decided pairs even drop 2 points while it learns artifacts), and a prompt-free
aesthetic predictor cannot judge them at all (its ceiling here is about 0.67, which it reaches). Real backbones
(CLIP ViT-H/L, BLIP ViT-L) already represent blur, noise and smears better than these 2-layer stand-ins.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import torch

from richfeedback.reward_models import load_reward_model
from richfeedback.reward_models import tiny_checkpoints as tiny
from richfeedback.reward_models.adapters.evaluate import preference_accuracy
from richfeedback.reward_models.adapters.preferences import (prompt_is_heldout, shapesworld_pairs,
                                                             write_shapesworld_pairs)
from richfeedback.reward_models.train_adapter import load_config, train

HELDOUT_FRACTION = 0.2
SEED = 0
FAMILIES = ("pickscore", "hpsv2.1", "imagereward", "aesthetic", "clipscore")
ADAPTER_KIND = "lora+patch_head"  # every family
ADAPTER_LR = 2e-3
ADAPTER_RANK = 16
ADAPTER_EPOCHS = 6  # over prompt groups: each of a prompt's four renders encoded once per step for its six pairs
# Per-family changes, chosen on the trainer's own held-out split (never on the evaluation pairs):
# - ImageReward's BLIP (the text tower cross-attends the image) is still learning after 6 epochs: 0.714 at 6, 0.760
#   at 10 on the split.
# - The reduced aesthetic predictor's MLP was fitted to 0-1 ratings (the released one to 1-10 ratings): its scores
#   differ by ~0.015 within a pair, so the ranking loss sees near-zero logits. loss.scale 10 puts them on the
#   released model's scale: 0.578 -> 0.666 on the split.
ADAPTER_EPOCHS_OF = {"imagereward": 10}
LOSS_SCALE_OF = {"aesthetic": 10.0}
ADAPTER_PROMPTS_PER_BATCH = 8


# The reduced backbones: 2 layers, 64 px input with 8 px patches (ShapesWorld's own resolution, no upsampling).
IMAGE_SIZE, PATCH = 64, 8
CLIP_TEXT = dict(vocab_size=tiny.CLIP_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                 pad_token_id=49407)
CLIP_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   image_size=IMAGE_SIZE, patch_size=PATCH)
OPEN_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 64, "head_width": 16, "patch_size": PATCH},
             "text_cfg": {"context_length": 77, "vocab_size": tiny.CLIP_VOCAB, "width": 64, "heads": 4, "layers": 2}}


def write_clip_folder(folder: Path, quick_gelu: bool, processor: bool = True) -> Path:
    from transformers import CLIPConfig, CLIPModel

    from richfeedback.tokenizers import write_clip_tokenizer_files

    act = "quick_gelu" if quick_gelu else "gelu"
    torch.manual_seed(SEED)
    config = CLIPConfig(text_config={**CLIP_TEXT, "hidden_act": act}, vision_config={**CLIP_VISION, "hidden_act": act},
                        projection_dim=32)
    CLIPModel(config).save_pretrained(folder)
    if processor:
        write_clip_tokenizer_files(folder)
        (folder / "preprocessor_config.json").write_text(json.dumps(
            {**tiny.LAION_CLIP_PREPROCESSOR, "crop_size": IMAGE_SIZE, "size": IMAGE_SIZE}))
    return folder


def write_reduced_base(name: str, folder: Path) -> tuple[str, dict]:
    """(weights, load options) of a reduced backbone in `name`'s official layout, seeded random init."""
    folder.mkdir(parents=True, exist_ok=True)
    if name in ("pickscore", "clipscore"):
        return str(write_clip_folder(folder, quick_gelu=name == "clipscore")), {}
    if name == "hpsv2.1":
        from richfeedback.reward_models.hps import build_open_clip

        torch.manual_seed(SEED)
        torch.save({"state_dict": build_open_clip(OPEN_CLIP).state_dict()}, folder / "HPS_v2.1_compressed.pt")
        return str(folder / "HPS_v2.1_compressed.pt"), {"config": json.loads(json.dumps(OPEN_CLIP))}
    if name == "imagereward":
        from dataclasses import replace

        from richfeedback.reward_models.imagereward import ImageReward

        path, config = tiny.write_tiny_imagereward(folder)  # vocab.txt, med_config.json and the official extra keys
        config = replace(config, image_size=IMAGE_SIZE, patch_size=PATCH)
        torch.manual_seed(SEED)
        state = torch.load(path, weights_only=True)
        state.update(ImageReward(config, tokenizer=None).state_dict())
        torch.save(state, path)
        return str(path), {"config": config}
    if name == "aesthetic":
        from richfeedback.reward_models.aesthetic import MLP_FILE
        from richfeedback.reward_models.heads import LinearMLPHead

        write_clip_folder(folder / "clip", quick_gelu=True, processor=False)
        torch.save(OrderedDict(LinearMLPHead(32).state_dict()), folder / MLP_FILE)
        return str(folder / MLP_FILE), {}
    raise ValueError(name)


def clean_batches(transform, batch_size: int, seed: int):
    """Endless batches of (prompts, pixels): distinct training prompts, each with a clean render."""
    import numpy as np

    from richfeedback.shapesworld.render import render
    from richfeedback.shapesworld.scene import sample_scene

    rng = np.random.default_rng(seed)
    while True:
        prompts, pixels = [], []
        while len(prompts) < batch_size:
            scene = sample_scene(rng)
            text = scene.prompt.text
            if text in prompts or prompt_is_heldout(text, HELDOUT_FRACTION, SEED):
                continue
            prompts.append(text)
            pixels.append(transform.from_pixels(render(scene)))
        yield prompts, torch.stack(pixels)


def contrastive_loss(name: str, model, prompts: list[str], pixels: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over a batch of (prompt, clean render) pairs, with each library's own loss; for
    ImageReward (no dual encoder) the same loss over the B x B matrix of its scores, as BLIP's image-text matching."""
    if name in ("pickscore", "aesthetic"):  # the shared transformers CLIP
        tokens = model.tokenizer(prompts, padding=True, return_tensors="pt")
        return model.clip(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                          pixel_values=pixels, return_loss=True).loss
    if name == "hpsv2.1":
        from open_clip.loss import ClipLoss

        image, text, logit_scale = model.clip(pixels, model.tokenizer(prompts))[:3]
        return ClipLoss()(image, text, logit_scale)
    n = len(prompts)
    scores = model([p for p in prompts for _ in range(n)], pixels.repeat(n, 1, 1, 1)).view(n, n)  # [prompt, image]
    target = torch.arange(n)
    return 0.5 * (torch.nn.functional.cross_entropy(scores, target) +
                  torch.nn.functional.cross_entropy(scores.t(), target))


def pretrain_backbone(name: str, weights: str, options: dict, steps: int, lr: float = 1e-3) -> float:
    """Train every weight of a reduced base contrastively on clean renders of training prompts; returns seconds."""
    model = load_reward_model(name, weights, **options)
    model.requires_grad_(True)
    model.eval()  # no dropout: a short, deterministic run
    batch_size = 12 if name == "imagereward" else 64  # ImageReward scores all B x B pairs
    batches = clean_batches(model.transform, batch_size, seed=SEED + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    started = time.perf_counter()
    for _ in range(steps):
        prompts, pixels = next(batches)
        loss = contrastive_loss(name, model, prompts, pixels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.requires_grad_(False)
    if name == "pickscore":
        model.clip.save_pretrained(weights)
    elif name == "hpsv2.1":
        torch.save({"state_dict": model.clip.state_dict()}, weights)
    else:
        state = torch.load(weights, weights_only=True)  # keeps the official keys the model does not hold
        state.update(model.state_dict())
        torch.save(state, weights)
    return time.perf_counter() - started


def fit_aesthetic_head(weights: str, n_examples: int, steps: int = 300) -> float:
    """The aesthetic predictor's own recipe: its MLP regressed (MSE) onto ratings, here the simulated raters'
    aesthetics scores of a ShapesWorld rich-feedback sample, on the frozen, L2-normalised CLIP embeddings."""
    from richfeedback.shapesworld.dataset import make_example

    started = time.perf_counter()
    model = load_reward_model("aesthetic", weights)
    examples = [make_example("train", i) for i in range(n_examples)]
    examples = [e for e in examples if not prompt_is_heldout(e["prompt"], HELDOUT_FRACTION, SEED)]
    with torch.no_grad():
        embeddings = model.embed(torch.stack([model.preprocess(e["image"].convert("RGB")) for e in examples]))
    targets = torch.tensor([e["aesthetics_score"] for e in examples], dtype=torch.float32)
    model.mlp.requires_grad_(True)
    model.mlp.train()
    optimizer = torch.optim.Adam(model.mlp.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model.mlp(embeddings), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(OrderedDict(model.mlp.state_dict()), weights)
    return time.perf_counter() - started


def make_bases(folder: Path, steps: int, aesthetic_examples: int) -> dict:
    """{family: (weights, options, seconds)}: one shared CLIP (PickScore, CLIPScore, the aesthetic backbone), an
    open_clip model for HPS and a BLIP+BERT model for ImageReward, each pretrained here as described above."""
    import shutil

    bases = {}
    clip_weights, _ = write_reduced_base("pickscore", folder / "clip")
    seconds = pretrain_backbone("pickscore", clip_weights, {}, steps)
    bases["pickscore"] = bases["clipscore"] = (clip_weights, {}, seconds)
    aesthetic_weights, _ = write_reduced_base("aesthetic", folder / "aesthetic")
    shutil.rmtree(folder / "aesthetic" / "clip")
    shutil.copytree(clip_weights, folder / "aesthetic" / "clip")
    bases["aesthetic"] = (aesthetic_weights, {}, seconds + fit_aesthetic_head(aesthetic_weights, aesthetic_examples))
    for name in ("hpsv2.1", "imagereward"):
        weights, options = write_reduced_base(name, folder / name)
        bases[name] = (weights, options, pretrain_backbone(name, weights, options, steps))
    return bases


def pair_deciders(pairs) -> list[str]:
    """Per pair, what the oracle decides it by: "artifacts" when both images satisfy the same prompt words (then the
    artifact area decides), "alignment" otherwise: where a gain comes from."""
    from richfeedback.reward_models.adapters.preferences import oracle_key

    words = {}
    for p in pairs:
        for image in (p.image_a, p.image_b):
            if id(image) not in words:
                words[id(image)] = oracle_key(p.prompt, image)[0]
    return ["artifacts" if words[id(p.image_a)] == words[id(p.image_b)] else "alignment" for p in pairs]


def run(quick: bool = False) -> dict:
    os.environ["TQDM_DISABLE"] = "1"  # a table, not progress bars, is this script's output
    torch.manual_seed(SEED)
    base_steps, adapter_prompts, adapter_epochs = (60, 600, 2) if quick else (150, 3000, ADAPTER_EPOCHS)
    n_eval_prompts = 300 if quick else 3000
    # held-out pairs: prompts hashed to the held-out side, which no training step below ever sees
    eval_pairs = [p for p in shapesworld_pairs(n_eval_prompts, seed=SEED + 100)
                  if prompt_is_heldout(p.prompt, HELDOUT_FRACTION, SEED)]
    decided_by = pair_deciders(eval_pairs)
    rows, details = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        bases = make_bases(Path(tmp) / "bases", base_steps, aesthetic_examples=300 if quick else 600)
        # one preferences file for every family (its held-out prompts are split off by the trainer)
        pairs_file = write_shapesworld_pairs(Path(tmp) / "pairs", adapter_prompts, seed=SEED)
        for name in FAMILIES:
            weights, options, base_seconds = bases[name]
            base = preference_accuracy(load_reward_model(name, weights, **options), eval_pairs, by=decided_by)
            out = Path(tmp) / "adapters" / name
            cfg = load_config(None, [])
            cfg.update(output_dir=str(out), seed=SEED)
            cfg["base"] = {"name": name, "weights": weights, "options": options}
            cfg["adapter"].update(kind=ADAPTER_KIND, r=ADAPTER_RANK, alpha=float(ADAPTER_RANK))
            cfg["data"].update(source="preferences", path=str(pairs_file), heldout_fraction=HELDOUT_FRACTION,
                               group_by_prompt=True)
            # "auto": HPS's 100 * cos and CLIPScore's 2.5 * cos at the backbone's temperature
            cfg["loss"]["scale"] = LOSS_SCALE_OF.get(name, "auto")
            epochs = adapter_epochs if quick else ADAPTER_EPOCHS_OF.get(name, adapter_epochs)
            cfg["optim"].update(epochs=epochs, batch_size=ADAPTER_PROMPTS_PER_BATCH, lr=ADAPTER_LR,
                                warmup_steps=20)
            cfg["checkpoint_every_steps"] = 10_000
            started = time.perf_counter()
            train(cfg, cpu=True)
            adapter_seconds = time.perf_counter() - started
            adapted = load_reward_model(name, weights, adapter=out / "best", **options)
            result = preference_accuracy(adapted, eval_pairs, by=decided_by)
            info = json.loads((out / "best" / "adapter_config.json").read_text())
            rows.append({
                "family": name, "adapter": ADAPTER_KIND,
                "base_acc": base["accuracy"], "base_ci95": f"[{base['ci_low']:.3f}, {base['ci_high']:.3f}]",
                "adapter_acc": result["accuracy"],
                "adapter_ci95": f"[{result['ci_low']:.3f}, {result['ci_high']:.3f}]",
                "gain_points": 100 * (result["accuracy"] - base["accuracy"]),
                "trainable_params": info["trainable_parameters"],
                "total_params": sum(p.numel() for p in adapted.parameters()),
                "adapter_train_s": round(adapter_seconds, 1), "base_pretrain_s": round(base_seconds, 1),
                "heldout_pairs": result["pairs"], "heldout_prompts": result["prompts"],
            })
            final = json.loads((out / "final" / "adapter_config.json").read_text())["training"]
            details[name] = {"base": base, "adapter": result,
                             "by_decider": {decider: {"pairs": counts["pairs"], "base": counts["accuracy"],
                                                      "adapter": result["by"][decider]["accuracy"]}
                                            for decider, counts in base["by"].items()},
                             "best_step": info["training"]["step"],
                             "final_step": final["step"], "heldout_split_best": info["training"]["heldout"],
                             "heldout_split_final": final["heldout"],
                             "lora_target_modules": (info.get("lora") or {}).get("target_modules"),
                             "head_parameters": info.get("head_parameters")}
            print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "details": details,
            "setup": {"base_pretrain_steps": base_steps, "adapter_train_prompts": adapter_prompts,
                      "adapter_epochs": adapter_epochs, "adapter_epochs_of": ADAPTER_EPOCHS_OF,
                      "loss_scale_of": LOSS_SCALE_OF, "adapter_lr": ADAPTER_LR, "lora_rank": ADAPTER_RANK,
                      "prompts_per_batch": ADAPTER_PROMPTS_PER_BATCH, "group_by_prompt": True,
                      "eval_prompts_drawn": n_eval_prompts, "threads": torch.get_num_threads(),
                      "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}}
