"""The exact ShapesWorld oracle: read an image back into objects, judge every prompt word, and find artifacts.

Reading: each pixel takes the nearest palette colour (or "unknown" when none is near); connected regions of one colour
large enough to be an object are classified by the shape template (circle, square, triangle) that best overlaps them in
their bounding box; size and position follow from the box.

Judging: the prompt's objects are matched to the detected ones (Hungarian assignment on colour, shape, position, size)
and each word is checked: colour, shape, size and position words against the matched objects, count words against the
number of matched objects and same-kind leftovers. A prompt is fully satisfied when every word is and nothing extra is
in the image.

Artifacts: the oracle re-renders what it read and keeps the residual that no object explains, after an opening that
removes 1-2 pixel bands along edges (soft edges of generated images are not artifacts) plus a density test that keeps
textured noise. On clean renders the residual is empty; on injected artifacts it recovers the injected region.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from .render import object_mask, render_objects
from .scene import (BACKGROUND, COLORS, SHAPES, WORD_KINDS, PromptSpec, SceneObject, parse_prompt, position_holds,
                    size_class)

_PALETTE = np.array([BACKGROUND] + list(COLORS.values()), dtype=np.float32)
_COLOUR_NAMES = [None] + list(COLORS)
_PLUS = ndimage.generate_binary_structure(2, 1)


@dataclasses.dataclass(frozen=True)
class OracleConfig:
    """Tolerances of the oracle; the defaults are calibrated for 64x64 and scale with the image area."""

    colour_tolerance: float = 70.0  # max RGB distance from a palette colour; farther pixels are "unknown"
    min_object_area: float = 0.006  # fraction of the image; smaller regions are fragments, not objects
    residual_threshold: float = 60.0  # per-pixel max-channel difference to the re-render that counts as wrong
    texture_threshold: float = 40.0
    texture_density: float = 0.5  # fraction of wrong pixels in a 5x5 window that marks a textured region
    min_artifact_area: float = 6 / 4096  # fraction of the image


@dataclasses.dataclass
class DetectedObject:
    colour: str
    shape: str
    cx: float
    cy: float
    h: float
    area: int
    shape_iou: float  # overlap with the chosen shape template: low values mean a deformed object
    mask: np.ndarray = dataclasses.field(repr=False)

    @property
    def size(self) -> str:
        return size_class(self.h)

    def as_scene_object(self) -> SceneObject:
        return SceneObject(self.colour, self.shape, self.cx, self.cy, self.h)


@dataclasses.dataclass
class WordJudgement:
    word: str
    kind: str  # one of WORD_KINDS, or "other" for function words (always satisfied)
    group: int
    satisfied: bool


@dataclasses.dataclass
class OracleReport:
    prompt: str
    words: list[WordJudgement]
    objects: list[DetectedObject]
    extra_objects: int  # detected objects matched to no prompt object
    artifact_map: np.ndarray = dataclasses.field(repr=False)  # bool (H, W)
    misalignment_map: np.ndarray = dataclasses.field(repr=False)  # bool (H, W): objects involved in unmet words

    @property
    def prompt_correct(self) -> bool:
        return is_prompt_correct(self.words, self.extra_objects)

    @property
    def artifact_area(self) -> float:
        return float(self.artifact_map.mean())

    @property
    def has_artifact(self) -> bool:
        return bool(self.artifact_map.any())

    def word_labels(self) -> list[int]:
        """Per prompt word, RichHF-18K's `prompt_misalignment_label` convention: 1 aligned, 0 misaligned."""
        return [int(w.satisfied) for w in self.words]

    def kind_accuracy(self) -> dict[str, tuple[int, int]]:
        """(satisfied, total) words of each kind."""
        out = {k: (0, 0) for k in WORD_KINDS}
        for w in self.words:
            if w.kind in out:
                s, n = out[w.kind]
                out[w.kind] = (s + int(w.satisfied), n + 1)
        return out

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "prompt_correct": self.prompt_correct,
            "words": [dataclasses.asdict(w) for w in self.words],
            "objects": [{k: v for k, v in dataclasses.asdict(o).items() if k != "mask"} for o in self.objects],
            "extra_objects": self.extra_objects,
            "has_artifact": self.has_artifact,
            "artifact_area": self.artifact_area,
        }


def _as_uint8_rgb(image) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"the oracle reads RGB images of shape (H, W, 3), got {array.shape}")
    if array.shape[0] != array.shape[1]:
        raise ValueError(f"the oracle reads square images, got {array.shape[1]}x{array.shape[0]}")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    return array


def classify_pixels(image: np.ndarray, config: OracleConfig = OracleConfig()) -> np.ndarray:
    """(H, W) int: 0 background, i > 0 the i-th colour of `COLORS`, -1 when no palette colour is near."""
    pixels = image.astype(np.float32)[:, :, None, :]
    distance = np.sqrt(((pixels - _PALETTE) ** 2).sum(-1))
    labels = distance.argmin(-1)
    labels[distance.min(-1) > config.colour_tolerance] = -1
    return labels


def _shape_templates(cx: float, cy: float, h: float, size: int) -> dict[str, np.ndarray]:
    return {shape: object_mask(SceneObject("red", shape, cx, cy, h), size) for shape in SHAPES}


def detect_objects(image, config: OracleConfig = OracleConfig()) -> list[DetectedObject]:
    """The objects an image shows, largest first."""
    image = _as_uint8_rgb(image)
    size = image.shape[0]
    labels = classify_pixels(image, config)
    min_area = config.min_object_area * size * size
    objects = []
    for colour_index, colour in enumerate(_COLOUR_NAMES):
        if colour is None:
            continue
        components, n = ndimage.label(labels == colour_index, structure=np.ones((3, 3)))
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            mask = components == index
            area = int(mask.sum())
            if area < min_area:
                continue
            ys, xs = box
            width, height = xs.stop - xs.start, ys.stop - ys.start
            cx, cy = (xs.start + xs.stop) / 2 / size, (ys.start + ys.stop) / 2 / size
            h = (width + height) / 4 / size
            ious = {s: (m & mask).sum() / max((m | mask).sum(), 1) for s, m in _shape_templates(cx, cy, h, size).items()}
            shape = max(ious, key=ious.get)
            objects.append(DetectedObject(colour, shape, cx, cy, h, area, float(ious[shape]), mask))
    objects.sort(key=lambda o: -o.area)
    return objects


def redraw(objects: Sequence[DetectedObject], size: int) -> np.ndarray:
    """(size, size, 3) uint8: the objects read from an image, rendered crisply; what `artifact_map` compares the image
    against, and so what a repaired image should show."""
    return render_objects([o.as_scene_object() for o in objects], size)


def artifact_map(image, objects: Sequence[DetectedObject], config: OracleConfig = OracleConfig()) -> np.ndarray:
    """Bool (H, W): pixels that the objects read from the image do not explain."""
    image = _as_uint8_rgb(image)
    size = image.shape[0]
    expected = redraw(objects, size)
    residual = np.abs(image.astype(np.int16) - expected.astype(np.int16)).max(-1)
    wrong_solid = residual > config.residual_threshold
    # The opening drops bands at most 2 pixels thick (soft or shifted edges); the conditional dilation then gives
    # back the rim that the opening shaved off whatever survived, without crawling along a whole outline.
    solid = ndimage.binary_opening(wrong_solid, structure=_PLUS)
    solid = ndimage.binary_dilation(solid, structure=_PLUS, iterations=2, mask=wrong_solid)
    wrong = residual > config.texture_threshold
    textured = ndimage.uniform_filter(wrong.astype(np.float32), size=5, mode="constant") > config.texture_density
    textured = ndimage.binary_dilation(textured & wrong, structure=_PLUS, iterations=2, mask=wrong)
    found = solid | textured
    found = ndimage.binary_fill_holes(found | ndimage.binary_closing(found, structure=_PLUS))
    components, n = ndimage.label(found, structure=np.ones((3, 3)))
    if n == 0:
        return found
    areas = ndimage.sum(found, components, index=np.arange(1, n + 1))
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = areas >= config.min_artifact_area * size * size
    return keep[components]


def _match(spec: PromptSpec, objects: Sequence) -> list[list[int]]:
    """For each group of the prompt, the indices of the objects matched to its slots."""
    slots = [gi for gi, g in enumerate(spec.groups) for _ in range(g.count)]
    assigned: list[list[int]] = [[] for _ in spec.groups]
    if not slots or not objects:
        return assigned
    score = np.zeros((len(slots), len(objects)))
    for si, gi in enumerate(slots):
        g = spec.groups[gi]
        for oi, o in enumerate(objects):
            s = 2.0 * (o.colour == g.colour) + 2.0 * (o.shape == g.shape)
            if s == 0:
                score[si, oi] = -1e6  # neither colour nor shape: not this object
                continue
            if g.position is not None:
                s += 1.0 * position_holds(g.position, o.cx, o.cy)
            s += 0.5 * (size_class(o.h) == g.size)
            score[si, oi] = s
    rows, cols = linear_sum_assignment(score, maximize=True)
    for si, oi in zip(rows, cols):
        if score[si, oi] > 0:
            assigned[slots[si]].append(int(oi))
    return assigned


def judge_words(spec: PromptSpec, objects: Sequence) -> tuple[list[WordJudgement], list[int], set[int]]:
    """Judge every word of a prompt against objects (anything with colour, shape, cx, cy, h).

    Returns the judgements, the indices of unmatched (extra) objects, and the indices of objects involved in an
    unmet word. Used on detected objects by the oracle and on true scene objects by the misalignment injectors, so
    their labels and the oracle's agree by construction.
    """
    assigned = _match(spec, objects)
    matched = {oi for group in assigned for oi in group}
    extras = [oi for oi in range(len(objects)) if oi not in matched]
    judgements, involved = [], set(extras)
    for word, kind, gi in spec.word_roles():
        ok = True
        if gi >= 0 and kind == "count":
            g = spec.groups[gi]
            same_kind_extras = sum(1 for oi in extras if (objects[oi].colour, objects[oi].shape) == (g.colour, g.shape))
            ok = len(assigned[gi]) == g.count and same_kind_extras == 0
        elif gi >= 0 and kind in ("colour", "shape", "size", "position"):
            failing = [oi for oi in assigned[gi] if not _object_meets(spec.groups[gi], kind, objects[oi])]
            ok = bool(assigned[gi]) and not failing  # a group with no object fails every word
            involved.update(failing)
        judgements.append(WordJudgement(word, kind, gi, bool(ok)))
    return judgements, extras, involved


def is_prompt_correct(words: Sequence[WordJudgement], extra_objects: int) -> bool:
    """The full-prompt verdict: every word satisfied and no object the prompt does not name (`judge_words`'s
    judgements and the number of its extra objects)."""
    return all(w.satisfied for w in words) and extra_objects == 0


def _object_meets(g, kind: str, o) -> bool:
    """Whether one object satisfies the group's word of this kind (colour, shape, size or position)."""
    if kind == "colour":
        return o.colour == g.colour
    if kind == "shape":
        return o.shape == g.shape
    if kind == "size":
        return size_class(o.h) == g.size
    if kind == "position":
        return position_holds(g.position, o.cx, o.cy)
    return True


def evaluate(prompt: str | PromptSpec, image, config: OracleConfig = OracleConfig()) -> OracleReport:
    """The oracle's full report on one image for one prompt."""
    spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    image = _as_uint8_rgb(image)
    objects = detect_objects(image, config)
    judgements, extras, involved = judge_words(spec, objects)
    misalignment = np.zeros(image.shape[:2], dtype=bool)
    for oi in involved:
        misalignment |= objects[oi].mask
    return OracleReport(spec.text, judgements, objects, len(extras), artifact_map(image, objects, config), misalignment)


def summarize(reports: Iterable[OracleReport]) -> dict:
    """Aggregate numbers over many images: full-prompt accuracy, per-word-kind alignment, artifact rate."""
    reports = list(reports)
    if not reports:
        raise ValueError("no oracle reports to summarize")
    totals = {k: [0, 0] for k in WORD_KINDS}
    for r in reports:
        for kind, (s, n) in r.kind_accuracy().items():
            totals[kind][0] += s
            totals[kind][1] += n
    return {
        "num_images": len(reports),
        "prompt_accuracy": float(np.mean([r.prompt_correct for r in reports])),
        "word_alignment": {k: (s / n if n else None) for k, (s, n) in totals.items()},
        "artifact_rate": float(np.mean([r.has_artifact for r in reports])),
        "mean_artifact_area": float(np.mean([r.artifact_area for r in reports])),
        "extra_object_rate": float(np.mean([r.extra_objects > 0 for r in reports])),
    }
