"""Simulated annotators that label ShapesWorld images the way RichHF-18K's raters labelled Pick-a-Pic images.

RichHF-18K's protocol (Liang et al., CVPR 2024): each image is shown to three raters. A rater clicks points on the
implausible parts of the image and on the parts that do not match the prompt, marks the prompt words the image gets
wrong, and gives four 5-point Likert scores (plausibility, text-image alignment, aesthetics, overall). The released
labels are consolidations: the points become disks that are averaged over raters into a heatmap, the scores are the
mean Likert score rescaled to [0, 1] (RichHF-18K: "all scores are the higher the better"), and a word is misaligned
when most raters marked it.

Here the ground truth is exact (the injected artifact and misalignment regions, the oracle's word labels and latent
qualities computed from the scene), and three noisy raters turn it into RichHF-style labels. Their noise is what makes
the labels human-like: they miss small artifacts, click anywhere inside a region, occasionally click where nothing is
wrong, disagree on scores by about half a Likert point and now and then mark a word by mistake. `rater_agreement`
measures how much they agree with each other: the ceiling a reward model trained on their consolidated labels can be
compared with.

Quality functions (all in [0, 1], higher is better):

* `plausibility`: 1 without artifacts; each artifact removes a quarter to a half of what is left, more as it grows.
* `alignment`: 1 when every content word holds; each misaligned content word costs twice its share of the prompt,
  each object the prompt does not ask for costs 0.25.
* `aesthetics`: a composition score (balance, margins, spacing) damaged by artifacts.
* `overall`: 0.35 plausibility + 0.35 alignment + 0.3 aesthetics.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from ..eval import metrics
from .oracle import judge_words
from .scene import Scene, SceneObject

SCORE_NAMES: tuple[str, ...] = ("plausibility", "alignment", "aesthetics", "overall")
HEATMAP_NAMES: tuple[str, ...] = ("artifact_map", "misalignment_map")
# The record fields a saved dataset needs to recompute `rater_agreement` without decoding any image.
RATER_FIELDS: tuple[str, ...] = ("rater_scores", "rater_word_labels", "artifact_points", "misalignment_points")


# ----------------------------------------------------------------------------- latent qualities
@dataclasses.dataclass(frozen=True)
class Qualities:
    """The latent qualities raters see through their noise, each in [0, 1] with higher meaning better."""

    plausibility: float
    alignment: float
    aesthetics: float
    overall: float

    def as_list(self) -> list[float]:
        """In `SCORE_NAMES` order."""
        return [self.plausibility, self.alignment, self.aesthetics, self.overall]


def plausibility(artifact_areas: Sequence[float]) -> float:
    """1 for an image without artifacts; each artifact multiplies it by 1 - (0.25 + min(0.25, 5 * area)).

    `area` is the artifact's fraction of the image. Any visible flaw costs at least a quarter (people notice broken
    things out of proportion to their size), and the cost grows with the area up to a half for an artifact covering
    5% of the image, e.g. one tiny blob gives ~0.74, a large ghost 0.5, two mid-sized artifacts ~0.4.
    """
    quality = 1.0
    for area in artifact_areas:
        quality *= 1.0 - (0.25 + min(0.25, 5.0 * float(area)))
    return quality


def alignment(word_labels: Sequence[int], content_words: Sequence[bool], extra_objects: int = 0) -> float:
    """1 - 2 * (fraction of content words misaligned) - 0.25 * extra_objects, clipped to [0, 1].

    `word_labels` follow RichHF-18K (1 aligned, 0 misaligned), one per prompt word; `content_words` marks the words
    that carry meaning (count, size, colour, shape, position; not "and", "on", "the", "in"). Errors count double
    because a person reads one wrong attribute as a wrong image, not as a mostly right one: a quarter of the content
    words wrong is judged half aligned. Objects nobody asked for contradict no word, so they are charged separately.
    """
    if len(word_labels) != len(content_words):
        raise ValueError(f"{len(word_labels)} word labels but {len(content_words)} content-word flags")
    n_content = sum(bool(c) for c in content_words)
    n_wrong = sum(1 for label, c in zip(word_labels, content_words) if c and int(label) == 0)
    wrong_fraction = n_wrong / n_content if n_content else 0.0
    return float(np.clip(1.0 - 2.0 * wrong_fraction - 0.25 * extra_objects, 0.0, 1.0))


def composition(objects: Sequence[SceneObject]) -> float:
    """How well the objects are arranged, in [0, 1]: 0.4 balance + 0.3 margin + 0.3 spacing.

    * balance: the area-weighted centre of mass of the objects near the image centre (1 at the centre, 0 at a
      distance of 0.35 of the image side or more), the classic "visual weight" rule;
    * margin: the smallest distance from an object's bounding box to the border (1 from 0.08 of the side on, falling
      linearly to 0 for an object touching the border): cramped edges look cut off;
    * spacing: the smallest gap between two bounding boxes (1 from 0.1 of the side on, linearly to 0 when touching);
      a single object is perfectly spaced.

    An empty image has nothing to compose and scores 0.2.
    """
    if not objects:
        return 0.2
    weights = np.array([o.h * o.h for o in objects])
    centre = np.array([[o.cx, o.cy] for o in objects])
    mass_centre = (weights[:, None] * centre).sum(0) / weights.sum()
    balance = 1.0 - min(1.0, float(np.hypot(*(mass_centre - 0.5))) / 0.35)
    min_margin = min(min(x0, y0, 1.0 - x1, 1.0 - y1) for x0, y0, x1, y1 in (o.bbox() for o in objects))
    margin = float(np.clip(min_margin / 0.08, 0.0, 1.0))
    spacing = 1.0
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            gap = max(abs(a.cx - b.cx) - a.h - b.h, abs(a.cy - b.cy) - a.h - b.h)  # Chebyshev gap of the boxes
            spacing = min(spacing, float(np.clip(gap / 0.1, 0.0, 1.0)))
    return 0.4 * balance + 0.3 * margin + 0.3 * spacing


def aesthetics(objects: Sequence[SceneObject], artifact_area: float = 0.0) -> float:
    """`composition(objects)` times (1 - damage), damage = min(0.5, 8 * artifact_area).

    `artifact_area` is the fraction of the image covered by artifacts; an artifact on 2% of the image takes 16% off
    the aesthetics, and no amount of damage takes more than half (a well composed image stays somewhat pleasing).
    """
    return composition(objects) * (1.0 - min(0.5, 8.0 * float(artifact_area)))


def overall(plausibility_: float, alignment_: float, aesthetics_: float) -> float:
    """0.35 plausibility + 0.35 alignment + 0.3 aesthetics: an image is only good when it is right and unbroken."""
    return 0.35 * plausibility_ + 0.35 * alignment_ + 0.3 * aesthetics_


# ----------------------------------------------------------------------------- ground truth
@dataclasses.dataclass
class GroundTruth:
    """Everything the raters look at for one image; regions are bool (H, W) masks."""

    image_size: int
    artifact_regions: list[np.ndarray]
    misalignment_regions: list[np.ndarray]  # may be empty masks: a missing object has nowhere to be clicked
    word_labels: list[int]  # 1 aligned, 0 misaligned, aligned with `prompt_words(prompt)`
    content_words: list[bool]  # per word: whether raters would consider marking it
    qualities: Qualities


def ground_truth(scene: Scene, artifact_regions: Sequence[np.ndarray], misalignment_regions: Sequence[np.ndarray],
                 image_size: int) -> GroundTruth:
    """The exact labels of an image rendered from `scene` (after any misalignment) and damaged by the artifacts.

    Word labels come from `oracle.judge_words` on the true objects, the judgement the misalignment injectors use, so
    they equal `Misalignment.word_labels`.
    """
    judgements, extras, _ = judge_words(scene.prompt, scene.objects)
    word_labels = [int(j.satisfied) for j in judgements]
    content_words = [j.kind != "other" for j in judgements]
    artifact_regions = [np.asarray(r, dtype=bool) for r in artifact_regions]
    damaged = np.zeros((image_size, image_size), dtype=bool)
    for region in artifact_regions:
        damaged |= region
    plaus = plausibility([float(r.mean()) for r in artifact_regions])
    align = alignment(word_labels, content_words, len(extras))
    aes = aesthetics(scene.objects, float(damaged.mean()))
    qualities = Qualities(plaus, align, aes, overall(plaus, align, aes))
    return GroundTruth(image_size, artifact_regions, [np.asarray(r, dtype=bool) for r in misalignment_regions],
                       word_labels, content_words, qualities)


# ----------------------------------------------------------------------------- raters
@dataclasses.dataclass(frozen=True)
class RaterConfig:
    """How many raters there are and how noisy each one is."""

    num_raters: int = 3
    # Probability of noticing a region grows linearly with its area, from `notice_prob_tiny` for a region of (nearly)
    # no area to `notice_prob_large` for one covering `large_area` of the image or more.
    notice_prob_tiny: float = 0.7
    notice_prob_large: float = 0.95
    large_area: float = 0.04
    max_clicks_per_region: int = 2  # a noticed region gets 1 to this many clicks
    false_click_prob: float = 0.05  # per rater and heatmap: one click on a random pixel
    disk_radius: float = 1 / 20  # of the image height, the radius of the disk drawn around each click
    score_sigma: float = 0.5  # Likert-point noise of each single score
    bias_sigma: float = 0.25  # Likert-point leniency of a rater on one image, shared by its four scores
    mark_misaligned_prob: float = 0.9  # of marking a truly misaligned word
    mark_aligned_prob: float = 0.03  # of marking an aligned content word by mistake


@dataclasses.dataclass
class RaterAnnotations:
    """What each rater did on one image; index 0 of every field is the rater."""

    artifact_points: list[list[tuple[int, int]]]  # per rater, (x, y) pixel coordinates of its clicks
    misalignment_points: list[list[tuple[int, int]]]
    likert: np.ndarray  # (raters, 4) ints in 1..5, columns in `SCORE_NAMES` order
    word_marks: np.ndarray  # (raters, words) 1 where the rater marked the word misaligned

    @property
    def num_raters(self) -> int:
        return len(self.likert)


def notice_probability(area: float, config: RaterConfig = RaterConfig()) -> float:
    """Probability that a rater notices (and so clicks on) a region covering `area` of the image."""
    t = min(1.0, float(area) / config.large_area)
    return config.notice_prob_tiny + (config.notice_prob_large - config.notice_prob_tiny) * t


def _click(regions: Sequence[np.ndarray], size: int, rng: np.random.Generator,
           config: RaterConfig) -> list[tuple[int, int]]:
    points = []
    for region in regions:
        pixels = np.argwhere(region)  # (row, col)
        if len(pixels) == 0 or rng.random() >= notice_probability(region.mean(), config):
            continue
        n_clicks = min(int(rng.integers(1, config.max_clicks_per_region + 1)), len(pixels))
        for i in rng.choice(len(pixels), size=n_clicks, replace=False):
            row, col = pixels[i]
            points.append((int(col), int(row)))
    if rng.random() < config.false_click_prob:
        points.append((int(rng.integers(size)), int(rng.integers(size))))
    return points


def likert_score(quality: float, bias: float, rng: np.random.Generator, sigma: float) -> int:
    """clip(round(1 + 4 * quality + bias + N(0, sigma)), 1, 5): a 5-point answer to a [0, 1] quality."""
    return int(np.clip(np.round(1.0 + 4.0 * quality + bias + rng.normal(0.0, sigma)), 1, 5))


def simulate_raters(truth: GroundTruth, rng: np.random.Generator,
                    config: RaterConfig = RaterConfig()) -> RaterAnnotations:
    """Three (`config.num_raters`) independent noisy raters labelling one image."""
    size = truth.image_size
    labels = np.asarray(truth.word_labels)
    content = np.asarray(truth.content_words, dtype=bool)
    mark_prob = np.where(labels == 0, config.mark_misaligned_prob, np.where(content, config.mark_aligned_prob, 0.0))
    artifact_points, misalignment_points, likert, marks = [], [], [], []
    for _ in range(config.num_raters):
        artifact_points.append(_click(truth.artifact_regions, size, rng, config))
        misalignment_points.append(_click(truth.misalignment_regions, size, rng, config))
        bias = rng.normal(0.0, config.bias_sigma)
        likert.append([likert_score(q, bias, rng, config.score_sigma) for q in truth.qualities.as_list()])
        marks.append((rng.random(len(labels)) < mark_prob).astype(np.int64))
    return RaterAnnotations(artifact_points, misalignment_points, np.array(likert, dtype=np.int64),
                            np.array(marks, dtype=np.int64).reshape(config.num_raters, len(labels)))


# ----------------------------------------------------------------------------- consolidation
def disk_heatmap(points: Iterable[tuple[int, int]], size: int, radius: float) -> np.ndarray:
    """(size, size) float map: 1.0 on every pixel within `radius` pixels of a click (x, y), 0 elsewhere."""
    rows, cols = np.mgrid[0:size, 0:size]
    heatmap = np.zeros((size, size), dtype=np.float64)
    for x, y in points:
        heatmap[(cols - x) ** 2 + (rows - y) ** 2 <= radius * radius] = 1.0
    return heatmap


def rater_heatmaps(points_per_rater: Sequence[Sequence[tuple[int, int]]], size: int,
                   radius_fraction: float = RaterConfig.disk_radius) -> np.ndarray:
    """(raters, size, size): each rater's clicks as a union of disks of radius `radius_fraction * size`."""
    return np.stack([disk_heatmap(points, size, radius_fraction * size) for points in points_per_rater])


def normalise_likert(mean_likert):
    """(mean - 1) / 4: a mean 5-point score on RichHF-18K's [0, 1] scale, higher is better."""
    return (np.asarray(mean_likert, dtype=np.float64) - 1.0) / 4.0


def majority_word_labels(word_marks: np.ndarray) -> list[int]:
    """RichHF-18K labels from per-rater marks: 0 (misaligned) where at least half the raters (2 of 3) marked it."""
    marks = np.asarray(word_marks)
    return [int(not misaligned) for misaligned in (2 * marks.sum(0) >= len(marks))]


@dataclasses.dataclass
class ConsolidatedLabels:
    """RichHF-18K's released labels for one image."""

    artifact_map: np.ndarray  # (H, W) float, mean over raters of their disk maps: multiples of 1/raters
    misalignment_map: np.ndarray
    scores: dict[str, float]  # `SCORE_NAMES` -> [0, 1], higher is better
    word_labels: list[int]  # 1 aligned, 0 misaligned


def consolidate(annotations: RaterAnnotations, image_size: int,
                radius_fraction: float = RaterConfig.disk_radius) -> ConsolidatedLabels:
    """Average the heatmaps, average and rescale the scores, majority-vote the words."""
    return ConsolidatedLabels(
        artifact_map=rater_heatmaps(annotations.artifact_points, image_size, radius_fraction).mean(0),
        misalignment_map=rater_heatmaps(annotations.misalignment_points, image_size, radius_fraction).mean(0),
        scores=dict(zip(SCORE_NAMES, normalise_likert(annotations.likert.mean(0)).tolist())),
        word_labels=majority_word_labels(annotations.word_marks),
    )


# ----------------------------------------------------------------------------- records
def annotations_to_record(annotations: RaterAnnotations) -> dict:
    """The `RATER_FIELDS` of a dataset row: plain lists, word marks as RichHF label strings (0 = marked)."""
    def points(per_rater):
        return [[r, x, y] for r, pts in enumerate(per_rater) for x, y in pts]

    return {
        "rater_scores": annotations.likert.tolist(),
        "rater_word_labels": [" ".join(str(1 - int(m)) for m in marks) for marks in annotations.word_marks],
        "artifact_points": points(annotations.artifact_points),
        "misalignment_points": points(annotations.misalignment_points),
    }


def annotations_from_record(record: Mapping) -> RaterAnnotations:
    """Inverse of `annotations_to_record`; reads a dataset row (extra fields are ignored)."""
    num_raters = len(record["rater_scores"])

    def points(rows):
        per_rater: list[list[tuple[int, int]]] = [[] for _ in range(num_raters)]
        for r, x, y in rows:
            per_rater[int(r)].append((int(x), int(y)))
        return per_rater

    marks = [[1 - int(v) for v in labels.split()] for labels in record["rater_word_labels"]]
    n_words = len(marks[0]) if marks else 0
    return RaterAnnotations(points(record["artifact_points"]), points(record["misalignment_points"]),
                            np.asarray(record["rater_scores"], dtype=np.int64).reshape(num_raters, len(SCORE_NAMES)),
                            np.asarray(marks, dtype=np.int64).reshape(num_raters, n_words))


# ----------------------------------------------------------------------------- agreement
def _record_image_size(record: Mapping) -> int:
    image = record.get("image")
    if image is None:
        raise ValueError("a record without an 'image' needs rater_agreement(..., image_size=...)")
    return int(np.shape(image)[0])  # PIL images and arrays alike: the height


def _correlation(fn, a: np.ndarray, b: np.ndarray) -> float:
    """`fn(a, b)`, or nan where a correlation is undefined: fewer than two images, or one side constant."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return fn(a, b)


def _heatmap_agreement(points: Sequence[Sequence[Sequence[tuple[int, int]]]], rater: int, size: int,
                       radius_fraction: float, chunk_size: int = 1000) -> dict:
    """`metrics.heatmap_metrics` of one rater's maps against the mean of the others' maps, over all images.

    `points[image][rater]` are the clicks. Images are taken `chunk_size` at a time so that a full split never holds
    all its maps at once, and the chunks are recombined with the weights `heatmap_metrics` averages with: all images
    for `mse_all`, those where the others clicked nowhere for `mse_gt0`, the others for CC, KLD, SIM, NSS, AUC-Judd.
    """
    sums, weights = dict.fromkeys(("mse_all", "mse_gt0", "cc", "kld", "sim", "nss", "auc_judd"), 0.0), {}
    for start in range(0, len(points), chunk_size):
        mine, rest = [], []
        for per_rater in points[start:start + chunk_size]:
            maps = rater_heatmaps(per_rater, size, radius_fraction)
            mine.append(maps[rater])
            rest.append(np.delete(maps, rater, axis=0).mean(0))
        found = metrics.heatmap_metrics(np.stack(mine), np.stack(rest))
        chunk_weights = {"mse_all": len(mine), "mse_gt0": found["n_gt0"]}
        for key in sums:
            weight = chunk_weights.get(key, found["n_gtpos"])
            if weight:
                sums[key] += weight * found[key]
                weights[key] = weights.get(key, 0) + weight
    return {key: sums[key] / weights[key] if key in weights else float("nan") for key in sums}


def rater_agreement(records: Iterable[Mapping], image_size: Optional[int] = None,
                    radius_fraction: float = RaterConfig.disk_radius) -> dict:
    """How well the raters agree with each other: each rater against the mean of the others, averaged over raters.

    `records` are dataset rows (or `annotations_to_record` dicts) carrying `RATER_FIELDS`; the image size is
    `image_size` or else read from each record's `image`. Returns
      * `{score}/plcc`, `{score}/srcc` for every score in `SCORE_NAMES`: rater i's Likert scores against the mean of
        the others' over all images;
      * `{artifact_map,misalignment_map}/{cc,kld,sim,nss,auc_judd,mse_all,mse_gt0}`: `metrics.heatmap_metrics` with
        rater i's disk map as the prediction and the mean of the others' maps as the ground truth (CC, KLD, SIM, NSS
        and AUC-Judd over images where the others clicked, as in RAHF);
      * `words/{precision,recall,f1}`: `metrics.word_prf` of rater i's marks against the words that the mean of the
        others marks at >= 0.5, which with three raters is "marked by at least one of the other two";
      * `num_images`.
    A metric with nothing to average is nan (e.g. correlations over fewer than two images). These numbers are the
    human ceiling for the same metrics of a model: how well one rater predicts the others.
    """
    annotations, sizes = [], []
    for record in records:
        annotations.append(annotations_from_record(record))
        sizes.append(image_size if image_size is not None else _record_image_size(record))
    if not annotations:
        raise ValueError("rater_agreement needs at least one record")
    num_raters = annotations[0].num_raters
    if num_raters < 2 or any(a.num_raters != num_raters for a in annotations):
        raise ValueError("rater agreement needs the same number (>= 2) of raters on every record")
    if len(set(sizes)) != 1:
        raise ValueError(f"rater agreement compares maps of one size; these records have sizes {sorted(set(sizes))}")

    likert = np.stack([a.likert for a in annotations]).astype(np.float64)  # (images, raters, scores)
    per_rater: list[dict] = []
    for i in range(num_raters):
        others = [j for j in range(num_raters) if j != i]
        out = {}
        for s, name in enumerate(SCORE_NAMES):
            mine, rest = likert[:, i, s], likert[:, others, s].mean(1)
            out[f"{name}/plcc"] = _correlation(metrics.plcc, mine, rest)
            out[f"{name}/srcc"] = _correlation(metrics.srcc, mine, rest)
        for name, field in zip(HEATMAP_NAMES, ("artifact_points", "misalignment_points")):
            found = _heatmap_agreement([getattr(a, field) for a in annotations], i, sizes[0], radius_fraction)
            out.update({f"{name}/{k}": v for k, v in found.items()})
        words = metrics.word_prf([a.word_marks[i] for a in annotations],
                                 [a.word_marks[others].mean(0) >= 0.5 for a in annotations])
        out.update({f"words/{k}": float(words[k]) for k in ("precision", "recall", "f1")})
        per_rater.append(out)
    agreement = {k: float(np.mean([r[k] for r in per_rater])) for k in per_rater[0]}
    agreement["num_images"] = len(annotations)
    return agreement


def agreement_as_rahf_metrics(agreement: Mapping) -> dict:
    """`rater_agreement`'s numbers under the metric names of `reward_models.rahf.evaluate`, so the raters' ceiling
    can stand next to a model in the same tables (maps: artifact_map -> implausibility, misalignment_map ->
    misalignment; words: pooled precision / recall / F1 of misaligned words)."""
    maps = {"artifact_map": "implausibility", "misalignment_map": "misalignment"}
    out = {}
    for key, value in agreement.items():
        head, _, metric = key.partition("/")
        if head in maps:
            out[f"heatmap/{maps[head]}/{metric}"] = value
        elif head == "words":
            out[f"words/{metric}"] = value
        elif metric in ("plcc", "srcc"):
            out[f"score/{head}/{metric}"] = value
    return out
