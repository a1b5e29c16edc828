"""A "system" for comparisons: something that turns a (prompt, seed) into an image, named by one spec string.

    embedded                                    the shipped ShapesWorld pipeline
    path/to/diffusers-folder                    any diffusers text-to-image folder (one with model_index.json)
    stable-diffusion-v1-5/stable-diffusion-v1-5 a hub id (needs a network or a local cache)
    path/to/generations                         a folder of images already generated, with manifest.jsonl
                                                (`richfeedback generate` writes one): looked up by prompt and seed
    embedded,lora=runs/lora                     a pipeline with a LoRA (a folder with pytorch_lora_weights.safetensors)
    embedded,lora=runs/lora,lora_scale=0.5      ... at a weight other than 1
    embedded,guidance=rahf:aesthetics,guidance_scale=2   reward guidance while sampling (`richfeedback.guidance`)

Options follow the base after commas as key=value; `lora` and `guidance` can be combined. Two systems given the same
prompt and seed start from the same initial noise (one seeded generator per image, drawn on the CPU), so a pair
differs only by what the systems do with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UsageError
from ..generation import (MANIFEST, GenerationJob, generate_to_folder, load_pipeline, read_manifest,
                          resolve_model)

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
SPEC_OPTIONS = ("lora", "lora_scale", "guidance", "guidance_scale")


@dataclasses.dataclass(frozen=True)
class SystemSpec:
    base: str  # "embedded", a diffusers folder, a hub id, or a folder of generated images
    lora: Optional[str] = None
    lora_scale: float = 1.0
    guidance: Optional[str] = None
    guidance_scale: Optional[float] = None

    def __str__(self) -> str:
        parts = [self.base]
        if self.lora is not None:
            parts.append(f"lora={self.lora}")
            if self.lora_scale != 1.0:
                parts.append(f"lora_scale={self.lora_scale:g}")
        if self.guidance is not None:
            parts.append(f"guidance={self.guidance}")
            if self.guidance_scale is not None:
                parts.append(f"guidance_scale={self.guidance_scale:g}")
        return ",".join(parts)

    @property
    def is_image_folder(self) -> bool:
        """A folder of generated images (manifest.jsonl, no model_index.json): nothing to run, only to look up."""
        path = Path(self.base)
        return path.is_dir() and (path / MANIFEST).is_file() and not (path / "model_index.json").is_file()


def parse_system(spec: str) -> SystemSpec:
    """A SystemSpec from `base[,key=value...]`; bad options raise UsageError naming the spec and the fix."""
    base, *options = [part.strip() for part in str(spec).split(",")]
    if not base:
        raise UsageError(f"system {spec!r} has no model: start it with embedded, a diffusers folder, a hub id or a "
                         "folder of generated images")
    values: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in SPEC_OPTIONS or not value:
            raise UsageError(f"system {spec!r}: cannot read option {option!r}; options are "
                             f"{', '.join(k + '=...' for k in SPEC_OPTIONS)}")
        if key in values:
            raise UsageError(f"system {spec!r}: option {key} is given twice")
        values[key] = value

    def number(key: str) -> Optional[float]:
        if key not in values:
            return None
        try:
            return float(values[key])
        except ValueError:
            raise UsageError(f"system {spec!r}: {key}={values[key]!r} is not a number") from None

    if "lora_scale" in values and "lora" not in values:
        raise UsageError(f"system {spec!r}: lora_scale needs lora=DIR")
    if "guidance_scale" in values and "guidance" not in values:
        raise UsageError(f"system {spec!r}: guidance_scale needs guidance=NAME (e.g. guidance=rahf:aesthetics)")
    lora_scale = number("lora_scale")
    out = SystemSpec(base=base, lora=values.get("lora"), lora_scale=1.0 if lora_scale is None else lora_scale,
                     guidance=values.get("guidance"), guidance_scale=number("guidance_scale"))
    if out.is_image_folder and (out.lora or out.guidance):
        raise UsageError(f"system {spec!r}: {base} is a folder of generated images; lora= and guidance= only apply "
                         "to a pipeline (embedded, a diffusers folder or a hub id)")
    if out.lora is not None and not (Path(out.lora) / LORA_WEIGHTS).is_file() and not Path(out.lora).is_file():
        raise UsageError(f"system {spec!r}: no {LORA_WEIGHTS} in {out.lora}; give the folder a LoRA fine-tuning "
                         "run wrote (or the .safetensors file itself)")
    return out


def load_guidance_for(spec: SystemSpec, device: str = "cpu"):
    """The reward-guidance object of a spec, or None; a clear error when the guidance module is not there."""
    if spec.guidance is None:
        return None
    try:
        from ..guidance import load_guidance
    except ImportError:
        raise UsageError(f"system {spec}: reward guidance needs richfeedback.guidance.load_guidance, which this "
                         "installation does not have yet; drop the guidance= option") from None
    kwargs = {} if spec.guidance_scale is None else {"scale": spec.guidance_scale}
    return load_guidance(spec.guidance, device=device, **kwargs)


def load_system_pipeline(spec: SystemSpec, device: str = "cpu"):
    """The diffusers pipeline of a spec, with its LoRA loaded at its scale (peft backend of diffusers)."""
    try:
        pipe = load_pipeline(spec.base, device=device)
    except FileNotFoundError as err:
        raise UsageError(f"system {spec}: {err}") from None
    if spec.lora is not None:
        lora = Path(spec.lora)
        folder, weight_name = (lora.parent, lora.name) if lora.is_file() else (lora, LORA_WEIGHTS)
        pipe.load_lora_weights(str(folder), weight_name=weight_name, adapter_name="system")
        if spec.lora_scale != 1.0:
            pipe.set_adapters(["system"], adapter_weights=[spec.lora_scale])
    return pipe


def lora_sampling(spec: SystemSpec) -> dict:
    """Sampling settings a LoRA asks for: the negative prompt of one trained with align_sd negatives ("Weird
    image."), recorded in its richfeedback_lora.json by `richfeedback.finetune.train`."""
    if spec.lora is None:
        return {}
    info = Path(spec.lora) / "richfeedback_lora.json"
    negative = json.loads(info.read_text()).get("negative_prompt") if info.is_file() else None
    return {"negative_prompt": negative} if negative else {}


def _write_manifest_row(manifest, row: dict) -> None:
    manifest.write(json.dumps(row) + "\n")
    manifest.flush()
    os.fsync(manifest.fileno())


def render_system(spec: SystemSpec | str, jobs: Sequence[GenerationJob], out_dir: str | os.PathLike,
                  batch_size: int = 8, device: str = "cpu", progress: bool = True,
                  sampling: Optional[dict] = None) -> dict[tuple[str, int], Path]:
    """Every (prompt, seed) job's image from `spec`, written into `out_dir` as PNG + manifest.jsonl.

    Resumable: jobs already in out_dir's manifest are skipped. A folder of generated images is copied from (a missing
    prompt/seed is an error naming it); a pipeline generates in batches, one seeded generator per image.
    Returns {(prompt, seed): path}.
    """
    spec = parse_system(spec) if isinstance(spec, str) else spec
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in read_manifest(out) if (out / r["file_name"]).is_file()]
    done = {(r["prompt"], int(r["seed"])): out / r["file_name"] for r in rows}
    # Rewrite the manifest with only complete rows: a crash may have cut the last line or lost an image.
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, out / MANIFEST)
    todo = [j for j in dict.fromkeys(jobs) if (j.prompt, j.seed) not in done]

    if todo and spec.is_image_folder:
        source = Path(spec.base)
        available = {(r["prompt"], int(r["seed"])): source / r["file_name"] for r in read_manifest(source)}
        missing = [j for j in todo if (j.prompt, j.seed) not in available]
        if missing:
            raise UsageError(f"{source / MANIFEST} has no image for prompt {missing[0].prompt!r} with seed "
                             f"{missing[0].seed} ({len(missing)} of {len(todo)} pairs missing); generate them with "
                             f"`richfeedback generate --out {source}` using the same prompts and seeds")
        with open(out / MANIFEST, "a") as manifest:
            for job in todo:
                target = out / job.file_name
                shutil.copyfile(available[(job.prompt, job.seed)], target.with_name(target.name + ".tmp"))
                os.replace(target.with_name(target.name + ".tmp"), target)
                _write_manifest_row(manifest, {"file_name": job.file_name, "prompt": job.prompt, "seed": job.seed,
                                               "system": str(spec)})
                done[(job.prompt, job.seed)] = target
    elif todo:
        # generate_to_folder does the batching, the seeded generators and the resumable manifest.
        guidance = load_guidance_for(spec, device=device)
        sampling = {**lora_sampling(spec), **(sampling or {})}
        generate_to_folder(spec.base, todo, out, batch_size=batch_size, device=device, progress=progress,
                           pipe=load_system_pipeline(spec, device=device),
                           **({} if guidance is None else {"guidance": guidance}), **sampling)
        done.update({(r["prompt"], int(r["seed"])): out / r["file_name"] for r in read_manifest(out)})
    return {(j.prompt, j.seed): done[(j.prompt, j.seed)] for j in jobs}


def describe_system(spec: SystemSpec) -> dict:
    """What a report says about a system: its spec and what the base resolves to."""
    base = spec.base if spec.is_image_folder else resolve_model(spec.base)
    return {"spec": str(spec), "base": base, "kind": "images" if spec.is_image_folder else "pipeline",
            "lora": spec.lora, "lora_scale": spec.lora_scale if spec.lora else None,
            "guidance": spec.guidance, "guidance_scale": spec.guidance_scale}
