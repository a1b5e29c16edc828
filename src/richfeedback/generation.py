"""Generate images with a diffusers text-to-image pipeline: the embedded ShapesWorld model or any path or hub id.

Each image is made from its own seed (`torch.Generator().manual_seed(seed)` per image), so an image depends only on
its prompt and seed, not on the batch it was made in; the manifest records both, so any image can be made again.
Output is written as it goes (PNG + one manifest line per image, appended), and a rerun skips images that are already
there, so an interrupted run loses at most the batch in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

EMBEDDED_GENERATOR = Path(__file__).resolve().parent / "embedded" / "shapes-sd"
# The generator turned into a 9-channel inpainting checkpoint (scripts/train_embedded_inpainter.py): inpaint-fix's default.
EMBEDDED_INPAINTER = Path(__file__).resolve().parent / "embedded" / "shapes-sd-inpainting"
EMBEDDED_DEFAULTS = {"num_inference_steps": 25, "guidance_scale": 4.0, "height": 64, "width": 64}
# Beside model_index.json: the sampling settings a pipeline folder was trained for. diffusers keeps none (its call
# defaults are SD's: 50 steps, CFG 7.5, the UNet's sample size), so a folder says its own; the embedded models ship one.
SAMPLING_DEFAULTS_FILE = "sampling_defaults.json"
SAMPLING_KEYS = ("num_inference_steps", "guidance_scale", "height", "width", "negative_prompt", "guidance_rescale",
                 "eta")
MANIFEST = "manifest.jsonl"


def _shipped_pipeline(folder: Path, what: str, script: str) -> Path:
    if not (folder / "model_index.json").exists():
        raise FileNotFoundError(f"{what} is missing at {folder}; it ships with the repository (git checkout the "
                                f"folder) or can be retrained with `python {script}`")
    return folder


def embedded_generator_path() -> Path:
    """Folder of the embedded ShapesWorld pipeline shipped inside the package."""
    return _shipped_pipeline(EMBEDDED_GENERATOR, "the embedded generator", "scripts/train_embedded_generator.py")


def embedded_inpainter_path() -> Path:
    """Folder of the embedded ShapesWorld inpainting pipeline (9-channel UNet) shipped inside the package."""
    return _shipped_pipeline(EMBEDDED_INPAINTER, "the embedded inpainting model", "scripts/train_embedded_inpainter.py")


def resolve_model(model: Optional[str], task: str = "text2image") -> str:
    """`None` or "embedded" means the shipped ShapesWorld pipeline of the task (the generator, or for "inpaint" the
    inpainting model); "embedded-generator" is the generator for either task; anything else is a local folder or a
    hub id."""
    if model in (None, "embedded", "shapes"):
        return str(embedded_inpainter_path() if task == "inpaint" else embedded_generator_path())
    if model == "embedded-generator":
        return str(embedded_generator_path())
    return model


try:  # diffusers renamed `torch_dtype` to `dtype` (the old name warns); older releases know only `torch_dtype`
    from diffusers.utils.deprecation_utils import _TORCH_DTYPE_DEPRECATION_MESSAGE  # noqa: F401

    _DTYPE_ARGUMENT = "dtype"
except ImportError:
    _DTYPE_ARGUMENT = "torch_dtype"


def load_pipeline(model: Optional[str] = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
                  task: str = "text2image"):
    """A diffusers pipeline for `task` ("text2image" or "inpaint") from a local folder or hub id (hub ids need a
    network or a local cache). An ordinary checkpoint loads for either task; an inpainting one is meant for "inpaint"."""
    from diffusers import AutoPipelineForInpainting, AutoPipelineForText2Image

    if task not in ("text2image", "inpaint"):
        raise ValueError(f"task must be 'text2image' or 'inpaint', got {task!r}")
    path = resolve_model(model, task)
    local = Path(path).exists()
    if not local and (os.environ.get("HF_HUB_OFFLINE") == "1" or path.count("/") != 1):
        raise FileNotFoundError(
            f"no pipeline folder at {path!r}. Pass --model with a local diffusers folder (one with model_index.json), "
            "or a hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5 on a machine with a network."
        )
    if local and not (Path(path) / "model_index.json").exists():
        raise FileNotFoundError(f"{path} has no model_index.json: it is not a diffusers pipeline folder")
    kwargs = {_DTYPE_ARGUMENT: dtype, "local_files_only": local}
    auto = AutoPipelineForInpainting if task == "inpaint" else AutoPipelineForText2Image
    pipe = auto.from_pretrained(path, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def pipeline_defaults(model: Optional[str], task: str = "text2image") -> dict:
    """Sampling defaults of a pipeline: those in its folder's `sampling_defaults.json` (the embedded models ship one,
    and `save_sampling_defaults` writes one beside a pipeline trained from them), else diffusers' own (an empty dict).
    Settings a caller passes override these."""
    from .errors import UsageError

    path = Path(resolve_model(model, task)) / SAMPLING_DEFAULTS_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON ({error}); fix it, or delete it to sample with diffusers' "
                         "defaults") from None
    unknown = unknown_sampling_keys(settings) if isinstance(settings, dict) else []
    if not isinstance(settings, dict) or unknown:
        raise UsageError(f"{path} must be a JSON object with some of the keys {', '.join(SAMPLING_KEYS)}"
                         + (f"; it has {', '.join(unknown)}" if unknown else "") + ": fix it or delete it")
    return settings


def sampling_settings(model: Optional[str], sampling: dict) -> dict:
    """The settings a text-to-image call uses: the pipeline's defaults, overridden by the caller's values that are
    not None."""
    return {**pipeline_defaults(model), **{k: v for k, v in sampling.items() if v is not None}}


def unknown_sampling_keys(settings: dict) -> list[str]:
    return sorted(set(settings) - set(SAMPLING_KEYS))


def save_sampling_defaults(folder: str | os.PathLike, settings: dict) -> Optional[Path]:
    """Write `settings` as the sampling defaults of the pipeline folder `folder` (nothing when empty). Call it after
    `pipe.save_pretrained(folder)` for a pipeline trained from one with defaults, so that the folder samples as its
    base did: `save_sampling_defaults(out, pipeline_defaults(base))`."""
    from .files import write_text_atomically

    unknown = unknown_sampling_keys(settings)
    if unknown:
        raise ValueError(f"not sampling settings: {', '.join(unknown)} (known: {', '.join(SAMPLING_KEYS)})")
    if not settings:
        return None
    return write_text_atomically(Path(folder) / SAMPLING_DEFAULTS_FILE, json.dumps(settings, indent=2) + "\n")


@dataclasses.dataclass(frozen=True)
class GenerationJob:
    prompt: str
    seed: int

    @property
    def file_name(self) -> str:
        return f"{self.seed:08d}_{hash_prompt(self.prompt):016x}.png"


def hash_prompt(prompt: str) -> int:
    """A stable 64-bit hash of a prompt (Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.sha1(prompt.encode("utf-8")).digest()[:8], "big")


def plan_jobs(prompts: Sequence[str], n_per_prompt: int, seed: int) -> list[GenerationJob]:
    """`n_per_prompt` images per prompt with seeds seed, seed+1, ...; one seed per (prompt, sample) position."""
    return [GenerationJob(p, seed + pi * n_per_prompt + k) for pi, p in enumerate(prompts) for k in range(n_per_prompt)]


@torch.no_grad()
def generate_images(pipe, prompts: Sequence[str], seeds: Sequence[int], guidance=None,
                    **sampling) -> list[np.ndarray]:
    """uint8 (H, W, 3) images, one per (prompt, seed); each image uses its own seeded generator.

    `guidance`: a `richfeedback.guidance.RewardGuidance` steering the sampling (None or scale 0: unguided, exactly).
    """
    if isinstance(sampling.get("negative_prompt"), str):  # one negative prompt for all (diffusers wants a list)
        sampling["negative_prompt"] = [sampling["negative_prompt"]] * len(prompts)
    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    # Initial latents are drawn on the CPU per image so results match across devices and batch sizes.
    with guidance.attach(pipe, list(prompts)) if guidance is not None else contextlib.nullcontext():
        out = pipe(list(prompts), generator=generators, output_type="np", **sampling)
    return [(np.clip(img, 0, 1) * 255).round().astype(np.uint8) for img in out.images]


def read_manifest(out_dir: str | os.PathLike) -> list[dict]:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: its image is redone
    return rows


ROW_KEYS = ("file_name", "prompt", "seed", "guidance")  # a manifest row's other keys are its sampling settings


def check_same_settings(out: Path, rows: list[dict], settings: dict) -> None:
    """Refuse to resume a folder whose images were made with another model or other sampling settings (steps, CFG,
    size, negative prompt): one folder holds one setting, so that its images are comparable."""
    wanted = json.loads(json.dumps(settings))  # as a manifest row holds them
    for row in rows:
        had = {k: v for k, v in row.items() if k not in ROW_KEYS}
        if had != wanted:
            changed = sorted(k for k in set(had) | set(wanted) if had.get(k) != wanted.get(k))
            detail = ", ".join(f"{k}: {had.get(k, '(default)')!r} there, {wanted.get(k, '(default)')!r} now"
                               for k in changed)
            raise ValueError(f"{out} holds images made with other settings ({detail}); rerun with the same "
                             "settings to resume it, or write to a new --out folder")


def generate_to_folder(model: Optional[str], jobs: Iterable[GenerationJob], out_dir: str | os.PathLike,
                       batch_size: int = 8, device: str = "cpu", progress=True, pipe=None,
                       guidance=None, **sampling) -> Path:
    """Generate every job into `out_dir` (PNG files + manifest.jsonl); jobs already in the manifest are skipped.

    `pipe`: an already loaded pipeline for `model` (callers writing many folders load it once).
    `progress`: show a progress bar, or a tqdm bar of the caller's to advance (one bar over many folders).
    `guidance`: a `richfeedback.guidance.RewardGuidance`; its settings go into each manifest row as "guidance".
    """
    from PIL import Image
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in read_manifest(out) if (out / r["file_name"]).exists()]
    manifest_path = out / MANIFEST
    if manifest_path.exists() and manifest_path.read_text() != "".join(json.dumps(r) + "\n" for r in rows):
        # A crash left a cut line (or an image went missing): keep only the complete rows before appending.
        tmp = out / (MANIFEST + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, manifest_path)
    guided = {"guidance": guidance.settings()} if guidance is not None and guidance.active else {}
    if rows and any(r.get("guidance") != guided.get("guidance") for r in rows):
        raise ValueError(f"{out} holds images made with other reward-guidance settings than these; "
                         "write to a new --out folder (a folder holds one setting, so a rerun can resume it)")
    settings = sampling_settings(model, sampling)
    check_same_settings(out, rows, {"model": model or "embedded", **settings})
    done = {(r["prompt"], r["seed"]) for r in rows}
    todo = [j for j in jobs if (j.prompt, j.seed) not in done]
    if not todo:
        return out
    pipe = pipe if pipe is not None else load_pipeline(model, device=device)
    own_bar = not hasattr(progress, "update")
    bar = tqdm(total=len(todo), desc="generate", disable=not progress) if own_bar else progress
    with open(out / MANIFEST, "a") as manifest:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            images = generate_images(pipe, [j.prompt for j in batch], [j.seed for j in batch], guidance=guidance,
                                     **settings)
            for job, image in zip(batch, images):
                tmp = out / (job.file_name + ".tmp")
                Image.fromarray(image).save(tmp, format="PNG")
                os.replace(tmp, out / job.file_name)
                row = {"file_name": job.file_name, "prompt": job.prompt, "seed": job.seed,
                       "model": model or "embedded", **settings, **guided}
                manifest.write(json.dumps(row) + "\n")
            manifest.flush()
            os.fsync(manifest.fileno())
            bar.update(len(batch))
    if own_bar:
        bar.close()
    return out
