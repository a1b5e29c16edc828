"""ShapesWorld-RichHF: a synthetic dataset in the RichHF-18K format, with the exact truth kept beside the labels.

Each example is a ShapesWorld scene for a random prompt, possibly made to contradict its prompt (`misalign.py`) and
possibly damaged after rendering (`artifacts.py`), labelled by three simulated raters (`raters.py`) and consolidated as
RichHF-18K consolidates its raters. The columns of RichHF-18K (as `youweiliang/RichHF`'s `get_dataset.py` stores them:
`image`, `prompt`, `filename`, the four scores, the two heatmaps, `prompt_misalignment_label`, `clean_prompt`,
`labeled_prompt`) come first, so RAHF training code reads this dataset unchanged; the extra columns keep what the
raters saw and did, so that label noise and rater agreement can be studied and recomputed.

Every example is a pure function of (split, index): it is drawn from `np.random.default_rng([SPLIT_IDS[split],
index])`, so the splits come from disjoint seeds and an example is the same however many are made.

    richfeedback shapesworld make-dataset --n 2000 --out data/shapes-richhf     (the CLI calls `make_dataset`)
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
from pathlib import Path
from typing import Sequence

import datasets
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..dataset_io import refuse_non_empty, save_dataset_atomically
from ..eval import metrics
from .artifacts import ARTIFACT_KINDS, inject_artifact
from .misalign import MISALIGNMENT_KINDS, inject_misalignment
from .raters import (RATER_FIELDS, RaterConfig, annotations_to_record, consolidate, ground_truth,
                     rater_agreement, simulate_raters)
from .render import render
from .scene import Scene, prompt_words, sample_scene

SPLIT_IDS: dict[str, int] = {"train": 0, "dev": 1, "test": 2}
# What is wrong with an image, and how often. RichHF-18K's Pick-a-Pic images are mostly flawed somehow; a quarter
# of clean images keeps "nothing to click" common enough for the GT=0 heatmap metrics.
CONDITION_PROBABILITIES: dict[str, float] = {"clean": 0.25, "artifacts": 0.35, "misaligned": 0.2, "both": 0.2}
MAX_ARTIFACTS = 2
CREATE_COMMAND = "richfeedback shapesworld make-dataset --n 2000 --out {path}"

FEATURES = datasets.Features({
    # RichHF-18K (+ the fields youweiliang/RichHF adds)
    "image": datasets.Image(),
    "prompt": datasets.Value("string"),
    "filename": datasets.Value("string"),
    "aesthetics_score": datasets.Value("float32"),
    "artifact_score": datasets.Value("float32"),
    "misalignment_score": datasets.Value("float32"),
    "overall_score": datasets.Value("float32"),
    "artifact_map": datasets.Image(),
    "misalignment_map": datasets.Image(),
    "prompt_misalignment_label": datasets.Value("string"),
    "clean_prompt": datasets.Value("string"),
    "labeled_prompt": datasets.Value("string"),
    # ShapesWorld truth
    "condition": datasets.Value("string"),
    "artifact_kinds": datasets.Sequence(datasets.Value("string")),
    "misalignment_kinds": datasets.Sequence(datasets.Value("string")),
    "true_artifact_region": datasets.Image(),
    "true_misalignment_region": datasets.Image(),
    "true_prompt_misalignment_label": datasets.Value("string"),
    "true_scores": datasets.Sequence(datasets.Value("float32")),  # latent qualities, in raters.SCORE_NAMES order
    # What each rater did
    "rater_scores": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
    "rater_word_labels": datasets.Sequence(datasets.Value("string")),
    "artifact_points": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
    "misalignment_points": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
    "seed_split": datasets.Value("int32"),
    "seed_index": datasets.Value("int64"),
})


def _heatmap_image(heatmap: np.ndarray) -> Image.Image:
    """A [0, 1] map as RichHF-18K stores it: a single-channel uint8 image, 255 = every rater clicked here."""
    return Image.fromarray(np.round(255.0 * np.clip(heatmap, 0.0, 1.0)).astype(np.uint8))


def _labels_text(labels: Sequence[int]) -> str:
    return " ".join(str(int(v)) for v in labels)


def richhf_columns(pixels: np.ndarray, prompt: str, filename: str, labels) -> dict:
    """The RichHF-18K columns of one image and its consolidated labels, as youweiliang/RichHF's get_dataset.py stores
    them (shared by the synthetic examples and by feedback on generated images)."""
    words = prompt_words(prompt)
    return {
        "image": Image.fromarray(pixels),
        "prompt": prompt,
        "filename": filename,
        "aesthetics_score": labels.scores["aesthetics"],
        "artifact_score": labels.scores["plausibility"],
        "misalignment_score": labels.scores["alignment"],
        "overall_score": labels.scores["overall"],
        "artifact_map": _heatmap_image(labels.artifact_map),
        "misalignment_map": _heatmap_image(labels.misalignment_map),
        "prompt_misalignment_label": _labels_text(labels.word_labels),
        "clean_prompt": " ".join(words),
        "labeled_prompt": metrics.labeled_prompt(words, labels.word_labels),
    }


def _drawn_scene(rng: np.random.Generator, size: int):
    """(scene as drawn, its misalignments, the condition wanted): the first draws of an example's generator."""
    scene = sample_scene(rng)
    wanted = str(rng.choice(list(CONDITION_PROBABILITIES), p=list(CONDITION_PROBABILITIES.values())))
    misalignments = []
    if wanted in ("misaligned", "both"):
        for kind in rng.permutation(MISALIGNMENT_KINDS):
            result = inject_misalignment(scene, rng, str(kind), size)
            if result is not None and (wanted == "misaligned" or result[0].objects):
                scene, misalignment = result
                misalignments.append(misalignment)
                break
    return scene, misalignments, wanted


def drawn_scene(split: str | int, index: int, size: int = 64) -> Scene:
    """The scene example (`split`, `index`) draws: its objects after any misalignment, before artifacts; the same
    draws as `make_example`, without rendering. `split` is a name or the `seed_split` column's number."""
    split_id = split if isinstance(split, int) else SPLIT_IDS.get(split)
    if split_id not in SPLIT_IDS.values():
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLIT_IDS)} or {tuple(SPLIT_IDS.values())}")
    return _drawn_scene(np.random.default_rng([split_id, index]), size)[0]


def make_example(split: str, index: int, size: int = 64, rater_config: RaterConfig = RaterConfig()) -> dict:
    """One labelled example, a pure function of (split, index, size, rater_config); see `FEATURES` for its fields.

    The scene is misaligned first (the misalignment lives in what is drawn), then rendered, then damaged (artifacts
    live in the pixels). `condition` records what was actually done: an artifact kind that does not fit the scene is
    skipped for the next one, and "both" never keeps a misalignment that leaves nothing to damage.
    """
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLIT_IDS)}")
    rng = np.random.default_rng([SPLIT_IDS[split], index])
    scene, misalignments, wanted = _drawn_scene(rng, size)
    pixels = render(scene, size)
    artifacts = []
    if wanted in ("artifacts", "both"):
        for _ in range(int(rng.integers(1, MAX_ARTIFACTS + 1))):
            for kind in rng.permutation(ARTIFACT_KINDS):
                result = inject_artifact(pixels, scene, rng, str(kind))
                if result is not None:
                    pixels, artifact = result
                    artifacts.append(artifact)
                    break

    truth = ground_truth(scene, [a.region for a in artifacts], [m.region for m in misalignments], size)
    annotations = simulate_raters(truth, rng, rater_config)
    labels = consolidate(annotations, size, rater_config.disk_radius)

    prompt = scene.prompt.text
    true_artifact_region = np.zeros((size, size), dtype=bool)
    for a in artifacts:
        true_artifact_region |= a.region
    true_misalignment_region = np.zeros((size, size), dtype=bool)
    for m in misalignments:
        true_misalignment_region |= m.region
    condition = {(False, False): "clean", (True, False): "artifacts", (False, True): "misaligned",
                 (True, True): "both"}[(bool(artifacts), bool(misalignments))]

    return {
        **richhf_columns(pixels, prompt, f"shapesworld/{split}/{index:06d}.png", labels),
        "condition": condition,
        "artifact_kinds": [a.kind for a in artifacts],
        "misalignment_kinds": [m.kind for m in misalignments],
        "true_artifact_region": _heatmap_image(true_artifact_region.astype(np.float64)),
        "true_misalignment_region": _heatmap_image(true_misalignment_region.astype(np.float64)),
        "true_prompt_misalignment_label": _labels_text(truth.word_labels),
        "true_scores": truth.qualities.as_list(),
        **annotations_to_record(annotations),
        "seed_split": SPLIT_IDS[split],
        "seed_index": index,
    }


def split_sizes(n: int, dev_fraction: float = 0.1, test_fraction: float = 0.1) -> tuple[int, int, int]:
    """(n_train, n_dev, n_test) for `n` images: dev and test rounded to the nearest image, train the rest.

    A non-zero fraction gets at least one image, since `make_dataset` cannot save an empty split.
    """
    if n < 0 or not (0 <= dev_fraction and 0 <= test_fraction and dev_fraction + test_fraction <= 1):
        raise ValueError(f"need n >= 0 and fractions >= 0 summing to at most 1, got n={n}, dev={dev_fraction}, "
                         f"test={test_fraction}")
    n_dev, n_test = (max(1, round(n * f)) if f > 0 else 0 for f in (dev_fraction, test_fraction))
    if n_dev + n_test > n:
        raise ValueError(f"{n} images are too few for a dev and a test split; ask for at least {n_dev + n_test}")
    return n - n_dev - n_test, n_dev, n_test


def _make_split(split: str, n: int, size: int, num_proc: int, progress: bool, rater_config: RaterConfig,
                rows_per_chunk: int = 1000) -> datasets.Dataset:
    # Rows are turned into Arrow (encoded PNGs) every `rows_per_chunk`, so memory holds at most one chunk of decoded
    # images whatever the split size.
    make = functools.partial(make_example, split, size=size, rater_config=rater_config)
    chunks, rows = [], []
    pool = multiprocessing.get_context("spawn").Pool(num_proc) if num_proc > 1 else None
    try:
        examples = pool.imap(make, range(n), chunksize=16) if pool else map(make, range(n))
        for row in tqdm(examples, total=n, desc=f"shapesworld {split}", disable=not progress):
            rows.append(row)
            if len(rows) == rows_per_chunk:
                chunks.append(datasets.Dataset.from_list(rows, features=FEATURES))
                rows = []
    finally:
        if pool:
            pool.terminate()
    if rows:
        chunks.append(datasets.Dataset.from_list(rows, features=FEATURES))
    return datasets.concatenate_datasets(chunks) if len(chunks) > 1 else chunks[0]


def _json_safe(value):
    """nan (an agreement metric with nothing to average) as null, so agreement.json is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def make_dataset(out_dir, n_train: int, n_dev: int, n_test: int, size: int = 64, num_proc: int = 1,
                 progress: bool = True, rater_config: RaterConfig = RaterConfig()) -> datasets.DatasetDict:
    """Build the train/dev/test splits and save them with `save_to_disk` into `out_dir`, atomically.

    Every split needs at least one example; `out_dir` must not exist or be empty. Everything is written into a
    temporary sibling directory that is renamed to `out_dir` only when complete, so an interrupted run never leaves a
    half-written dataset behind. Beside the splits, `out_dir/agreement.json` holds `raters.rater_agreement` of each
    split (nan as null): the human ceiling for model metrics. Returns the DatasetDict as loaded back from `out_dir`.
    """
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    if min(sizes.values()) < 1:
        raise ValueError(f"every split needs at least one example (datasets cannot save an empty split), got {sizes}")
    out = Path(out_dir)
    refuse_non_empty(out)  # before the minutes of generating, not only after
    splits = {split: _make_split(split, n, size, num_proc, progress, rater_config) for split, n in sizes.items()}
    agreement = {}
    for split, ds in splits.items():
        found = rater_agreement(ds.select_columns(list(RATER_FIELDS)), image_size=size,
                                radius_fraction=rater_config.disk_radius)
        agreement[split] = {k: _json_safe(v) for k, v in found.items()}
    save_dataset_atomically(datasets.DatasetDict(splits), out, progress=progress,
                            extra_files={"agreement.json": json.dumps(agreement, indent=2, allow_nan=False) + "\n"})
    return datasets.load_from_disk(str(out))


def load_shapesworld_dataset(path) -> datasets.DatasetDict:
    """The DatasetDict that `make_dataset` saved at `path`; a FileNotFoundError says how to create it if missing."""
    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise FileNotFoundError(
            f"no ShapesWorld dataset at {path} (expected a `save_to_disk` DatasetDict with dataset_dict.json). "
            f"Create it with:\n  {CREATE_COMMAND.format(path=path)}"
        )
    return datasets.load_from_disk(str(path))
