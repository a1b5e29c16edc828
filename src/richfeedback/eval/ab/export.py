"""`ab make`: paired images of two systems (same prompt, same seed), sides randomised and recorded, and the page.

An AB folder holds everything a rating session needs and can be zipped and sent to raters:

    AB/ab.json        what is compared: its id, the two systems, the questions, prompts, seeds, side seed
    AB/pairs.jsonl    one row per pair, in the order raters see them: pair_id, prompt, seed, which system is on the
    AB/pairs.csv      left, and the A, B, left and right image paths (relative to AB)
    AB/images/a/      system A's images (+ manifest.jsonl); images/b/ likewise
    AB/index.html     the rating page (self-contained; opens from disk)

Raters never see which system is which: the page only knows left and right. Which side A was on is drawn per pair
from `side_seed` and kept in pairs.jsonl, from which `ab results` undoes it. The order of the pairs is shuffled with
the same seed so that one prompt's seeds are not rated back to back.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import os
import random
from pathlib import Path
from typing import Optional, Sequence

from ...errors import UsageError
from ...files import write_text_atomically
from ...generation import GenerationJob
from ..systems import SystemSpec, describe_system, parse_system, render_system
from .page import write_rating_page

AB_FORMAT = "richfeedback-ab"
DEFAULT_QUESTIONS = ("overall", "plausibility", "alignment", "aesthetics")
QUESTION_TEXTS = {
    "overall": "Overall, which image is better for this prompt?",
    "plausibility": "Which image is more plausible (fewer artifacts, distortions, broken shapes)?",
    "alignment": "Which image matches the prompt better?",
    "aesthetics": "Which image is more aesthetically pleasing?",
}
PAIR_FIELDS = ("pair_id", "position", "prompt", "prompt_index", "seed", "left", "image_a", "image_b", "image_left",
               "image_right")


def parse_questions(items: Sequence[str]) -> list[dict]:
    """Questions from items that are comma-separated known names ("overall,alignment") or one NAME=TEXT each (the
    text may hold commas); known names have default texts."""
    questions = []
    for item in items:
        for part in ([item] if "=" in item else item.split(",")):
            name, _, text = part.strip().partition("=")
            name = name.strip()
            if not name:
                continue
            if not name.replace("_", "").replace("-", "").isalnum():
                raise UsageError(f"question name {name!r}: use letters, digits, - and _ (NAME or NAME=TEXT)")
            if not text and name not in QUESTION_TEXTS:
                raise UsageError(f"question {name!r} has no text: write it as {name}=\"Which image ...?\" (known "
                                 f"names with texts: {', '.join(QUESTION_TEXTS)})")
            if any(q["name"] == name for q in questions):
                raise UsageError(f"question {name!r} is asked twice")
            questions.append({"name": name, "text": text.strip() or QUESTION_TEXTS[name]})
    if not questions:
        raise UsageError("no questions to ask: give --questions overall,plausibility,alignment,aesthetics")
    return questions


def parse_seeds(text: str) -> list[int]:
    """Seeds (non-negative) from "0-3", "0,1,5" or a mix ("0-3,10"); each prompt is rendered once per seed."""
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                lo, _, hi = part.partition("-")
                lo, hi = int(lo), int(hi)
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise UsageError(f"--seeds {text!r}: give seeds as 0-3, 0,1,5 or 0-3,10") from None
    if not seeds:
        raise UsageError(f"--seeds {text!r} names no seed")
    return list(dict.fromkeys(seeds))


def ab_id(system_a: SystemSpec, system_b: SystemSpec, prompts: Sequence[str], seeds: Sequence[int],
          side_seed: int, questions: Sequence[dict]) -> str:
    """A stable id of the comparison: the page keeps its ratings under it, and a rerun of `ab make` finds it again."""
    key = json.dumps([str(system_a), str(system_b), list(prompts), list(seeds), side_seed,
                      [q["name"] for q in questions]])
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def plan_pairs(prompts: Sequence[str], seeds: Sequence[int], side_seed: int) -> list[dict]:
    """Pairs in presentation order: every (prompt, seed), A's side drawn per pair, the order shuffled."""
    rng = random.Random(side_seed)
    pairs = []
    for prompt_index, prompt in enumerate(prompts):
        for seed in seeds:
            pairs.append({"pair_id": f"p{len(pairs):05d}", "prompt": prompt, "prompt_index": prompt_index,
                          "seed": int(seed), "left": rng.choice("ab")})
    rng.shuffle(pairs)
    for position, pair in enumerate(pairs):
        pair["position"] = position
    return pairs


def pairs_csv(pairs: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PAIR_FIELDS, lineterminator="\n")
    writer.writeheader()
    for pair in pairs:
        writer.writerow({k: pair[k] for k in PAIR_FIELDS})
    return buffer.getvalue()


def make_ab(system_a: str | SystemSpec, system_b: str | SystemSpec, prompts: Sequence[str], seeds: Sequence[int],
            out: str | os.PathLike, questions: Sequence[dict] | None = None, side_seed: int = 0,
            title: Optional[str] = None, batch_size: int = 8, device: str = "cpu", progress: bool = True,
            sampling: Optional[dict] = None) -> Path:
    """Write an AB folder (see the module docstring); resumable: a rerun only generates the missing images."""
    spec_a = parse_system(system_a) if isinstance(system_a, str) else system_a
    spec_b = parse_system(system_b) if isinstance(system_b, str) else system_b
    prompts = list(dict.fromkeys(p.strip() for p in prompts if p.strip()))
    if not prompts:
        raise UsageError("no prompts to compare: give --prompts FILE or --prompt TEXT")
    questions = list(questions) if questions else parse_questions(DEFAULT_QUESTIONS)
    seeds = [int(s) for s in seeds]
    identifier = ab_id(spec_a, spec_b, prompts, seeds, side_seed, questions)
    out = Path(out)
    meta_path = out / "ab.json"
    if meta_path.exists():
        previous = json.loads(meta_path.read_text()).get("id")
        if previous != identifier:
            raise UsageError(f"{out} already holds another comparison (id {previous}; this one is {identifier}): "
                             "choose a new --out folder, or delete the old one")
    out.mkdir(parents=True, exist_ok=True)

    pairs = plan_pairs(prompts, seeds, side_seed)
    jobs = [GenerationJob(p["prompt"], p["seed"]) for p in pairs]
    overrides = {k: v for k, v in (sampling or {}).items() if v is not None}
    paths = {}
    for name, spec in (("a", spec_a), ("b", spec_b)):
        paths[name] = render_system(spec, jobs, out / "images" / name, batch_size=batch_size, device=device,
                                    progress=progress, sampling=overrides)
    for pair in pairs:
        key = (pair["prompt"], pair["seed"])
        pair["image_a"] = paths["a"][key].relative_to(out).as_posix()
        pair["image_b"] = paths["b"][key].relative_to(out).as_posix()
        pair["image_left"] = pair["image_" + pair["left"]]
        pair["image_right"] = pair["image_" + ("b" if pair["left"] == "a" else "a")]

    meta = {
        "format": AB_FORMAT, "version": 1, "id": identifier,
        "title": title,  # shown to raters; the systems' names are not, so the page stays blind
        "systems": {"a": describe_system(spec_a), "b": describe_system(spec_b)},
        "questions": questions, "num_pairs": len(pairs), "num_prompts": len(prompts), "seeds": seeds,
        "side_seed": side_seed, "sampling_overrides": overrides,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomically(out / "pairs.jsonl",
                          "".join(json.dumps({k: p[k] for k in PAIR_FIELDS}) + "\n" for p in pairs))
    write_text_atomically(out / "pairs.csv", pairs_csv(pairs))
    write_rating_page(out / "index.html", meta, pairs)
    write_text_atomically(meta_path, json.dumps(meta, indent=2) + "\n")
    return out


def read_ab(folder: str | os.PathLike) -> tuple[dict, list[dict]]:
    """(ab.json, pairs) of an AB folder, or UsageError naming what is missing."""
    folder = Path(folder)
    meta_path, pairs_path = folder / "ab.json", folder / "pairs.jsonl"
    if not meta_path.is_file() or not pairs_path.is_file():
        raise UsageError(f"{folder} is not an AB folder (no ab.json / pairs.jsonl): make one with "
                         "`richfeedback ab make --a ... --b ... --out {folder}`")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != AB_FORMAT:
        raise UsageError(f"{meta_path} is not a richfeedback A/B description (format {meta.get('format')!r})")
    pairs = [json.loads(line) for line in pairs_path.read_text().splitlines() if line.strip()]
    return meta, pairs
