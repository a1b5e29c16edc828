"""Rich feedback on the generator's own images: ShapesWorld-RichHF rows for generated (prompt, image) pairs.

`dataset.py` labels clean renders with injected artifacts and misalignments, so a RAHF trained on it learns those
flaws, not the ones a text-to-image model makes (wrong shapes, objects in the wrong place, smeared or deformed
objects). RichHF-18K is feedback on *generated* images; this module does the same on ShapesWorld. The exact oracle
reads a generated image (`oracle.evaluate`: detected objects, word judgements, artifact map), that reading becomes the
ground truth (`raters.ground_truth`, with the detected objects as the scene), and the same three simulated raters
label it and are consolidated as for renders (`raters.simulate_raters`, `raters.consolidate`). Rows have exactly
`dataset.FEATURES`, so `load_shapesworld_dataset` and RAHF training read the result unchanged and it can be
concatenated with the synthetic dataset.

What the raters see in a generated image:
  * artifact regions: each connected component of the oracle's artifact map (pixels no detected object explains:
    blotches, smears, broken outlines) is one flaw to click on and to charge plausibility for;
  * misalignment regions: the mask of each detected object involved in an unmet word (or not asked for at all); a
    missing object has nowhere to be clicked, as in `dataset.py`;
  * word labels, alignment and aesthetics: from the detected objects, exactly as `ground_truth` computes them.

Rows are pure functions of (split, image seed): rater noise is drawn from `np.random.default_rng([SEED_STREAM +
split id, seed])`, a stream disjoint from the synthetic dataset's `[split id, index]`. Splits are by prompt, so no
prompt of the dev or test split is seen in training.

    python scripts/make_generated_feedback.py       (generates a pool, labels it, trains, evaluates)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Sequence

import datasets
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from ..dataset_io import refuse_non_empty, save_dataset_atomically
from .dataset import FEATURES, SPLIT_IDS, _heatmap_image, _labels_text, _json_safe, richhf_columns
from .oracle import OracleConfig, evaluate, judge_words
from .raters import RATER_FIELDS, RaterConfig, annotations_to_record, consolidate, ground_truth, rater_agreement, \
    simulate_raters
from .scene import Scene, parse_prompt

# Rater-noise streams of generated images start here; the synthetic dataset uses SPLIT_IDS (0, 1, 2).
SEED_STREAM = 100
# A repaired twin's image seed is its source image's plus this (make_repaired_twins): a rater-noise stream of its own.
TWIN_SEED_OFFSET = 5_000_000


def artifact_regions(artifact_map: np.ndarray) -> list[np.ndarray]:
    """The oracle's artifact map as separate flaws: one bool mask per 8-connected component."""
    components, n = ndimage.label(artifact_map, structure=np.ones((3, 3)))
    return [components == i for i in range(1, n + 1)]


def _condition(has_artifact: bool, misaligned: bool) -> str:
    return {(False, False): "clean", (True, False): "artifacts", (False, True): "misaligned",
            (True, True): "both"}[(has_artifact, misaligned)]


class GeneratedRating(NamedTuple):
    """The oracle's reading of a generated image and the simulated raters' view of it."""

    report: object  # oracle.OracleReport
    truth: object  # raters.GroundTruth
    annotations: object  # raters.RaterAnnotations
    labels: object  # raters.ConsolidatedLabels
    artifacts: list  # the artifact regions, one bool mask each
    extras: list  # the extra objects nobody asked for


def rate_generated_image(prompt: str, image, split: str, seed: int, rater_config: RaterConfig = RaterConfig(),
                         oracle_config: OracleConfig = OracleConfig()) -> GeneratedRating:
    """The oracle's reading of a generated image and the simulated raters' labels of it. `seed` and `split` seed the
    raters (see `label_generated_image`)."""
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLIT_IDS)}")
    pixels = np.asarray(image)
    report = evaluate(prompt, pixels, oracle_config)
    size = pixels.shape[0]
    spec = parse_prompt(prompt)
    scene = Scene(spec, tuple(o.as_scene_object() for o in report.objects))
    _, extras, involved = judge_words(spec, report.objects)
    artifacts = artifact_regions(report.artifact_map)
    misalignments = [report.objects[i].mask for i in sorted(involved)]
    truth = ground_truth(scene, artifacts, misalignments, size)
    rng = np.random.default_rng([SEED_STREAM + SPLIT_IDS[split], int(seed)])
    annotations = simulate_raters(truth, rng, rater_config)
    labels = consolidate(annotations, size, rater_config.disk_radius)
    return GeneratedRating(report, truth, annotations, labels, artifacts, extras)


def label_generated_image(prompt: str, image, split: str, seed: int, file_name: str = "",
                          rater_config: RaterConfig = RaterConfig(),
                          oracle_config: OracleConfig = OracleConfig()) -> dict:
    """One dataset row (`dataset.FEATURES`) for a generated image of `prompt`, labelled by the simulated raters.

    `seed` identifies the image (its generation seed); with `split` it seeds the raters, so the row is a pure
    function of its arguments. `condition` is the oracle's reading ("clean", "artifacts", "misaligned", "both"),
    `artifact_kinds` has one "generated" per artifact region, `misalignment_kinds` the kinds of the unmet words
    (colour, shape, size, position, count) plus "extra_object" per object nobody asked for.
    """
    pixels = np.asarray(image)
    report, truth, annotations, labels, artifacts, extras = rate_generated_image(prompt, pixels, split, seed,
                                                                                 rater_config, oracle_config)
    unmet = [w.kind for w in report.words if not w.satisfied and w.kind != "other"]
    return {
        **richhf_columns(pixels, prompt, f"generated/{split}/{file_name or f'{int(seed):08d}.png'}", labels),
        "condition": _condition(report.has_artifact, not report.prompt_correct),
        "artifact_kinds": ["generated"] * len(artifacts),
        "misalignment_kinds": unmet + ["extra_object"] * len(extras),
        "true_artifact_region": _heatmap_image(report.artifact_map.astype(np.float64)),
        "true_misalignment_region": _heatmap_image(report.misalignment_map.astype(np.float64)),
        "true_prompt_misalignment_label": _labels_text(truth.word_labels),
        "true_scores": truth.qualities.as_list(),
        **annotations_to_record(annotations),
        "seed_split": SEED_STREAM + SPLIT_IDS[split],
        "seed_index": int(seed),
    }


def split_by_prompt(prompts: Sequence[str], dev_fraction: float = 0.1, test_fraction: float = 0.1,
                    seed: int = 0) -> dict[str, str]:
    """prompt -> "train" | "dev" | "test": a seeded shuffle of the distinct prompts cut by the fractions.

    Every image of a prompt lands in the same split, so dev and test measure prompts the model never saw.
    """
    from .dataset import split_sizes

    distinct = sorted(set(prompts))
    order = np.random.default_rng(seed).permutation(len(distinct))
    n_train, n_dev, _ = split_sizes(len(distinct), dev_fraction, test_fraction)
    names = ["train"] * n_train + ["dev"] * n_dev + ["test"] * (len(distinct) - n_train - n_dev)
    return {distinct[i]: name for i, name in zip(order, names)}


def make_generated_dataset(rows: Sequence[dict], out_dir, dev_fraction: float = 0.1, test_fraction: float = 0.1,
                           seed: int = 0, rater_config: RaterConfig = RaterConfig(), progress: bool = True,
                           rows_per_chunk: int = 1000) -> datasets.DatasetDict:
    """Label generated images and save train/dev/test (split by prompt) like `dataset.make_dataset`, atomically.

    `rows`: dicts with `prompt`, `seed`, `path` (a PNG) and optionally `file_name`, e.g. the rows of
    `richfeedback.finetune.pool.read_pool` or of a `generate_to_folder` manifest (with `path` added). Beside the
    splits, `out_dir/agreement.json` holds the raters' agreement per split and `out_dir/generated.json` where the
    images came from. Returns the DatasetDict as loaded back from `out_dir`.
    """
    from ..imaging import load_rgb

    out = Path(out_dir)
    refuse_non_empty(out)
    rows = list(rows)
    if not rows:
        raise ValueError("no generated images to label")
    split_of = split_by_prompt([r["prompt"] for r in rows], dev_fraction, test_fraction, seed)
    chunks: dict[str, list] = {name: [] for name in SPLIT_IDS}
    pending: dict[str, list] = {name: [] for name in SPLIT_IDS}
    for row in tqdm(rows, desc="label generated images", disable=not progress):
        split = split_of[row["prompt"]]
        pending[split].append(label_generated_image(row["prompt"], np.asarray(load_rgb(row["path"])), split,
                                                    row["seed"], str(row.get("file_name", "")), rater_config))
        if len(pending[split]) == rows_per_chunk:  # Arrow-encode as we go: memory holds one chunk of images
            chunks[split].append(datasets.Dataset.from_list(pending[split], features=FEATURES))
            pending[split] = []
    splits = {}
    for name in SPLIT_IDS:
        if pending[name]:
            chunks[name].append(datasets.Dataset.from_list(pending[name], features=FEATURES))
        if not chunks[name]:
            raise ValueError(f"the {name} split got no prompt: give more prompts or change the split fractions")
        splits[name] = datasets.concatenate_datasets(chunks[name]) if len(chunks[name]) > 1 else chunks[name][0]
    agreement = {}
    for name, ds in splits.items():
        size = int(np.asarray(ds[0]["image"]).shape[0])
        found = rater_agreement(ds.select_columns(list(RATER_FIELDS)), image_size=size,
                                radius_fraction=rater_config.disk_radius)
        agreement[name] = {k: _json_safe(v) for k, v in found.items()}
    summary = {"num_images": {name: len(ds) for name, ds in splits.items()},
               "num_prompts": {name: sum(1 for s in split_of.values() if s == name) for name in SPLIT_IDS},
               "split_seed": seed, "rater_seed_stream": SEED_STREAM}
    save_dataset_atomically(datasets.DatasetDict(splits), out, progress=progress, extra_files={
        "agreement.json": json.dumps(agreement, indent=2, allow_nan=False) + "\n",
        "generated.json": json.dumps(summary, indent=2) + "\n"})
    return datasets.load_from_disk(str(out))


def make_repaired_twins(sources: Sequence, out_dir, split: str = "train", progress: bool = True,
                        rater_config: RaterConfig = RaterConfig()) -> datasets.DatasetDict:
    """Minimal pairs for a heatmap that must see the generator's deformations: for every image of `split` in the
    generated-feedback datasets at `sources` that the oracle flags, the same image with what it flags repaired
    (`inpaint.examples.oracle_repair`: the crisp re-render pasted inside the dilated artifact map, every other pixel
    kept) and labelled again, so it differs from its twin only where the flaw was. Repairs the oracle still flags are
    left out. Saved (atomically) as a DatasetDict with one `split`, to add to RAHF training with `data.extra_paths`.
    Image seeds are the source's plus `TWIN_SEED_OFFSET`, a rater-noise stream no source image uses.
    """
    from ..inpaint.examples import oracle_repair
    from .dataset import load_shapesworld_dataset

    out = Path(out_dir)
    refuse_non_empty(out)
    rows = []
    for source in sources:
        data = load_shapesworld_dataset(source)
        if split not in data:
            raise ValueError(f"{source} has no split {split!r}; it has {list(data)}")
        part = data[split].select_columns(["image", "prompt", "seed_index"])
        for row in tqdm(part, desc=f"repaired twins of {source}", disable=not progress):
            pixels = np.asarray(row["image"].convert("RGB"))
            repair = oracle_repair(row["prompt"], pixels)
            if repair is None:
                continue
            seed = TWIN_SEED_OFFSET + int(row["seed_index"])
            twin = label_generated_image(row["prompt"], repair[1], split, seed, f"repaired-{seed}.png", rater_config)
            if not twin["artifact_kinds"]:  # the labelling's oracle reading finds the repair clean
                rows.append(twin)
    if not rows:
        raise ValueError(f"no image of {list(map(str, sources))} is flagged by the oracle and repaired: no twins")
    save_dataset_atomically(datasets.DatasetDict({split: datasets.Dataset.from_list(rows, features=FEATURES)}), out,
                            progress=progress)
    return datasets.load_from_disk(str(out))

