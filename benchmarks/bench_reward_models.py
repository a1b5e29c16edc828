"""Reward-model throughput: our batched `score` against each reference's own usage pattern, same weights and inputs.

Each family is a reduced model written in its official file format (`richfeedback.reward_models.tiny_checkpoints`)
and loaded once; both sides score the same 512x512 RGB images (SD 1.x output size) with one prompt. Reported: images/s
of each side, their ratio (`speedup`, target >= 2 at batch 32), and the largest score difference between the two.

Reference patterns, as the reference code runs them:
- imagereward: `ImageReward.inference_rank`: per image, torchvision `_transform` on PIL, visual encoder, text encoder;
  then the MLP over all images.
- hpsv2.1: `hpsv2.score(images, prompt)`: per image, `preprocess_val`, tokenize, encode image and text (leaving out
  the `torch.load` of the checkpoint it repeats on every call).
- pickscore: the README's `calc_probs` applied per image: processor call (transformers 5's default CLIPProcessor),
  image and text features, logit_scale * cosine.
- aesthetic: `simple_inference.py` per image: clip preprocess, image embedding, numpy normalisation, MLP.
- clipscore: jmhessel/clipscore, which already batches (a DataLoader of 64 images, torchvision preprocessing): the
  ratio there shows we lose nothing, not a speed-up.

Our side: `model.score(prompt, images)` with max_batch_size 32. The 8-bit preprocessing is the reference's own PIL
recipe on both sides; ours runs it on `preprocess_threads` threads and runs the networks once per batch (and the text
encoder once per distinct prompt). Rows are measured at torch's default thread count and at one thread: a batch-1
loop pays per-call threading overhead, large on a busy CPU, and the one-thread rows show the gain without it. With
these reduced models preprocessing is a large share of the time; at full size on a GPU the networks' batching is
what counts (not measured here).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from richfeedback.reward_models import load_reward_model
from richfeedback.reward_models import tiny_checkpoints as tiny
from richfeedback.reward_models.preprocess import CLIP_MEAN, CLIP_STD

PROMPT = "a red circle on the left and two blue squares"
BATCH = 32


def clip_transform():
    return Compose([Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224),
                    lambda image: image.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])


def reference_imagereward(model, images):
    preprocess = clip_transform()
    text = model.tokenizer(PROMPT, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    features = []
    for image in images:
        x = preprocess(image).unsqueeze(0)
        image_embeds = model.blip.visual_encoder.forward_features(x)
        image_atts = torch.ones(image_embeds.size()[:-1], dtype=torch.long)
        output = model.blip.text_encoder(text.input_ids, attention_mask=text.attention_mask,
                                         encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts)
        features.append(output.last_hidden_state[:, 0, :])
    rewards = model.mlp(torch.cat(features, 0).float())
    return (rewards - model.config.reward_mean) / model.config.reward_std


def reference_hps(model, images):
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-H-14")
    scores = []
    for image in images:
        x = ToTensor()(image)
        height, width = x.shape[1:]
        new = [round(side * 224 / max(height, width)) for side in (height, width)]
        x = torch.nn.functional.interpolate(x[None], size=new, mode="bicubic", antialias=True)[0]
        x = torch.nn.functional.pad(x, ((224 - new[1]) // 2, 224 - new[1] - (224 - new[1]) // 2,
                                        (224 - new[0]) // 2, 224 - new[0] - (224 - new[0]) // 2))
        x = Normalize(CLIP_MEAN, CLIP_STD)(x)[None]
        image_features = model.clip.encode_image(x, normalize=True)
        text_features = model.clip.encode_text(tokenizer([PROMPT]), normalize=True)
        scores.append(100 * torch.diagonal(image_features @ text_features.T))
    return torch.cat(scores)


def reference_pickscore(model, images, processor):
    scores = []
    for image in images:
        inputs = processor(images=image, text=PROMPT, padding=True, truncation=True, max_length=77,
                           return_tensors="pt")
        image_embs = model.clip.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
        text_embs = model.clip.get_text_features(input_ids=inputs["input_ids"],
                                                 attention_mask=inputs["attention_mask"]).pooler_output
        text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
        scores.append(model.clip.logit_scale.exp() * (text_embs @ image_embs.T)[0])
    return torch.cat(scores)


def reference_aesthetic(model, images):
    preprocess = clip_transform()
    scores = []
    for image in images:
        features = model.vision(pixel_values=preprocess(image).unsqueeze(0)).image_embeds.numpy()
        l2 = np.atleast_1d(np.linalg.norm(features, 2, -1))
        l2[l2 == 0] = 1
        scores.append(model.mlp(torch.from_numpy(features / np.expand_dims(l2, -1)).float()))
    return torch.cat(scores)


def reference_clipscore(model, images):
    preprocess = clip_transform()
    tokens = model.tokenizer(["A photo depicts " + PROMPT], padding=True, truncation=True, return_tensors="pt")
    text = model.clip.get_text_features(**tokens).pooler_output
    text = text / text.norm(dim=-1, keepdim=True)
    scores = []
    for start in range(0, len(images), 64):
        pixels = torch.stack([preprocess(image) for image in images[start : start + 64]])
        features = model.clip.get_image_features(pixel_values=pixels).pooler_output
        features = features / features.norm(dim=-1, keepdim=True)
        scores.append(2.5 * (features @ text.T)[:, 0].clamp(min=0))
    return torch.cat(scores)


def timed_pair(reference, ours, repeats: int):
    """Best-of-`repeats` seconds of each, run alternately so both see the same load on a shared machine."""
    best, results = [float("inf"), float("inf")], [None, None]
    for _ in range(repeats):
        for side, function in enumerate((reference, ours)):
            start = time.perf_counter()
            with torch.no_grad():
                results[side] = function()
            best[side] = min(best[side], time.perf_counter() - start)
    return best, results


def build_models(folder: Path) -> dict:
    hps_path, hps_config = tiny.write_tiny_hps(folder / "hps")
    imagereward_path, imagereward_config = tiny.write_tiny_imagereward(folder / "imagereward")
    return {
        "imagereward": load_reward_model("imagereward", imagereward_path, config=imagereward_config),
        "hpsv2.1": load_reward_model("hpsv2.1", hps_path, config=hps_config),
        "pickscore": load_reward_model("pickscore", tiny.write_tiny_pickscore(folder / "pickscore")),
        "aesthetic": load_reward_model("aesthetic", tiny.write_tiny_aesthetic(folder / "aesthetic")),
        "clipscore": load_reward_model("clipscore", tiny.write_tiny_clipscore(folder / "clipscore")),
    }


PATTERNS = {
    "imagereward": "per-image loop, PIL preprocessing (inference_rank)",
    "hpsv2.1": "per-image loop, tensor preprocessing (hpsv2.score)",
    "pickscore": "per-image processor call + features (README calc_probs)",
    "aesthetic": "per-image loop (simple_inference.py)",
    "clipscore": "batches of 64 (jmhessel/clipscore)",
}


def run(quick: bool) -> dict:
    from transformers import CLIPProcessor

    n_images, repeats = (BATCH, 3) if quick else (4 * BATCH, 5)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)) for _ in range(n_images)]
    default_threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp))
        processor = CLIPProcessor.from_pretrained(Path(tmp) / "pickscore")
        references = {
            "imagereward": lambda m: reference_imagereward(m, images),
            "hpsv2.1": lambda m: reference_hps(m, images),
            "pickscore": lambda m: reference_pickscore(m, images, processor),
            "aesthetic": lambda m: reference_aesthetic(m, images),
            "clipscore": lambda m: reference_clipscore(m, images),
        }
        # torch's default thread count, then one thread: per-call threading overhead is much of what a batch-1 loop
        # pays on a busy CPU, so the single-thread rows show the part of the gain that does not depend on it.
        for threads in dict.fromkeys([default_threads, 1]):
            torch.set_num_threads(threads)
            for name, model in models.items():
                model.max_batch_size = BATCH
                prompt = None if not model.needs_prompt else PROMPT
                model.score(prompt, images[:2])  # warm-up
                (reference_seconds, our_seconds), (reference_scores, our_scores) = timed_pair(
                    lambda: references[name](model), lambda: model.score(prompt, images), repeats)
                rows.append({
                    "model": name,
                    "reference_pattern": PATTERNS[name],
                    "torch_threads": threads,
                    "images": n_images,
                    "batch": BATCH,
                    "reference_img_s": round(n_images / reference_seconds, 1),
                    "ours_img_s": round(n_images / our_seconds, 1),
                    "speedup": round(reference_seconds / our_seconds, 2),
                    "max_abs_score_diff": float((reference_scores.float().flatten() - our_scores).abs().max()),
                })
        torch.set_num_threads(default_threads)
    return {"rows": rows, "preprocess_threads": models["aesthetic"].preprocess_threads,
            "note": "reduced models (tiny_checkpoints), 512x512 inputs, CPU; speedup = reference time / our time"}
