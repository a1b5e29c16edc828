"""Training examples of `richfeedback.finetune.train`: the imagefolder dataset a filter wrote (`pool filter`), read
into pixel tensors and captions (and, for DPO, the pairs' rejected images), and the seeded batches drawn from them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..errors import UsageError


def read_imagefolder(path: Path, image_column: str, caption_column: str):
    import datasets

    if not (path / "metadata.jsonl").is_file() and not (path / "metadata.csv").is_file():
        raise UsageError(f"{path} has no metadata.jsonl: give the folder `richfeedback pool filter` wrote (or, for "
                         "data.extra_paths, the one `richfeedback shapesworld renders --n N --out DIR` writes), or "
                         "an imagefolder dataset with file_name and text columns")
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        data = datasets.load_dataset("imagefolder", data_dir=str(path), split="train")
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
    for column in (image_column, caption_column):
        if column not in data.column_names:
            raise UsageError(f"{path} has no column {column!r} (it has {', '.join(data.column_names)}); set "
                             "data.image_column / data.caption_column")
    if len(data) == 0:
        raise UsageError(f"{path} has no images")
    return data


def load_examples(cfg: dict, resolution: int) -> tuple[torch.Tensor, list[str], Optional[torch.Tensor]]:
    """Pixel tensors in [-1, 1] (N, 3, R, R) and captions of the imagefolder dataset at data.path, followed by those
    of `data.extra_paths` (regularisation data, appended as align_sd appends its LAION images); for the DPO
    objective also the N rejected images of the pairs (else None)."""
    from torchvision import transforms

    d = cfg["data"]
    dpo = cfg["loss"]["objective"] == "dpo"
    if not d["path"]:
        raise UsageError("set data.path to an imagefolder dataset (`richfeedback pool filter ... --out DIR` writes one)")
    if dpo and d["extra_paths"]:
        raise UsageError("data.extra_paths adds single images, which the DPO objective cannot use: it trains on pairs "
                         "only; remove data.extra_paths or set loss.objective: denoising")
    crop = transforms.CenterCrop(resolution) if d["center_crop"] else transforms.RandomCrop(resolution)
    to_pixels = transforms.Compose([
        transforms.Resize(resolution, interpolation=transforms.InterpolationMode.LANCZOS), crop,
        transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    pixels, captions, rejected = [], [], None
    for number, path in enumerate([d["path"], *d["extra_paths"]]):
        data = read_imagefolder(Path(path), d["image_column"], d["caption_column"])
        if number == 0 and d["max_examples"]:
            data = data.select(range(min(len(data), d["max_examples"])))
        if not dpo and number == 0 and d["rejected_column"] in data.column_names:
            raise UsageError(f"{path} holds preference pairs (a {d['rejected_column']!r} image column, as "
                             f"`pool filter --policy pairs` writes): train it with loss.objective: dpo "
                             f"(configs/finetune/embedded-dpo.yaml), or filter the pool with another policy for "
                             f"supervised training on the kept images")
        if dpo:
            if d["rejected_column"] not in data.column_names:
                raise UsageError(f"{path} has no {d['rejected_column']!r} image column, so no pairs for the DPO "
                                 f"objective: filter the pool with `richfeedback pool filter POOL --policy pairs` "
                                 f"(rows with file_name and rejected_file_name), or set data.rejected_column")
            rejected = torch.stack([to_pixels(image.convert("RGB")) for image in data[d["rejected_column"]]])
        pixels += [to_pixels(image.convert("RGB")) for image in data[d["image_column"]]]
        captions += [str(c) for c in data[d["caption_column"]]]
    pixels = torch.stack(pixels)
    if d["random_flip"]:  # both orientations, so that cached latents keep the augmentation
        pixels = torch.cat([pixels, pixels.flip(-1)])
        captions = captions + captions
        if rejected is not None:
            rejected = torch.cat([rejected, rejected.flip(-1)])
    return pixels, captions, rejected


def batch_indices(micro_step: int, num_examples: int, per_device: int, process_index: int, num_processes: int,
                  seed: int) -> torch.Tensor:
    """The examples of one process's micro-batch: a function of the seed and the micro-step only, so a resumed run
    draws what the uninterrupted run drew. Each epoch is a fresh permutation; the last incomplete batch is dropped."""
    global_batch = per_device * num_processes
    per_epoch = num_examples // global_batch
    epoch, position = divmod(micro_step, per_epoch)
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    start = position * global_batch + process_index * per_device
    return order[start:start + per_device]
