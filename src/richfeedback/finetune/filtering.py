"""Choose the training images of a scored pool, and write them as an `imagefolder` dataset.

    richfeedback pool filter runs/pool --policy align_sd --score "rahf:alignment" --temperature 0.05 --out runs/data

The score a policy ranks by is one reward model's or a weighted sum, `"1.0*rahf:alignment + 0.5*rahf:plausibility"`,
optionally z-scored per model over the pool first (`normalize="zscore"`), so that models on different scales can be
mixed. Policies:

- threshold: every image whose score is at least `min_score`: a number, or `"q0.9"`, the 0.9 quantile of the score
  over the whole pool (keep its best 10%, whichever prompts they belong to: a judge is surest of its extremes).
- topk: the `k` best images of each prompt (optionally also at least `min_score`).
- align_sd: the recipe of HPS v1's align_sd (`select_training_images.py`): prompts with at least `min_candidates`
  (4) images; p = softmax(score / temperature) over a prompt's N images; the best image is kept as a positive when
  max p > 2/N, i.e. at least twice the uniform probability. With `negatives=True` the worst image is also kept when
  max softmax(-score / temperature) > 2/N, captioned with `negative_prefix` ("Weird image. "), which then serves as
  the negative prompt at inference. align_sd's HPS scores are 100 x cosine similarities (temperature 1); scores in
  [0, 1] such as RAHF's need a temperature near 0.05 for the same selectivity. `negative_ratio` keeps at most that
  many negatives per kept positive, drawn at random (seeded): align_sd's authors trained on 37K positives and 21K
  negatives (0.57) and report that all the negatives train worse (tgxs002/align_sd#9).
  Like align_sd, flat images (no two neighbouring pixels 10 or more levels apart: blanks, and the black images a
  safety checker leaves) are left out before a prompt's images are counted (`skip_flat`; align_sd's own test looks
  only along rows, which reads as a typo for rows and columns).

- pairs: preference pairs for Diffusion-DPO (`loss.objective: dpo` in training): within each prompt, every two
  images whose scores differ by at least `min_gap` (> 0) make a pair (the better one chosen, the other rejected; with
  `min_score`, only chosen images that reach it); the `k` pairs of largest gap per prompt are kept. A judge that
  ranks badly among one prompt's images is right more often about large gaps (the embedded RAHF's alignment score orders a pair as the oracle's word accuracy does 63% of
  the time over all pairs, 75% when the scores are 0.1 apart, 83% at 0.2), so `min_gap` trades pairs for accuracy.

Every policy can require `min_prompts` prompts in the result, so that a too-strict filter fails loudly rather than
training on a handful of images.

The output folder is what `datasets.load_dataset("imagefolder", data_dir=OUT)` and diffusers' example training
scripts (`--train_data_dir OUT --caption_column text`) read: the images and a `metadata.jsonl` with `file_name`,
`text` (the caption to train on), `type` (positive|negative|pair), `score`, `scores`, `prompt` and `seed`; a pair's
row also has `rejected_file_name` (read by `datasets` as a second image column, `rejected`), `rejected_score`,
`rejected_scores` and `rejected_seed`. It is written
into a temporary sibling and renamed into place when complete; `filter_report.json` says what was kept and why.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from ..dataset_io import folder_written_atomically
from ..errors import UsageError
from ..files import link_or_copy
from ..imaging import load_rgb
from .pool import read_pool, score_weights

POLICIES = ("threshold", "topk", "align_sd", "pairs")
METADATA = "metadata.jsonl"
REPORT = "filter_report.json"
GAP_TOLERANCE = 1e-9
_TERM = re.compile(r"^\s*(?:([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*\*\s*)?([A-Za-z0-9_.:\-/]+)\s*$")


def parse_score_expression(text: str) -> dict[str, float]:
    """`"rahf:alignment"` -> {"rahf:alignment": 1.0}; `"2*a + 0.5*b"` -> {"a": 2.0, "b": 0.5}."""
    weights: dict[str, float] = {}
    for term in re.split(r"(?<![eE])\+", text):  # terms are separated by '+' (not the one in 1e+3)
        match = _TERM.match(term)
        if not match or not term.strip():
            raise UsageError(f"cannot read the score {text!r}: write a model name, or a weighted sum such as "
                             "'1.0*rahf:alignment + 0.5*rahf:plausibility'")
        weight, name = match.groups()
        weights[name] = weights.get(name, 0.0) + (float(weight) if weight is not None else 1.0)
    return weights


@dataclasses.dataclass
class FilterPolicy:
    """What to keep; see the module docstring."""

    policy: str = "align_sd"
    score: str = "rahf:overall"
    normalize: str = "none"  # none | zscore
    min_score: Optional[float | str] = None  # a number, or "q0.9": that quantile of the score over the pool
    k: int = 1  # topk: images kept per prompt; pairs: pairs kept per prompt
    min_gap: float = 0.0  # pairs: the least score difference between a pair's two images (0: any difference)
    temperature: float = 1.0
    min_candidates: int = 4
    negatives: bool = False
    negative_prefix: str = "Weird image. "
    negative_ratio: Optional[float] = None  # at most this many negatives per kept positive, a seeded random subset
    skip_flat: bool = True  # align_sd: leave flat images (blank, or blacked out by a safety checker) out of its N
    min_prompts: int = 1

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise UsageError(f"unknown filter policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.normalize not in ("none", "zscore"):
            raise UsageError(f"normalize must be 'none' or 'zscore', got {self.normalize!r}")
        if self.policy == "threshold" and self.min_score is None:
            raise UsageError("the threshold policy needs min_score (--min-score)")
        if self.k < 1 or self.temperature <= 0 or self.min_candidates < 2:
            raise UsageError("k must be >= 1, temperature > 0 and min_candidates >= 2")
        if not self.min_gap >= 0:
            raise UsageError(f"min_gap must be >= 0 (the least score difference of a pair), got {self.min_gap}")
        if self.policy == "pairs" and self.negatives:
            raise UsageError("negatives are align_sd's captioned rejects; the pairs policy keeps its rejected images "
                             "as pairs already: drop negatives")
        if self.negative_ratio is not None and not self.negative_ratio >= 0:
            raise UsageError(f"negative_ratio must be >= 0 (negatives per kept positive), got {self.negative_ratio}")
        self.quantile = parse_quantile(self.min_score)
        self.weights = parse_score_expression(self.score)

    def threshold(self, scores: np.ndarray) -> Optional[float]:
        """`min_score` as a number: itself, or its quantile of `scores` (the whole pool's)."""
        if self.quantile is None:
            return self.min_score
        return float(np.quantile(scores, self.quantile))


def parse_quantile(min_score) -> Optional[float]:
    """0.9 for "q0.9"; None for a number or None; anything else is refused with the two forms it can take."""
    if min_score is None or isinstance(min_score, (int, float)):
        return None
    text = str(min_score).strip().lower()
    if text.startswith("q"):
        try:
            quantile = float(text[1:])
        except ValueError:
            quantile = -1.0
        if 0.0 <= quantile < 1.0:
            return quantile
    raise UsageError(f"cannot read min_score {min_score!r}: write a number (0.5) or a quantile of the pool's scores "
                     "in [0, 1) after a q (q0.9 keeps the best 10%)")


def combined_scores(rows: list[dict], policy: FilterPolicy) -> np.ndarray:
    """The policy's score of every row; a missing score is an error that says which `pool score` to run."""
    total = np.zeros(len(rows))
    for name, weight in policy.weights.items():
        missing = sum(name not in r["scores"] for r in rows)
        if missing:
            known = sorted({k for r in rows for k in r["scores"]})
            raise UsageError(f"{missing} of {len(rows)} pool images have no {name!r} score; run `richfeedback pool "
                             f"score POOL --model {name.split(':')[0] if name.startswith('oracle:') else name}` "
                             f"first (scores in the pool: {', '.join(known) or 'none'})")
        values = np.array([r["scores"][name] for r in rows], dtype=np.float64)
        if policy.normalize == "zscore":
            values = (values - values.mean()) / (values.std() + 1e-12)
        total += weight * values
    return total


def is_flat(image: np.ndarray, min_step: int = 10) -> bool:
    """True when no two neighbouring pixels (along a row or a column) differ by `min_step` levels or more: a blank
    image, or one a safety checker blacked out."""
    pixels = np.asarray(image).astype(np.int16)
    steps = max(np.abs(np.diff(pixels, axis=0)).max(initial=0), np.abs(np.diff(pixels, axis=1)).max(initial=0))
    return bool(steps < min_step)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def select(rows: list[dict], policy: FilterPolicy, scores: Optional[np.ndarray] = None) -> list[dict]:
    """The kept rows, each with `type` (positive|negative), `text` (the caption to train on) and `score`; `scores`
    is `combined_scores(rows, policy)` when the caller already has it."""
    if scores is None:
        scores = combined_scores(rows, policy)
    min_score = policy.threshold(scores)
    by_prompt: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_prompt[row["prompt_index"]].append(i)
    if policy.policy == "pairs":
        return select_pairs(rows, policy, scores, by_prompt, min_score)
    kept: list[tuple[int, str, Optional[float]]] = []  # (row, type, confidence)
    for indices in by_prompt.values():
        s = scores[indices]
        order = [indices[j] for j in np.argsort(-s, kind="stable")]
        if policy.policy == "threshold":
            kept += [(i, "positive", None) for i in order if scores[i] >= min_score]
        elif policy.policy == "topk":
            kept += [(i, "positive", None) for i in order[:policy.k]
                     if min_score is None or scores[i] >= min_score]
        else:
            n = len(indices)
            if n < policy.min_candidates:
                continue
            p_best = _softmax(s / policy.temperature)
            if p_best.max() > 2.0 / n:
                kept.append((order[0], "positive", float(p_best.max())))
            p_worst = _softmax(-s / policy.temperature)
            if policy.negatives and p_worst.max() > 2.0 / n:
                # the first of tied worst images, as align_sd's argmax over the negated scores takes
                kept.append((indices[int(np.argmin(s))], "negative", float(p_worst.max())))
    if policy.negative_ratio is not None:
        negatives = [entry for entry in kept if entry[1] == "negative"]
        allowed = int(round(policy.negative_ratio * (len(kept) - len(negatives))))
        if len(negatives) > allowed:
            drop = np.random.default_rng(0).choice(len(negatives), len(negatives) - allowed, replace=False)
            dropped = {negatives[j][0] for j in drop}
            kept = [entry for entry in kept if entry[1] == "positive" or entry[0] not in dropped]
    kept.sort()
    out = []
    for i, kind, confidence in kept:
        row = rows[i]
        text = row["prompt"] if kind == "positive" else policy.negative_prefix + row["prompt"]
        out.append({**row, "type": kind, "text": text, "score": float(scores[i]), "confidence": confidence})
    positives = {r["prompt_index"] for r in out if r["type"] == "positive"}
    if len(positives) < policy.min_prompts:
        raise UsageError(f"the {policy.policy} policy kept positives for {len(positives)} prompts, fewer than "
                         f"min_prompts={policy.min_prompts}: loosen it (lower min_score/temperature, larger k) or "
                         "generate more images per prompt")
    return out


def select_pairs(rows: list[dict], policy: FilterPolicy, scores: np.ndarray, by_prompt: dict,
                 min_score: Optional[float] = None) -> list[dict]:
    """The `pairs` policy: for each prompt, its `k` pairs of images of largest score gap (at least `min_gap`, and
    more than 0; the chosen image at least `min_score` when given), as rows of the chosen image with the rejected
    one's `rejected_*` fields."""
    out = []
    for indices in by_prompt.values():
        candidates = []  # (-gap, chosen, rejected): the largest gaps first, ties in pool order
        for a in indices:
            for b in indices:
                gap = scores[a] - scores[b]
                # (a tolerance, so that word accuracies 0.65 and 0.55 are 0.1 apart as written, not 0.0999...)
                if gap > 0 and gap >= policy.min_gap - GAP_TOLERANCE and (min_score is None or scores[a] >= min_score):
                    candidates.append((-gap, a, b))
        for negative_gap, chosen, rejected in sorted(candidates)[:policy.k]:
            other = rows[rejected]
            out.append({**rows[chosen], "type": "pair", "text": rows[chosen]["prompt"], "score": float(scores[chosen]),
                        "confidence": None, "rejected_file_name": other["file_name"], "rejected_path": other["path"],
                        "rejected_score": float(scores[rejected]), "rejected_scores": other["scores"],
                        "rejected_seed": other["seed"]})
    prompts = {r["prompt_index"] for r in out}
    if len(prompts) < policy.min_prompts:
        raise UsageError(f"the pairs policy kept pairs for {len(prompts)} prompts, fewer than min_prompts="
                         f"{policy.min_prompts}: lower min_gap or generate more images per prompt")
    return out


def _summary(rows: list[dict]) -> dict:
    """Means of every score over `rows`, for the report (how much better the kept images are than the pool)."""
    names = sorted({k for r in rows for k in r["scores"]})
    return {name: float(np.mean([r["scores"][name] for r in rows if name in r["scores"]])) for name in names}


def filter_pool(pool_dir: str | os.PathLike, out_dir: str | os.PathLike, policy: FilterPolicy) -> dict:
    """Write the `imagefolder` dataset of the images `policy` keeps; returns the report (also in filter_report.json)."""
    rows = read_pool(pool_dir)
    if not rows:
        raise UsageError(f"{pool_dir} has no images; run `richfeedback pool generate` first")
    flat = []
    if policy.policy == "align_sd" and policy.skip_flat:
        flat = [r["file_name"] for r in rows if is_flat(load_rgb(r["path"]))]
        left_out = set(flat)
        rows = [r for r in rows if r["file_name"] not in left_out]
    scores = combined_scores(rows, policy)
    chosen = select(rows, policy, scores)
    with folder_written_atomically(Path(out_dir)) as tmp:
        with open(tmp / METADATA, "w") as f:
            for row in chosen:
                record = {"file_name": _copy_image(row["file_name"], row["path"], tmp), "text": row["text"],
                          "type": row["type"], "score": row["score"], "scores": row["scores"], "prompt": row["prompt"],
                          "seed": row["seed"], "confidence": row["confidence"]}
                if row["type"] == "pair":
                    rejected = _copy_image(row["rejected_file_name"], row["rejected_path"], tmp)
                    record.update({"rejected_file_name": rejected, "rejected_score": row["rejected_score"],
                                   "rejected_scores": row["rejected_scores"], "rejected_seed": row["rejected_seed"]})
                f.write(json.dumps(record) + "\n")
        positives = [r for r in chosen if r["type"] in ("positive", "pair")]
        report = {
            "pool": str(pool_dir), "policy": dataclasses.asdict(policy), "score_weights": score_weights(pool_dir),
            "min_score_value": policy.threshold(scores),  # a quantile, resolved
            "pool_images": len(rows) + len(flat), "skipped_flat": flat,
            "pool_prompts": len({r["prompt_index"] for r in rows}),
            "kept_positive": len(positives), "kept_negative": len(chosen) - len(positives),
            "kept_pairs": sum(r["type"] == "pair" for r in chosen),
            "kept_prompts": len({r["prompt_index"] for r in positives}),
            "mean_scores_pool": _summary(rows), "mean_scores_kept_positive": _summary(positives),
        }
        (tmp / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


def describe_kept(report: dict) -> str:
    """"820 positive and 0 negative images" or "3,900 pairs" (of `filter_pool`'s report), for messages."""
    if report.get("kept_pairs"):
        return f"{report['kept_pairs']} pairs"
    return f"{report['kept_positive']} positive and {report['kept_negative']} negative images"


def _copy_image(pool_file_name: str, path: str, folder: Path) -> str:
    """Put a pool image into the dataset folder (once, however many pairs it is in; hard-linked where the file system
    allows, else copied); returns its file_name there."""
    file_name = pool_file_name.replace("/", "_")
    if not (folder / file_name).exists():
        link_or_copy(path, folder / file_name)
    return file_name


def read_metadata(data_dir: str | os.PathLike) -> list[dict]:
    path = Path(data_dir) / METADATA
    if not path.is_file():
        raise UsageError(f"{data_dir} has no {METADATA}: give the folder `richfeedback pool filter` wrote, or any "
                         "imagefolder dataset with a metadata.jsonl of file_name and text")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def negative_prompt_of(data_dir: str | os.PathLike) -> Optional[str]:
    """The negative prefix to use at inference when the dataset has negatives (align_sd), else None."""
    report = Path(data_dir) / REPORT
    if not report.is_file():
        return None
    info = json.loads(report.read_text())
    return info["policy"]["negative_prefix"].strip() if info.get("kept_negative") else None
