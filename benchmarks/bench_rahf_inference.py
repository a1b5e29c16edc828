"""Batched RAHF inference against the reference implementation's usage pattern, same weights and inputs, as a ratio.

Reference pattern (youweiliang/RichHF `RAHF.forward`): the captions are tokenized inside forward, no attention mask
is passed (pad tokens are attended), fp32, and the augmented-prompt variant re-runs the encoder once per output
(six passes plus one for the decoder). Ours: tokenized once per batch by the processor, masked, the six task prompts
encoded in one batched pass. Both at batch 32 on the same images; scores and heatmaps only (no decoding).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from richfeedback.reward_models.rahf.configuration import RAHFConfig
from richfeedback.reward_models.rahf.modeling import TASKS, RAHFModel, task_prompt
from richfeedback.reward_models.rahf.processing import RAHFProcessor, load_shapesworld_tokenizer, clean_prompt
from richfeedback.shapesworld.render import render
from richfeedback.shapesworld.scene import sample_scene


@torch.no_grad()
def reference_pattern(model: RAHFModel, tokenizer, pixel_values, captions):
    """What the reference's forward does for scores and heatmaps, on our modules."""
    def encode(texts):
        ids = tokenizer(texts, padding=True, truncation=True, return_tensors="pt").input_ids  # inside forward
        vis = model.visual_token_projection(model.vit(pixel_values=pixel_values).last_hidden_state)
        text = model.t5.get_input_embeddings()(ids)
        return model.t5.encoder(inputs_embeds=torch.cat([vis, text], 1)).last_hidden_state  # no mask

    if model.config.variant == "multi_head":
        grid = model._grid(encode(captions))
        return [h(grid) for h in model.heatmap_predictor.values()] + [s(grid) for s in model.score_predictor.values()]
    outputs = []
    for kind, name in TASKS:  # one encoder pass (and one ViT pass, as the reference) per output
        grid = model._grid(encode([task_prompt(kind, name, c) for c in captions]))
        outputs.append(model.score_predictor(grid) if kind == "SCORE" else model.heatmap_predictor(grid))
    encode(captions)  # the plain pass the decoder reads
    return outputs


@torch.no_grad()
def ours(model: RAHFModel, processor: RAHFProcessor, pixel_values, captions):
    output = model(pixel_values=pixel_values, **processor.text_inputs(captions))
    return list(output.heatmaps.values()) + list(output.scores.values())


def best_of(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(quick: bool = False) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    batch = 32
    scenes = [sample_scene(rng) for _ in range(batch)]
    tokenizer = load_shapesworld_tokenizer()
    rows = []
    for variant in ("multi_head", "augmented_prompt"):
        model = RAHFModel(RAHFConfig.from_size("shapes", variant=variant)).eval()
        processor = RAHFProcessor(tokenizer, model.config)
        pixel_values = processor.preprocess_images([render(s) for s in scenes])
        captions = [clean_prompt(s.prompt.text) for s in scenes]
        repeats = 2 if quick else 5
        t_ref = best_of(lambda: reference_pattern(model, tokenizer, pixel_values, captions), repeats)
        t_ours = best_of(lambda: ours(model, processor, pixel_values, captions), repeats)
        rows.append({"variant": variant, "batch": batch, "reference_img_s": batch / t_ref, "ours_img_s": batch / t_ours,
                     "speedup": t_ref / t_ours})
    return {"rows": rows, "note": "shapes size, CPU, fp32; no GPU was lent to this task, so no bf16 large-size number"}
