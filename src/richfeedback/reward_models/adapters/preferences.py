"""Training data for reward adapters: preference pairs (prompt, image A, image B, who won) or absolute scores.

Pairs come from

- a preferences file (`read_preference_file`): the `richfeedback ab results` / `ab auto` JSONL rows
  {"prompt", "image_a", "image_b", "choice": "a"|"b"|"tie", ...}; Pick-a-Pic-style rows {"caption", "image_0",
  "image_1" (paths), "label_0", "label_1"} in JSONL, or Pick-a-Pic parquet files (jpg_0 / jpg_1 bytes); HPDv2-style
  rows {"prompt", "image_path": [a, b], "human_preference": [1, 0]} in JSON or JSONL. Relative image paths are read
  from the file's folder.
- a pool or a `richfeedback generate` folder (`pairs_from_pool`): the images of one prompt ranked by one of the
  pool's scores, or by the ShapesWorld oracle (every pair of a prompt's candidates whose ranks differ; equal ranks
  are ties).
- ShapesWorld itself (`shapesworld_pairs`): renders of a prompt with injected misalignments and artifacts, judged by
  the oracle. Cheap, varied, and exactly labelled: the benchmark's data.

Absolute scores come from a rich-feedback dataset in the RichHF-18K schema (`score_examples`).

A pair's `label` is the probability that A is preferred: 1.0, 0.0, or 0.5 for a tie. The held-out split is by
prompt (`split_by_prompt`), so no held-out prompt is ever seen in training.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image

from ...errors import UsageError

ImageRef = Union[str, Path, np.ndarray]

CHOICE_LABELS = {"a": 1.0, "b": 0.0, "tie": 0.5}
# RichHF-18K's score columns under RAHF's names (rahf.configuration.SCORE_NAMES)
SCORE_COLUMNS = {"plausibility": "artifact_score", "alignment": "misalignment_score",
                 "aesthetics": "aesthetics_score", "overall": "overall_score"}


@dataclass
class PreferencePair:
    prompt: str
    image_a: ImageRef
    image_b: ImageRef
    label: float  # P(A preferred): 1, 0, or 0.5 for a tie


@dataclass
class ScoreExample:
    prompt: str
    image: ImageRef
    target: float


def prompt_is_heldout(prompt: str, fraction: float, seed: int = 0) -> bool:
    """A stable draw per prompt (not Python's salted hash): the same prompts are held out on every run."""
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_by_prompt(items: Sequence, heldout_fraction: float, seed: int = 0) -> tuple[list, list]:
    """(train, held-out) with every prompt wholly on one side."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"data.heldout_fraction must be in (0, 1), got {heldout_fraction}")
    train = [x for x in items if not prompt_is_heldout(x.prompt, heldout_fraction, seed)]
    heldout = [x for x in items if prompt_is_heldout(x.prompt, heldout_fraction, seed)]
    return train, heldout


# -- preference files -------------------------------------------------------------------------------------------------

def _resolve(folder: Path, value) -> ImageRef:
    if isinstance(value, (bytes, bytearray)):
        return np.asarray(Image.open(io.BytesIO(value)).convert("RGB"))
    if isinstance(value, dict) and "bytes" in value:  # datasets' Image feature stored in parquet
        return _resolve(folder, value["bytes"])
    path = Path(value)
    return path if path.is_absolute() else folder / path


def _row_to_pair(row: dict, folder: Path, where: str) -> PreferencePair:
    if "choice" in row:  # richfeedback ab results / ab auto
        if row["choice"] not in CHOICE_LABELS:
            raise UsageError(f"{where}: choice must be 'a', 'b' or 'tie', got {row['choice']!r}")
        return PreferencePair(row["prompt"], _resolve(folder, row["image_a"]), _resolve(folder, row["image_b"]),
                              CHOICE_LABELS[row["choice"]])
    if "label_0" in row:  # Pick-a-Pic: label_0 = 1 (0 won), 0 (1 won), 0.5 (tie)
        image_0 = row.get("image_0", row.get("jpg_0"))
        image_1 = row.get("image_1", row.get("jpg_1"))
        if image_0 is None or image_1 is None:
            raise UsageError(f"{where}: a Pick-a-Pic row needs image_0/image_1 (paths) or jpg_0/jpg_1 (bytes)")
        return PreferencePair(row.get("caption", row.get("prompt")), _resolve(folder, image_0),
                              _resolve(folder, image_1), float(row["label_0"]))
    if "human_preference" in row:  # HPDv2: a list of images and a preference (1 = chosen) per image
        paths, preference = row["image_path"], row["human_preference"]
        if len(paths) != 2 or len(preference) != 2:
            raise UsageError(f"{where}: only pairs are supported (2 images and 2 preferences per row)")
        a, b = float(preference[0]), float(preference[1])
        label = 0.5 if a == b else float(a > b)
        return PreferencePair(row["prompt"], _resolve(folder, paths[0]), _resolve(folder, paths[1]), label)
    raise UsageError(f"{where}: unknown row format (keys {sorted(row)}); expected the `ab results` format "
                     "(prompt, image_a, image_b, choice), Pick-a-Pic's (caption, image_0, image_1, label_0, label_1) "
                     "or HPDv2's (prompt, image_path, human_preference)")


def read_preference_file(path) -> list[PreferencePair]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such preferences file (`richfeedback ab results` writes "
                         "AB/results/preferences.jsonl; Pick-a-Pic parquet and HPDv2 JSON also work)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif path.suffix == ".json":
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):
            raise UsageError(f"{path}: expected a JSON list of rows (HPDv2's train.json layout)")
    else:
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UsageError(f"{path}:{n}: not a JSON line") from None
    pairs = [_row_to_pair(row, path.parent, f"{path}:{i + 1}") for i, row in enumerate(rows)]
    if not pairs:
        raise UsageError(f"{path} holds no preference rows")
    return pairs


def write_preference_file(pairs: Sequence[PreferencePair], path) -> Path:
    """The `ab results` format, with absolute image paths; array images must have been saved first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    choice = {1.0: "a", 0.0: "b", 0.5: "tie"}
    lines = [json.dumps({"prompt": p.prompt, "image_a": str(Path(p.image_a).resolve()),
                         "image_b": str(Path(p.image_b).resolve()),
                         "choice": choice[p.label], "strength": 0 if p.label == 0.5 else 1,
                         "question": "overall", "rater": "oracle"}) for p in pairs]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


# -- ranking a prompt's candidates ------------------------------------------------------------------------------------

def oracle_key(prompt: str, image) -> tuple[int, float]:
    """What the ShapesWorld oracle prefers, as a sort key: more prompt words satisfied (an object the prompt did not
    ask for costs one), then a smaller artifact area. Equal keys are ties."""
    from ...shapesworld.oracle import evaluate

    if not isinstance(image, np.ndarray):
        from ...imaging import load_rgb

        image = load_rgb(image)
    report = evaluate(prompt, image)
    return sum(w.satisfied for w in report.words) - report.extra_objects, -round(report.artifact_area, 6)


def ranked_pairs(prompt: str, images: Sequence[ImageRef], keys: Sequence, keep_ties: bool = True,
                 max_pairs: Optional[int] = None, rng: Optional[np.random.Generator] = None) -> list[PreferencePair]:
    """Every pair of one prompt's candidates, labelled by comparing their keys (higher is better)."""
    pairs = []
    for i, j in itertools.combinations(range(len(images)), 2):
        if keys[i] == keys[j] and not keep_ties:
            continue
        label = 0.5 if keys[i] == keys[j] else float(keys[i] > keys[j])
        pairs.append(PreferencePair(prompt, images[i], images[j], label))
    if max_pairs is not None and len(pairs) > max_pairs:
        rng = rng or np.random.default_rng(0)
        pairs = [pairs[k] for k in sorted(rng.choice(len(pairs), size=max_pairs, replace=False))]
    return pairs


def pairs_from_pool(folder, by: str = "oracle", keep_ties: bool = True, max_pairs_per_prompt: Optional[int] = None,
                    seed: int = 0) -> list[PreferencePair]:
    """Pairs from a pool (`richfeedback pool generate`) or a `richfeedback generate` folder, ranked `by` the oracle
    or by a score the pool has (`richfeedback pool score`)."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    if (folder / "pool.json").is_file():
        from ...finetune.pool import read_pool

        rows = read_pool(folder)
    elif (folder / "manifest.jsonl").is_file():
        from ...generation import read_manifest

        rows = [{"prompt": r["prompt"], "path": folder / r["file_name"], "scores": {}} for r in read_manifest(folder)]
    else:
        raise UsageError(f"{folder} is neither a pool (pool.json) nor a generate folder (manifest.jsonl)")
    by_prompt: dict[str, list[dict]] = {}
    for row in rows:
        by_prompt.setdefault(row["prompt"], []).append(row)
    rng = np.random.default_rng(seed)
    pairs = []
    for prompt, group in tqdm(by_prompt.items(), desc=f"rank by {by}", disable=len(rows) < 256):
        if by == "oracle":
            keys = [oracle_key(prompt, r["path"]) for r in group]
        else:
            missing = [r["path"] for r in group if by not in r["scores"]]
            if missing:
                raise UsageError(f"{missing[0]} has no {by!r} score: run `richfeedback pool score {folder} --model "
                                 f"{by}` first, or rank by=oracle")
            keys = [r["scores"][by] for r in group]
        pairs += ranked_pairs(prompt, [r["path"] for r in group], keys, keep_ties, max_pairs_per_prompt, rng)
    if not pairs:
        raise UsageError(f"{folder} gives no pairs: it needs at least two images per prompt")
    return pairs


# -- ShapesWorld: renders with injected problems, judged by the oracle ------------------------------------------------

def shapesworld_variants(rng: np.random.Generator, size: int = 64, n_variants: int = 4,
                         artifacts: bool = True) -> tuple[str, list[np.ndarray]]:
    """A prompt and `n_variants` renders of it. The first four share one layout and differ one thing at a time, as a
    before/after fix or two seeds of a fine-tuned model often do: clean, misaligned, damaged by artifacts, and both.
    "Both" is the misaligned scene with the same artifact draw as "damaged", so misaligned-vs-both pairs differ only
    in the artifacts and damaged-vs-both pairs (nearly) only in the misalignment. Without `artifacts`: clean and
    misaligned twice (two misalignment draws). Further variants use new layouts, each with its own draws."""
    from ...shapesworld.artifacts import ARTIFACT_KINDS, inject_artifact
    from ...shapesworld.misalign import MISALIGNMENT_KINDS, inject_misalignment
    from ...shapesworld.render import render
    from ...shapesworld.scene import layout_scene, sample_scene

    def misaligned(variant):
        for kind in rng.permutation(MISALIGNMENT_KINDS):
            result = inject_misalignment(variant, rng, str(kind), size)
            if result is not None and result[0].objects:
                return result[0]
        return variant

    def damaged(pixels, variant, seed: int):
        draw = np.random.default_rng(seed)  # one seed, one draw: the same artifacts on a scene that differs a little
        for _ in range(int(draw.integers(1, 3))):
            for kind in draw.permutation(ARTIFACT_KINDS):
                result = inject_artifact(pixels, variant, draw, str(kind))
                if result is not None:
                    pixels = result[0]
                    break
        return pixels

    scene = sample_scene(rng)
    wrong = misaligned(scene)
    artifact_seed = int(rng.integers(2**31))
    images = []
    for k in range(n_variants):
        if k < 4:
            variant = wrong if k % 2 == 1 else scene
            if k == 3 and not artifacts:
                variant = misaligned(scene)  # a second misaligned render instead of "both"
            seed = artifact_seed
        else:
            variant = layout_scene(scene.prompt, rng, tries=50) or scene
            variant = misaligned(variant) if k % 2 == 1 else variant
            seed = int(rng.integers(2**31))
        pixels = render(variant, size)
        if artifacts and k % 4 >= 2:
            pixels = damaged(pixels, variant, seed)
        images.append(pixels)
    return scene.prompt.text, [images[i] for i in rng.permutation(len(images))]  # no position tells the winner


def shapesworld_pairs(n_prompts: int, seed: int = 0, size: int = 64, n_variants: int = 4, keep_ties: bool = True,
                      artifacts: bool = True) -> list[PreferencePair]:
    """Oracle-labelled pairs over `n_prompts` ShapesWorld prompts (every pair of each prompt's variants)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n_prompts):
        prompt, images = shapesworld_variants(rng, size, n_variants, artifacts)
        keys = [oracle_key(prompt, image) for image in images]
        pairs += ranked_pairs(prompt, images, keys, keep_ties)
    return pairs


def write_shapesworld_pairs(folder, n_prompts: int, seed: int = 0, size: int = 64,
                            n_variants: int = 4) -> Path:
    """`shapesworld_pairs` written as PNGs and a preferences file in the `ab results` format (for training from a
    file, or to look at); returns the file. Rewriting the same folder gives the same files."""
    from tqdm.auto import tqdm

    from ...imaging import save_png

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = []
    for i in tqdm(range(n_prompts), desc="shapesworld pairs", disable=n_prompts < 500):
        prompt, images = shapesworld_variants(rng, size, n_variants)
        paths = []
        for k, image in enumerate(images):
            paths.append(folder / "images" / f"{i:06d}-{k}.png")
            save_png(image, paths[-1])
        pairs += ranked_pairs(prompt, paths, [oracle_key(prompt, image) for image in images])
    return write_preference_file(pairs, folder / "preferences.jsonl")


# -- absolute scores --------------------------------------------------------------------------------------------------

def score_examples(path, split: str = "train", score_weights: Optional[dict] = None) -> list[ScoreExample]:
    """(prompt, image, target) from a rich-feedback dataset (ShapesWorld make-dataset, prepared RichHF-18K); the
    target is the weighted mean of the chosen scores (default: overall)."""
    from ...shapesworld.dataset import load_shapesworld_dataset

    weights = score_weights or {"overall": 1.0}
    unknown = sorted(set(weights) - set(SCORE_COLUMNS))
    if unknown:
        raise UsageError(f"data.score_weights names {unknown}; the scores are {list(SCORE_COLUMNS)}")
    data = load_shapesworld_dataset(path)
    if split not in data:
        raise UsageError(f"{path} has no split {split!r}; it has {list(data)}")
    rows = data[split].select_columns(["prompt", "image", *[SCORE_COLUMNS[k] for k in weights]])
    total = sum(weights.values())
    return [ScoreExample(r["prompt"], np.asarray(r["image"].convert("RGB")),
                         sum(w * r[SCORE_COLUMNS[k]] for k, w in weights.items()) / total) for r in rows]
