"""Diagnostic, not a feature: hindsight relabelling of a ShapesWorld pool. Instead of keeping the images that match
their prompts (`richfeedback pool filter`), caption every image with what it shows, so that the generator's wrong
images become right examples, and many more of them are multi-object ones (README, Fine-tuning).

    python scripts/relabel_diagnostic.py --pool runs/finetune-embedded/pool --captions oracle --out runs/relabel-oracle
    python scripts/relabel_diagnostic.py --pool runs/finetune-embedded/pool --captions rahf --min-quantile 0.5 \
        --out runs/relabel-rahf
    python -m richfeedback.finetune.train --config configs/finetune/embedded.yaml \
        --set data.path=runs/relabel-rahf --set output_dir=runs/lora-relabel-rahf

Captions:
- `oracle` (perfect feedback, ShapesWorld only): the oracle's detected objects written in the prompt grammar, one
  group per colour and shape in the prompt's order; a single object keeps the prompt's position word when it holds,
  else the one position word that holds (none when several do). Images with more than 3 objects, or one colour and
  shape in two sizes, cannot be written and are left out, as are images with an artifact unless `--keep-artifacts`.
- `rahf` (the embedded RAHF's misaligned-keyword output, the "rich" part of its feedback): the prompt with every
  marked size or position word dropped (the grammar can say less about an object, not something else); an image
  whose count, colour or shape word is marked is left out, as no word can replace it. Then the images whose RAHF
  alignment with the new caption is at least the `--min-quantile` of the kept images' are kept.
Either way a caption that is a held-out prompt is left out (the benchmarks measure generalisation to those), and
the oracle checks every kept caption against its image for the report (`relabel_report.json`: images, kept, and
kept captions that are fully right, per number of objects). The output is an imagefolder dataset (`metadata.jsonl`
with `file_name`, `text`, `prompt`; images hard-linked from the pool, or copied across file systems) that
`richfeedback.finetune.train` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from richfeedback.errors import UsageError
from richfeedback.files import link_or_copy, write_text_atomically
from richfeedback.finetune.pool import read_pool
from richfeedback.imaging import load_rgb
from richfeedback.shapesworld import oracle
from richfeedback.shapesworld.scene import (MAX_OBJECTS, POSITIONS, Group, PromptSpec, is_heldout_prompt,
                                            parse_prompt, position_holds)

BATCH = 64


def oracle_caption(spec: PromptSpec, objects: Sequence[oracle.DetectedObject]) -> Optional[str]:
    """The prompt-grammar caption of detected objects (see the module docstring), or None when none can say it."""
    if not 1 <= len(objects) <= MAX_OBJECTS:
        return None
    groups: dict[tuple[str, str], list] = {}
    for o in objects:
        groups.setdefault((o.colour, o.shape), []).append(o)
    asked = {(g.colour, g.shape): g for g in spec.groups}
    order = list(asked)
    keys = sorted(groups, key=lambda k: order.index(k) if k in order else len(order))
    written = []
    for key in keys:
        objs = groups[key]
        sizes = {o.size for o in objs}
        if len(sizes) > 1:
            return None
        position = None
        wanted = asked[key].position if key in asked else None
        if len(objs) == 1 and wanted is not None:
            o = objs[0]
            holds = [p for p in POSITIONS if position_holds(p, o.cx, o.cy)]
            position = wanted if wanted in holds else (holds[0] if len(holds) == 1 else None)
        written.append(Group(key[0], key[1], len(objs), sizes.pop(), position))
    try:
        return PromptSpec(tuple(written)).text
    except ValueError:
        return None


def rahf_caption(spec: PromptSpec, marked: Sequence[int]) -> Optional[str]:
    """The prompt without the marked size and position words; None when a count, colour or shape word is marked."""
    roles = spec.word_roles()
    if len(roles) != len(marked):
        raise ValueError(f"{len(marked)} word marks for the {len(roles)} words of {spec.text!r}")
    groups = list(spec.groups)
    for (_, kind, gi), flag in zip(roles, marked):
        if not flag or gi < 0:
            continue
        g = groups[gi]
        if kind == "size":
            groups[gi] = Group(g.colour, g.shape, g.count, "medium", g.position)
        elif kind == "position":
            groups[gi] = Group(g.colour, g.shape, g.count, g.size, None)
        elif kind in ("count", "colour", "shape"):
            return None
    return PromptSpec(tuple(groups)).text


def caption_is_right(caption: str, objects: Sequence) -> bool:
    """The oracle's full-prompt verdict on `caption` for objects it has already detected (what
    `oracle.evaluate(caption, image).prompt_correct` says, without detecting them again)."""
    judgements, extras, _ = oracle.judge_words(parse_prompt(caption), objects)
    return oracle.is_prompt_correct(judgements, len(extras))


def relabel_with_oracle(rows: list[dict], keep_artifacts: bool) -> None:
    for row in tqdm(rows, desc="oracle captions", unit="img"):
        report = oracle.evaluate(row["prompt"], load_rgb(row["path"]))
        caption = oracle_caption(parse_prompt(row["prompt"]), report.objects)
        if caption is not None and (keep_artifacts or not report.has_artifact):
            row["caption"], row["caption_right"] = caption, caption_is_right(caption, report.objects)


def relabel_with_rahf(rows: list[dict], min_quantile: float) -> None:
    from richfeedback.reward_models.rahf.predict import load_rahf, predict

    model, processor = load_rahf()
    for start in tqdm(range(0, len(rows), BATCH), desc="RAHF keywords", unit="batch"):
        batch = rows[start : start + BATCH]
        images = [load_rgb(r["path"]) for r in batch]
        for row, image, result in zip(batch, images, predict(model, processor, images, [r["prompt"] for r in batch])):
            marked = processor.misaligned_words(result["marked_prompt"], row["prompt"])
            row["caption"] = rahf_caption(parse_prompt(row["prompt"]), marked)
            row["alignment"] = result["scores"]["alignment"]
            if row["caption"] is not None:
                row["caption_right"] = caption_is_right(row["caption"], oracle.detect_objects(image))
        # RAHF's alignment with each new caption, while this batch's images are at hand
        changed = [i for i, r in enumerate(batch) if r["caption"] not in (None, r["prompt"])]
        if changed:
            results = predict(model, processor, [images[i] for i in changed], [batch[i]["caption"] for i in changed],
                              generate=False)
            for i, result in zip(changed, results):
                batch[i]["alignment"] = result["scores"]["alignment"]
    kept = [r for r in rows if r["caption"] is not None]
    if kept and min_quantile > 0:
        threshold = float(np.quantile([r["alignment"] for r in kept], min_quantile))
        for row in kept:
            if row["alignment"] < threshold:
                row["caption"] = None


def report_counts(rows: list[dict]) -> dict:
    """Per number of objects the prompt asks for: images, kept, and kept captions the oracle finds fully right."""
    by_objects: dict[int, list[dict]] = {n: [] for n in range(1, MAX_OBJECTS + 1)}
    for row in rows:
        by_objects[parse_prompt(row["prompt"]).num_objects].append(row)
    out = {}
    for n, of_n in by_objects.items():
        kept = [r for r in of_n if r.get("caption") is not None]
        right = sum(r["caption_right"] for r in kept)
        out[str(n)] = {"images": len(of_n), "kept": len(kept), "kept_right": right,
                       "kept_right_fraction": right / len(kept) if kept else None,
                       "relabelled": sum(r["caption"] != r["prompt"] for r in kept)}
    return out


def check_arguments(args) -> None:
    """Refuse, in one line each, what cannot run: a used output folder, a quantile out of range, an option of the
    other caption mode."""
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty: name a new folder or delete it")
    if not 0.0 <= args.min_quantile < 1.0:
        raise UsageError(f"--min-quantile must be in [0, 1), got {args.min_quantile}")
    if args.captions == "oracle" and args.min_quantile > 0:
        raise UsageError("--min-quantile does not apply to --captions oracle: leave it out")
    if args.captions == "rahf" and args.keep_artifacts:
        raise UsageError("--keep-artifacts does not apply to --captions rahf: leave it out")


def write_dataset(out: Path, kept: list[dict]) -> None:
    """The imagefolder dataset: each kept image hard-linked from the pool (copied across file systems) under its
    shard-qualified name, and `metadata.jsonl` written last, atomically."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in kept:
        name = row["file_name"].replace("/", "_")
        link_or_copy(row["path"], out / name)
        lines.append(json.dumps({"file_name": name, "text": row["caption"], "prompt": row["prompt"],
                                 "type": "positive"}) + "\n")
    write_text_atomically(out / "metadata.jsonl", "".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", required=True, help="a pool written by `richfeedback pool generate`")
    parser.add_argument("--captions", required=True, choices=("oracle", "rahf"))
    parser.add_argument("--out", required=True, help="the imagefolder dataset to write (a new folder)")
    parser.add_argument("--min-quantile", type=float, default=0.0,
                        help="rahf: keep the images whose alignment with the new caption is at least this quantile")
    parser.add_argument("--keep-artifacts", action="store_true", help="oracle: keep images with an artifact")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
        rows = read_pool(args.pool)
        if not rows:
            raise UsageError(f"{args.pool} has no images yet: run `richfeedback pool generate` first")
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if args.captions == "oracle":
        relabel_with_oracle(rows, args.keep_artifacts)
    else:
        relabel_with_rahf(rows, args.min_quantile)

    heldout = 0
    for row in rows:
        if row.get("caption") is not None and is_heldout_prompt(row["caption"]):
            row["caption"], heldout = None, heldout + 1
    kept = [r for r in rows if r.get("caption") is not None]
    if not kept:
        print(f"error: no image of {args.pool} kept a caption: nothing to write", file=sys.stderr)
        return 1

    out = Path(args.out)
    write_dataset(out, kept)
    report = {"pool": str(args.pool), "captions": args.captions, "min_quantile": args.min_quantile,
              "keep_artifacts": args.keep_artifacts, "images": len(rows), "kept": len(kept),
              "kept_right_fraction": sum(r["caption_right"] for r in kept) / len(kept),
              "left_out_heldout_captions": heldout, "by_objects": report_counts(rows)}
    write_text_atomically(out / "relabel_report.json", json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"dataset: {out} ({len(kept)} images; train on it with --set data.path={out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
