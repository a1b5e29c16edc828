"""Train the embedded artifact segmenter (`richfeedback.reward_models.artifact_segmenter`): the pixel-level
implausibility heatmap that `inpaint-fix` uses beside RAHF's to find the embedded generator's own flaws.

    python scripts/train_embedded_artifact_segmenter.py        # writes src/richfeedback/embedded/shapes-artifact-segmenter
    python scripts/train_embedded_artifact_segmenter.py --pool runs/finetune-embedded/pool   # reuse the finetune pool

Data (seeded; every label is the ShapesWorld oracle's per-pixel artifact map, `oracle.evaluate(...).artifact_map`):
  * the embedded generator's own images: a pool of 8 images for each of 1,024 training-split prompts (prompt seed 7,
    image seeds 0..8191), the same pool as `configs/finetune/embedded.yaml`'s, generated into `--pool` when it is not
    there (resumable), minus every prompt of the inpaint benchmark (`PROTOCOL_PROMPT_SEED`) and of the dev images the
    mask settings were chosen on (prompt seed 99);
  * injected artifacts on renders (`inpaint.examples.artifact_examples`, seed 123; the benchmark uses seed 0, the dev
    images seeds 1 and 2);
  * clean renders (`shapesworld.render`, scene seed 321), whose map is empty.
`--labels raters` trains on what RichHF-18K's heatmaps are made of instead: three simulated raters' artifact points
drawn as disks and averaged (`generated_feedback.rate_generated_image`); the model card compares the two.
The images of the last `--val-prompts` pool prompts, and the last 200 injected examples, are held out for the numbers
in `training.json`. Labels are cached in the work folder (`data.npz`), so a rerun does not read the oracle again.

Training: per-pixel BCE with positive weight `--pos-weight` (artifact pixels are ~2% of the generator's images),
random horizontal flips, AdamW with warm-up and cosine decay; progress by tqdm, losses to tensorboard
(`<work-dir>/logs`). The model is written atomically with `training.json` (settings, data sizes, held-out numbers,
times) beside it; the model card (`MODEL_CARD.md`) is kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from richfeedback.finetune.pool import generate_pool, read_pool  # noqa: E402
from richfeedback.imaging import load_rgb  # noqa: E402
from richfeedback.inpaint.examples import artifact_examples  # noqa: E402
from richfeedback.reward_models.artifact_segmenter import (EMBEDDED_ARTIFACT_SEGMENTER, ArtifactSegmenter,  # noqa: E402
                                                           pixel_values)
from richfeedback.shapesworld import oracle  # noqa: E402
from richfeedback.shapesworld.evaluate import PROTOCOL_PROMPT_SEED  # noqa: E402
from richfeedback.shapesworld.generated_feedback import rate_generated_image  # noqa: E402
from richfeedback.shapesworld.render import render  # noqa: E402
from richfeedback.shapesworld.scene import sample_prompts, sample_scene  # noqa: E402
from richfeedback.training_utils import lr_factor, save_atomically, start_script_run, write_train_stats  # noqa: E402

# Prompts whose images are judged elsewhere: the inpaint benchmark's generated images (the protocol's prompts) and the
# dev images the inpaint-fix settings were chosen on.
EXCLUDED_PROMPT_SETS = ((PROTOCOL_PROMPT_SEED, 1000), (99, 1000))


def excluded_prompts() -> set[str]:
    return {p for seed, n in EXCLUDED_PROMPT_SETS for p in sample_prompts(n, seed=seed, split="all")}


def data_settings(args) -> dict:
    """What decides the data and its held-out split (a cache made with other values is refused)."""
    return {"pool": str(Path(args.pool).resolve()), "injected": args.injected, "renders": args.renders,
            "val_prompts": args.val_prompts, "labels": args.labels}


def label(prompt: str, image: np.ndarray, seed: int, labels: str) -> np.ndarray:
    """The target map of one image: the oracle's exact artifact map ("oracle"), or three simulated raters' artifact
    points drawn as disks and averaged, as RichHF-18K's heatmaps are made ("raters"; seeded by `seed`)."""
    if labels == "oracle":
        return oracle.evaluate(prompt, image).artifact_map
    return rate_generated_image(prompt, image, "train", seed).labels.artifact_map.astype(np.float32)


def build_data(args, work: Path) -> dict:
    cache = work / ("data.npz" if args.labels == "oracle" else f"data-{args.labels}.npz")
    made_with = data_settings(args)
    if cache.exists():
        data = dict(np.load(cache))
        cached = json.loads(str(data.get("made_with", "{}")))
        if cached != made_with:
            raise SystemExit(f"{cache} was made with {cached}, not {made_with}: delete it (or pass another "
                             "--work-dir) to build the data again")
        print(f"data: {cache} (delete it to read the oracle again)")
        return data
    pool = Path(args.pool)
    prompts = sample_prompts(1024, seed=7, split="train")
    generate_pool("embedded", prompts, pool, n=8, seed=0, shard_size=32, batch_size=64)
    excluded = excluded_prompts()
    pool_rows = read_pool(pool)
    rows = [r for r in pool_rows if r["prompt"] not in excluded]
    kept_prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    val_prompts = set(kept_prompts[-args.val_prompts:])
    images, maps, group = [], [], []  # group: 0 generated (train), 1 generated (held out), 2 injected, 3 held out, 4
    for row in tqdm(rows, desc="oracle: generated images", mininterval=10):
        image = load_rgb(row["path"])
        images.append(image)
        maps.append(label(row["prompt"], image, row["seed"], args.labels))
        group.append(1 if row["prompt"] in val_prompts else 0)
    examples = artifact_examples(args.injected, seed=123)
    for i, example in enumerate(examples):
        images.append(example["image"])
        maps.append(example["before"].artifact_map if args.labels == "oracle"
                    else label(example["prompt"], example["image"], 10_000_000 + i, args.labels))
        group.append(3 if i >= len(examples) - 200 else 2)
    rng = np.random.default_rng(321)
    for _ in range(args.renders):
        scene = sample_scene(rng)
        image = render(scene)
        images.append(image)
        maps.append(label(scene.prompt.text, image, 20_000_000 + len(maps), args.labels))  # empty: a clean render
        group.append(4)
    data = {"images": np.stack(images), "maps": np.stack(maps), "group": np.asarray(group),
            "excluded_pool_images": np.asarray(len(pool_rows) - len(rows)),
            "made_with": np.asarray(json.dumps(made_with))}
    tmp = work / "data.tmp.npz"
    np.savez_compressed(tmp, **data)
    tmp.replace(cache)
    return data


def display_path(path: Path) -> str:
    """`path` relative to the repository when it is inside it (so training.json does not record this machine)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def exact_maps(data: dict, work: Path) -> np.ndarray:
    """The oracle's exact maps of the held-out images (the others are not needed), for the held-out numbers."""
    oracle_cache = work / "data.npz"
    if not oracle_cache.exists():
        raise SystemExit(f"the held-out numbers need the oracle's maps: run once with --labels oracle (writes "
                         f"{oracle_cache})")
    exact = np.load(oracle_cache)
    same = exact["images"].shape == data["images"].shape and np.array_equal(exact["group"], data["group"]) \
        and np.array_equal(exact["images"], data["images"])
    if not same:
        raise SystemExit(f"{oracle_cache} holds other images than this run's data: rebuild it with --labels oracle "
                         "and the same --pool/--injected/--renders/--val-prompts")
    return exact["maps"].astype(bool)


def held_out_numbers(model: ArtifactSegmenter, images: np.ndarray, maps: np.ndarray) -> dict:
    """Pixel IoU at 0.5, mean probability on and off artifact pixels, and the image's peak on images with and without
    an artifact (median)."""
    model.eval()
    probs = model.heatmaps(images).numpy()
    model.train()
    hot = probs > 0.5
    flagged = maps.any(axis=(1, 2))
    peaks = probs.reshape(len(probs), -1).max(axis=1)
    return {"images": int(len(images)), "with_artifact": float(flagged.mean()),
            "iou_at_0.5": float((hot & maps).sum() / max((hot | maps).sum(), 1)),
            "mean_prob_artifact_pixels": float(probs[maps].mean()) if maps.any() else None,
            "mean_prob_other_pixels": float(probs[~maps].mean()),
            "median_peak_with_artifact": float(np.median(peaks[flagged])) if flagged.any() else None,
            "median_peak_without": float(np.median(peaks[~flagged])) if (~flagged).any() else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="runs/artifact-segmenter/pool",
                        help="the generator's images (made here when missing; runs/finetune-embedded/pool is the same)")
    parser.add_argument("--work-dir", default="runs/artifact-segmenter")
    parser.add_argument("--out", default=str(EMBEDDED_ARTIFACT_SEGMENTER))
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--pos-weight", type=float, default=4.0)
    parser.add_argument("--injected", type=int, default=2000)
    parser.add_argument("--renders", type=int, default=1000)
    parser.add_argument("--val-prompts", type=int, default=64, help="pool prompts held out (at least 1)")
    parser.add_argument("--labels", choices=("oracle", "raters"), default="oracle",
                        help="targets: the oracle's exact artifact maps, or simulated raters' points as disks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.val_prompts < 1:
        parser.error("--val-prompts must be at least 1")
    work = Path(args.work_dir)
    accelerator = start_script_run(work, "artifact-segmenter", {**vars(args), "channels": str(args.channels)},
                                   args.threads)
    times = {}
    start = time.time()
    data = build_data(args, work)
    times["data"] = time.time() - start
    images, targets, group = data["images"], data["maps"].astype(np.float32), data["group"]
    # held-out numbers are always against the oracle's exact maps, whatever the model was trained on
    maps = data["maps"].astype(bool) if args.labels == "oracle" else exact_maps(data, work)
    train_index = np.flatnonzero(np.isin(group, (0, 2, 4)))
    x, y = pixel_values(images), torch.from_numpy(targets)[:, None]

    model = ArtifactSegmenter(block_out_channels=tuple(args.channels), sample_size=images.shape[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, args.steps, args.warmup, 0.0))
    rng = np.random.default_rng(args.seed)
    pos_weight = torch.tensor(args.pos_weight)
    start = time.time()
    for step in tqdm(range(args.steps), desc="train artifact segmenter", mininterval=5):
        index = rng.choice(train_index, args.batch_size, replace=False)
        batch, target = x[index], y[index]
        if rng.random() < 0.5:
            batch, target = batch.flip(3), target.flip(3)
        loss = F.binary_cross_entropy_with_logits(model(batch), target, pos_weight=pos_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0:
            accelerator.log({"train/loss": loss.item(), "train/lr": schedule.get_last_lr()[0]}, step=step)
    times["train"] = time.time() - start
    numbers = {"generated (held-out prompts)": held_out_numbers(model, images[group == 1], maps[group == 1]),
               "injected (held out)": held_out_numbers(model, images[group == 3], maps[group == 3])}
    accelerator.log({f"held_out/{k}/iou": v["iou_at_0.5"] for k, v in numbers.items()}, step=args.steps)
    accelerator.end_training()
    settings = {**vars(args), "out": display_path(Path(args.out))}
    record = {"settings": settings, "parameters": sum(p.numel() for p in model.parameters()),
              "data": {"generated_train": int((group == 0).sum()), "generated_held_out": int((group == 1).sum()),
                       "generated_excluded_prompt_images": int(data["excluded_pool_images"]),
                       "injected_train": int((group == 2).sum()), "injected_held_out": int((group == 3).sum()),
                       "clean_renders": int((group == 4).sum())},
              "held_out": numbers, "times_s": {k: round(v, 1) for k, v in times.items()}}
    out = Path(args.out)
    card = (out / "MODEL_CARD.md").read_text() if (out / "MODEL_CARD.md").exists() else None

    def write(tmp: Path):
        model.save_pretrained(tmp)
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        if card is not None:
            (tmp / "MODEL_CARD.md").write_text(card)

    save_atomically(out, write)
    write_train_stats(work, {"times": times})
    print(json.dumps(record["held_out"], indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
