"""`richfeedback score`: images scored by one or more reward models, one JSONL row per image.

    richfeedback score out/gen --model pickscore --model hpsv2.1=weights/HPS_v2.1_compressed.pt --out scores.jsonl
    richfeedback score a.png b.png --prompt "a red circle on the left" --model imagereward --out scores.jsonl

Images: files and/or folders (a folder's images, sorted by name). Prompts: --prompt TEXT for every image, --prompts
FILE (one line per image in order, or JSONL rows with "file_name" and "prompt"), or by default the manifest.jsonl
that `richfeedback generate` writes into its folder. Prompt-free models (aesthetic) need none.

--model NAME[=WEIGHTS][,adapter=DIR]: WEIGHTS is a file, a folder with the official files, or a hub id; without it
the model's folder under ~/.cache/richfeedback/weights (or $RICHFEEDBACK_WEIGHTS), then its hub repository. DIR is a
reward adapter (`richfeedback adapter train`); its scores are named NAME+ADAPTER_FOLDER.

An unreadable image is reported on stderr and skipped; the rest are scored.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def add_score_command(subparsers) -> argparse.ArgumentParser:
    """Register `score` on the `richfeedback` command's subparsers."""
    from .registry import list_reward_models

    p = subparsers.add_parser("score", help="score images with reward models (PickScore, HPSv2, ImageReward, ...)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files and/or folders")
    prompts = p.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", help="the prompt of every image")
    prompts.add_argument("--prompts", help="one prompt per line per image, or JSONL with file_name and prompt")
    p.add_argument("--model", action="append", required=True, metavar="NAME[=WEIGHTS][,adapter=DIR]",
                   help=f"a reward model (repeatable): {', '.join(list_reward_models())}; ',adapter=DIR' applies "
                        "a reward adapter of `richfeedback adapter train`")
    p.add_argument("--out", required=True, help="JSONL to write: image, prompt and every model's score")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.set_defaults(func=cmd_score)
    return p


def _usage_error(message: str) -> Exception:
    from ..errors import UsageError

    return UsageError(message)


def collect_images(inputs: list[str]) -> list[Path]:
    from ..imaging import list_images

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(list_images(path))
        elif path.exists():
            paths.append(path)
        else:
            raise _usage_error(f"{path}: no such file or folder")
    if not paths:
        raise _usage_error(f"no images (.png, .jpg, ...) in {', '.join(inputs)}")
    return paths


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """`NAME[=WEIGHTS][,adapter=DIR]`: a registered reward model, its weights, and a reward adapter to apply."""

    name: str
    weights: str | None = None
    adapter: str | None = None

    @property
    def column(self) -> str:
        """The score's name in outputs: the model's, and the adapter folder's when there is one."""
        return self.name if self.adapter is None else f"{self.name}+{Path(self.adapter).name}"

    def __str__(self) -> str:
        """The spec as written: `NAME[=WEIGHTS][,adapter=DIR]` (the inverse of `parse`)."""
        return (self.name + (f"={self.weights}" if self.weights else "")
                + (f",adapter={self.adapter}" if self.adapter else ""))

    @classmethod
    def parse(cls, spec: str) -> "ModelSpec":
        """Split `NAME[=WEIGHTS][,adapter=DIR]` (the name is not checked against the registry here)."""
        model, _, adapter = spec.partition(",adapter=")
        name, _, weights = model.partition("=")
        return cls(name, os.path.expanduser(weights) if weights else None,
                   os.path.expanduser(adapter) if adapter else None)

    def load(self, device: str = "cpu", dtype: str = "fp32", **options):
        from .registry import load_reward_model

        extra = {"adapter": self.adapter} if self.adapter is not None else {}
        return load_reward_model(self.name, self.weights, device=device, dtype=dtype, **extra, **options)


def parse_model_specs(specs: list[str]) -> list[ModelSpec]:
    from .registry import list_reward_models

    models: list[ModelSpec] = []
    for spec in specs:
        parsed = ModelSpec.parse(spec)
        if parsed.name not in list_reward_models():
            raise _usage_error(f"unknown model {parsed.name!r} in --model {spec}; known: "
                               f"{', '.join(list_reward_models())}")
        if any(parsed.column == seen.column for seen in models):
            raise _usage_error(f"--model {spec} is given twice; each model is one column of the output")
        models.append(parsed)
    return models


def _read_prompt_table(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise _usage_error(f"{path}:{number}: not JSON ({err.msg})") from None
    return rows


def prompts_for_images(args, paths: list[Path]) -> list[str] | None:
    """One prompt per image, or None when no prompt source was given and no manifest is found."""
    if args.prompt is not None:
        return [args.prompt] * len(paths)
    if args.prompts:
        source = Path(args.prompts)
        if not source.is_file():
            raise _usage_error(f"{source}: no such prompts file")
        lines = [line.strip() for line in source.read_text().splitlines() if line.strip()]
        if lines and not lines[0].startswith("{"):
            if len(lines) != len(paths):
                raise _usage_error(f"{source} has {len(lines)} prompts for {len(paths)} images: give one line per "
                                   "image, in the order of the images (folders sorted by name)")
            return lines
        return _match_by_file_name(_read_prompt_table(source), paths, source)
    folders = {p.parent for p in paths}
    manifest = next(iter(folders)) / "manifest.jsonl" if len(folders) == 1 else None
    if manifest is not None and manifest.is_file():
        return _match_by_file_name(_read_prompt_table(manifest), paths, manifest)
    return None


def manifest_images(args, paths: list[Path]) -> list[Path]:
    """Given one folder that `richfeedback generate` wrote (and no other prompt source), its manifest's images only:
    the folder also holds grid.png and the oracle's files, which have no prompt."""
    if args.prompt is not None or args.prompts or len(args.images) != 1 or not Path(args.images[0]).is_dir():
        return paths
    manifest = Path(args.images[0]) / "manifest.jsonl"
    if not manifest.is_file():
        return paths
    listed = {Path(row.get("file_name") or row.get("image") or "").name for row in _read_prompt_table(manifest)}
    kept = [p for p in paths if p.name in listed]
    if len(kept) < len(paths):
        print(f"scoring the {len(kept)} images listed in {manifest}; left out {len(paths) - len(kept)} others "
              f"(e.g. {next(p.name for p in paths if p.name not in listed)})", file=sys.stderr)
    return kept


def _match_by_file_name(rows: list[dict], paths: list[Path], source: Path) -> list[str]:
    by_name = {}
    for row in rows:
        name = row.get("file_name") or row.get("image")
        if name is None or "prompt" not in row:
            raise _usage_error(f"{source}: every JSONL row needs 'file_name' (or 'image') and 'prompt'")
        by_name[Path(name).name] = row["prompt"]
    missing = [p.name for p in paths if p.name not in by_name]
    if missing:
        raise _usage_error(f"{source} has no prompt for {len(missing)} images, e.g. {missing[0]}")
    return [by_name[p.name] for p in paths]


def load_models(specs: list[ModelSpec], device: str, dtype: str) -> dict:
    """Each model once, by output column. Missing or unusable weights raise WeightsNotFoundError (a
    FileNotFoundError) or CheckpointError (a ValueError), which `richfeedback`'s main prints as one line, like a
    usage error."""
    return {spec.column: spec.load(device, dtype) for spec in specs}


def cmd_score(args) -> None:
    from tqdm import tqdm

    from ..imaging import ImageLoadError, load_rgb

    if args.batch_size < 1:
        raise _usage_error("--batch-size must be at least 1")
    paths = collect_images(args.images)
    paths = manifest_images(args, paths)
    prompts = prompts_for_images(args, paths)
    models = load_models(parse_model_specs(args.model), args.device, args.dtype)
    needing = [name for name, model in models.items() if model.needs_prompt]
    if prompts is None and needing:
        raise _usage_error(f"{', '.join(needing)} score images against prompts: give --prompt TEXT, --prompts FILE, "
                           "or a folder with the manifest.jsonl of `richfeedback generate`")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    skipped: list[tuple[Path, str]] = []
    written = 0
    def read(index: int):
        try:
            return index, load_rgb(paths[index])
        except ImageLoadError as err:
            return index, err

    with open(tmp, "w") as f, tqdm(total=len(paths), unit="img", desc="scoring", file=sys.stderr) as bar, \
            ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # decoding in parallel: PIL releases the GIL
        for start in range(0, len(paths), args.batch_size):
            batch = []
            for index, image in pool.map(read, range(start, min(start + args.batch_size, len(paths)))):
                if isinstance(image, ImageLoadError):
                    skipped.append((paths[index], str(image)))
                    tqdm.write(f"skipped {image}", file=sys.stderr)
                else:
                    batch.append((index, image))
            if batch:
                batch_prompts = [prompts[i] for i, _ in batch] if prompts is not None else None
                images = [image for _, image in batch]
                scores = {name: model.score(batch_prompts, images).tolist() for name, model in models.items()}
                for row_number, (index, _) in enumerate(batch):
                    row = {"image": str(paths[index]), "prompt": prompts[index] if prompts is not None else None}
                    row.update({name: scores[name][row_number] for name in models})
                    f.write(json.dumps(row) + "\n")
                    written += 1
            bar.update(min(args.batch_size, len(paths) - start))
    os.replace(tmp, out)
    print(f"scored {written} images with {', '.join(models)}: {out}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable images: {', '.join(str(p) for p, _ in skipped)}", file=sys.stderr)
    if not written:
        raise _usage_error(f"none of the {len(paths)} images could be read")


def main(argv=None) -> int:
    """`python -m richfeedback.reward_models.cli ...`: the score command on its own."""
    from ..errors import UsageError

    parser = argparse.ArgumentParser(prog="richfeedback")
    add_score_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (UsageError, FileNotFoundError, ValueError) as err:
        print(f"richfeedback: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
