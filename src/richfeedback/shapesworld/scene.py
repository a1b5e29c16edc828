"""The ShapesWorld language: prompts about coloured shapes, and scenes that satisfy them.

A prompt is a list of *groups*; each group is `count` objects of one colour and shape, optionally with a size word
and (for single objects) a position word:

    "a red circle on the left and a small blue square on the right"
    "two yellow triangles and a purple circle"
    "a green square on the top, a red circle in the center and a blue triangle on the bottom"

Coordinates are fractions of the image side (x to the right, y downwards), so one scene renders at any resolution.
Words are split exactly as RichHF-18K splits prompts (`re.split('[,.?!":; ]', prompt)`), so per-word labels line up
with the dataset format the RAHF model is trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Optional, Sequence

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 47),
    "green": (60, 170, 70),
    "blue": (45, 90, 220),
    "yellow": (240, 200, 40),
    "purple": (150, 70, 190),
}
BACKGROUND: tuple[int, int, int] = (236, 236, 232)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Half-extent (half the side of the bounding box) of each size class, as a fraction of the image side.
SIZE_HALF_EXTENT: dict[str, float] = {"small": 0.085, "medium": 0.12, "large": 0.16}
SIZE_WORDS: tuple[str, ...] = ("small", "large")  # "medium" is what a prompt without a size word asks for
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
COUNT_WORDS: dict[int, str] = {1: "a", 2: "two", 3: "three"}
WORD_KINDS: tuple[str, ...] = ("count", "size", "colour", "shape", "position")
MAX_OBJECTS = 3

# Where the renderer places the centre of an object asked to be at a position: (x range, y range).
_PLACEMENT = {
    "left": ((0.18, 0.32), (0.30, 0.70)),
    "right": ((0.68, 0.82), (0.30, 0.70)),
    "top": ((0.30, 0.70), (0.18, 0.32)),
    "bottom": ((0.30, 0.70), (0.68, 0.82)),
    "center": ((0.44, 0.56), (0.44, 0.56)),
}
_WORD_SPLIT = re.compile(r'[,.?!":; ]')


def position_holds(position: str, cx: float, cy: float) -> bool:
    """Whether an object centred at (cx, cy) satisfies a position word: the oracle's definition."""
    if position == "left":
        return cx < 0.4
    if position == "right":
        return cx > 0.6
    if position == "top":
        return cy < 0.4
    if position == "bottom":
        return cy > 0.6
    if position == "center":
        return 0.35 <= cx <= 0.65 and 0.35 <= cy <= 0.65
    raise ValueError(f"unknown position word {position!r}; expected one of {POSITIONS}")


def size_class(half_extent: float) -> str:
    """The size class whose nominal half-extent is closest (boundaries at the midpoints)."""
    if half_extent < (SIZE_HALF_EXTENT["small"] + SIZE_HALF_EXTENT["medium"]) / 2:
        return "small"
    if half_extent > (SIZE_HALF_EXTENT["medium"] + SIZE_HALF_EXTENT["large"]) / 2:
        return "large"
    return "medium"


def prompt_words(prompt: str) -> list[str]:
    """RichHF-18K's word split: the unit of `prompt_misalignment_label`."""
    return [w for w in _WORD_SPLIT.split(prompt) if w]


@dataclasses.dataclass(frozen=True)
class Group:
    """`count` objects of one colour and shape; `size` is "small", "medium" or "large"; `position` only if count is 1."""

    colour: str
    shape: str
    count: int = 1
    size: str = "medium"
    position: Optional[str] = None

    def __post_init__(self):
        if self.colour not in COLORS:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {tuple(COLORS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.count not in COUNT_WORDS:
            raise ValueError(f"count must be 1, 2 or 3, got {self.count}")
        if self.size not in SIZE_HALF_EXTENT:
            raise ValueError(f"unknown size {self.size!r}; expected one of {tuple(SIZE_HALF_EXTENT)}")
        if self.position is not None and (self.position not in POSITIONS or self.count != 1):
            raise ValueError(f"position {self.position!r} needs count 1 and one of {POSITIONS}")

    def words(self) -> list[tuple[str, str]]:
        """(word, kind) for each word of this group's phrase; kind "other" for function words."""
        words = [(COUNT_WORDS[self.count], "count")]
        if self.size != "medium":
            words.append((self.size, "size"))
        words.append((self.colour, "colour"))
        words.append((self.shape + ("s" if self.count > 1 else ""), "shape"))
        if self.position == "center":
            words += [("in", "other"), ("the", "other"), ("center", "position")]
        elif self.position is not None:
            words += [("on", "other"), ("the", "other"), (self.position, "position")]
        return words


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    """A parsed prompt: its groups in the order they are written."""

    groups: tuple[Group, ...]

    def __post_init__(self):
        if not 1 <= len(self.groups) <= MAX_OBJECTS:
            raise ValueError(f"a prompt has 1 to {MAX_OBJECTS} groups, got {len(self.groups)}")
        if self.num_objects > MAX_OBJECTS:
            raise ValueError(f"a prompt asks for at most {MAX_OBJECTS} objects, got {self.num_objects}")
        kinds = [(g.colour, g.shape) for g in self.groups]
        if len(set(kinds)) != len(kinds):
            raise ValueError("two groups of one prompt must differ in colour or shape")

    @property
    def num_objects(self) -> int:
        return sum(g.count for g in self.groups)

    def word_roles(self) -> list[tuple[str, str, int]]:
        """(word, kind, group index) for every word of `text`, aligned with `prompt_words(text)`."""
        roles = []
        for i, group in enumerate(self.groups):
            if i > 0 and i == len(self.groups) - 1:
                roles.append(("and", "other", -1))
            roles += [(word, kind, i) for word, kind in group.words()]
        return roles

    @property
    def text(self) -> str:
        phrases = [" ".join(w for w, _ in g.words()) for g in self.groups]
        if len(phrases) == 1:
            return phrases[0]
        return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def parse_prompt(prompt: str) -> PromptSpec:
    """Read a ShapesWorld prompt back into its groups; raises ValueError naming the word that does not parse."""
    words = prompt_words(prompt.strip().lower())
    counts = {v: k for k, v in COUNT_WORDS.items()}
    groups, i = [], 0

    def expect(condition: bool, what: str):
        if not condition:
            got = words[i] if i < len(words) else "the end of the prompt"
            raise ValueError(
                f"not a ShapesWorld prompt: {prompt!r}: expected {what} at word {i + 1}, got {got!r}. "
                "Prompts look like 'a red circle on the left and two blue squares'."
            )

    while True:
        expect(i < len(words) and words[i] in counts, "a count word (a, two, three)")
        count = counts[words[i]]
        i += 1
        size = "medium"
        if i < len(words) and words[i] in SIZE_WORDS:
            size, i = words[i], i + 1
        expect(i < len(words) and words[i] in COLORS, f"a colour {tuple(COLORS)}")
        colour, i = words[i], i + 1
        plural = "s" if count > 1 else ""
        expect(i < len(words) and words[i] in {s + plural for s in SHAPES}, f"a shape ({', '.join(s + plural for s in SHAPES)})")
        shape, i = words[i][: len(words[i]) - len(plural)], i + 1
        position = None
        if i + 1 < len(words) and words[i] in ("on", "in") and words[i + 1] == "the":
            expect(i + 2 < len(words) and words[i + 2] in POSITIONS, f"a position {POSITIONS}")
            expect((words[i] == "in") == (words[i + 2] == "center"), "'in the center' or 'on the <side>'")
            position, i = words[i + 2], i + 3
        groups.append(Group(colour, shape, count, size, position))
        if i == len(words):
            break
        if words[i] == "and":
            i += 1
    return PromptSpec(tuple(groups))


def is_heldout_prompt(prompt: str, fraction: float = 0.2) -> bool:
    """A fixed split of the prompt space: the embedded generator never trains on held-out prompts.

    The split hashes the canonical prompt text, so it is the same on every machine and for every seed; fine-tuning
    benchmarks measure generalisation on these prompts.
    """
    canonical = parse_prompt(prompt).text
    digest = hashlib.sha1(canonical.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object in an image: centre (cx, cy) and half-extent h, all as fractions of the image side."""

    colour: str
    shape: str
    cx: float
    cy: float
    h: float
    group: int = -1  # index of the prompt group it was placed for, -1 if none

    def bbox(self) -> tuple[float, float, float, float]:
        return (self.cx - self.h, self.cy - self.h, self.cx + self.h, self.cy + self.h)


@dataclasses.dataclass(frozen=True)
class Scene:
    """What an image shows (objects) and what it was asked to show (prompt)."""

    prompt: PromptSpec
    objects: tuple[SceneObject, ...]

    def replace_objects(self, objects: Sequence[SceneObject]) -> "Scene":
        return Scene(self.prompt, tuple(objects))


def word_object_centres(scene: Scene) -> list[Optional[tuple[float, float]]]:
    """Per word of the prompt (`prompt_words(scene.prompt.text)`), the centre (cx, cy) of the object its phrase
    names, or None: for words outside any phrase ("and"), for groups of 2 or 3, and where the scene does not hold
    exactly one object of the group's colour and shape (missing, recoloured or reshaped). Where a misplaced object
    is, whatever its position word says: what a model must read from the image to judge that word."""
    centres = []
    for group in scene.prompt.groups:
        found = [(o.cx, o.cy) for o in scene.objects if (o.colour, o.shape) == (group.colour, group.shape)]
        centres.append(found[0] if group.count == 1 and len(found) == 1 else None)
    return [centres[g] if g >= 0 else None for _, _, g in scene.prompt.word_roles()]


def word_object_attributes(scene: Scene) -> list[Optional[tuple[int, int, int, int]]]:
    """Per word of the prompt (`prompt_words(scene.prompt.text)`), what was drawn for its phrase and what the phrase
    names: (drawn shape, drawn colour, named shape, named colour) as indices in SHAPES and COLORS, for the one object
    the scene placed for the phrase's group (`SceneObject.group`), whatever shape and colour it was given; None for
    words outside any phrase, for groups of 2 or 3, and for a missing object. Where a reshaped or recoloured object
    reads other than its words: what a model must read to judge a shape or colour word."""
    colours = list(COLORS)
    attributes = []
    for index, group in enumerate(scene.prompt.groups):
        drawn = [(SHAPES.index(o.shape), colours.index(o.colour)) for o in scene.objects if o.group == index]
        named = (SHAPES.index(group.shape), colours.index(group.colour))
        attributes.append((*drawn[0], *named) if group.count == 1 and len(drawn) == 1 else None)
    return [attributes[g] if g >= 0 else None for _, _, g in scene.prompt.word_roles()]


def _boxes_apart(a: SceneObject, b: SceneObject, gap: float) -> bool:
    ax0, ay0, ax1, ay1 = a.bbox()
    bx0, by0, bx1, by1 = b.bbox()
    return ax1 + gap <= bx0 or bx1 + gap <= ax0 or ay1 + gap <= by0 or by1 + gap <= ay0


def place_object(rng: np.random.Generator, colour: str, shape: str, size: str, position: Optional[str],
                 others: Sequence[SceneObject], group: int = -1, gap: float = 0.05, tries: int = 100,
                 margin: float = 0.02) -> Optional[SceneObject]:
    """Sample a centre for one object that satisfies `position` and keeps `gap` from `others`, or None."""
    h = SIZE_HALF_EXTENT[size] * rng.uniform(0.95, 1.05)
    for _ in range(tries):
        if position is None:
            (x0, x1), (y0, y1) = (0.0, 1.0), (0.0, 1.0)
        else:
            (x0, x1), (y0, y1) = _PLACEMENT[position]
        lo, hi = h + margin, 1 - h - margin
        x0, x1, y0, y1 = max(x0, lo), min(x1, hi), max(y0, lo), min(y1, hi)
        if x0 > x1 or y0 > y1:
            return None
        obj = SceneObject(colour, shape, float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)), float(h), group)
        if position is not None and not position_holds(position, obj.cx, obj.cy):
            continue
        if all(_boxes_apart(obj, o, gap) for o in others):
            return obj
    return None


def layout_scene(spec: PromptSpec, rng: np.random.Generator, tries: int = 500) -> Optional[Scene]:
    """A random scene that satisfies every word of `spec`, or None if none was found in `tries` attempts."""
    for _ in range(tries):
        objects: list[SceneObject] = []
        # Place positioned objects first: they have the least freedom.
        order = sorted(range(len(spec.groups)), key=lambda i: spec.groups[i].position is None)
        for gi in order:
            g = spec.groups[gi]
            for _ in range(g.count):
                obj = place_object(rng, g.colour, g.shape, g.size, g.position, objects, group=gi)
                if obj is None:
                    break
                objects.append(obj)
            else:
                continue
            break
        else:
            objects.sort(key=lambda o: o.group)
            return Scene(spec, tuple(objects))
    return None


def sample_prompt(rng: np.random.Generator) -> PromptSpec:
    """A random prompt of the grammar (1 to 3 objects); always one that `layout_scene` can satisfy."""
    while True:
        n_groups = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
        kinds = [(c, s) for c in COLORS for s in SHAPES]
        picked = [kinds[i] for i in rng.choice(len(kinds), size=n_groups, replace=False)]

        def size():
            return str(rng.choice(SIZE_WORDS)) if rng.random() < 0.35 else "medium"

        if n_groups == 1:
            count = int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))
            position = str(rng.choice(POSITIONS)) if count == 1 and rng.random() < 0.8 else None
            groups = [Group(*picked[0], count=count, size=size(), position=position)]
        elif n_groups == 2 and rng.random() < 0.25:
            counts = [2, 1] if rng.random() < 0.5 else [1, 2]
            groups = [Group(c, s, count=n, size=size()) for (c, s), n in zip(picked, counts)]
        else:
            with_positions = n_groups == 3 or rng.random() < 0.9
            positions = list(rng.choice(POSITIONS, size=n_groups, replace=False)) if with_positions else [None] * n_groups
            groups = [Group(c, s, size=size(), position=None if p is None else str(p)) for (c, s), p in zip(picked, positions)]
        spec = PromptSpec(tuple(groups))
        if layout_scene(spec, np.random.default_rng(rng.integers(2**32)), tries=10) is not None:
            return spec


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random prompt together with a clean scene that satisfies it."""
    spec = sample_prompt(rng)
    while True:
        scene = layout_scene(spec, rng, tries=50)  # 50, as when the embedded generator's data was drawn
        if scene is not None:
            return scene


def sample_prompts(n: int, seed: int = 0, split: str = "all") -> list[str]:
    """`n` distinct prompts from the grammar; `split` is "train", "heldout" (see `is_heldout_prompt`) or "all"."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    rng = np.random.default_rng(seed)
    prompts: list[str] = []
    seen = set()
    for _ in range(1000 * n):
        text = sample_prompt(rng).text
        if text in seen or (split != "all" and is_heldout_prompt(text) != (split == "heldout")):
            continue
        seen.add(text)
        prompts.append(text)
        if len(prompts) == n:
            return prompts
    raise ValueError(f"found only {len(prompts)} distinct {split} prompts")
