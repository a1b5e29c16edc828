"""Misalignment injectors: scenes that contradict their prompt, with the misaligned words and their image region.

Each injector edits the *scene* (an object gets another colour, shape, size or position; one goes missing; one is
added) and is then rendered. The per-word labels come from the same judgement the oracle applies to what it reads
(`oracle.judge_words`), run on the true objects, so labels and oracle agree by construction; the region is the mask
of the object that carries the error (empty for a missing object, which has nowhere to be clicked).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from .oracle import judge_words
from .render import object_mask
from .scene import COLORS, POSITIONS, SHAPES, SIZE_HALF_EXTENT, Scene, SceneObject, place_object, position_holds

MISALIGNMENT_KINDS = ("wrong_colour", "wrong_shape", "wrong_size", "wrong_position", "missing_object", "extra_object")


@dataclasses.dataclass
class Misalignment:
    kind: str
    word_labels: list[int]  # per prompt word: 1 aligned, 0 misaligned (RichHF-18K convention)
    region: np.ndarray = dataclasses.field(repr=False)  # bool (H, W)


def _swap(scene: Scene, index: int, obj: SceneObject) -> Scene:
    objects = list(scene.objects)
    objects[index] = obj
    return scene.replace_objects(objects)


def wrong_colour(scene: Scene, rng: np.random.Generator) -> Optional[tuple[Scene, int]]:
    i = int(rng.integers(len(scene.objects)))
    obj = scene.objects[i]
    colour = str(rng.choice([c for c in COLORS if c != obj.colour]))
    return _swap(scene, i, dataclasses.replace(obj, colour=colour)), i


def wrong_shape(scene: Scene, rng: np.random.Generator) -> Optional[tuple[Scene, int]]:
    i = int(rng.integers(len(scene.objects)))
    obj = scene.objects[i]
    shape = str(rng.choice([s for s in SHAPES if s != obj.shape]))
    return _swap(scene, i, dataclasses.replace(obj, shape=shape)), i


def wrong_size(scene: Scene, rng: np.random.Generator) -> Optional[tuple[Scene, int]]:
    # Only objects whose prompt names a size: changing an unnamed size contradicts no word.
    candidates = [i for i, o in enumerate(scene.objects) if scene.prompt.groups[o.group].size != "medium"]
    if not candidates:
        return None
    i = int(rng.choice(candidates))
    obj = scene.objects[i]
    wanted = scene.prompt.groups[obj.group].size
    new_size = "large" if wanted == "small" else "small"
    others = [o for j, o in enumerate(scene.objects) if j != i]
    position = scene.prompt.groups[obj.group].position
    new = place_object(rng, obj.colour, obj.shape, new_size, position, others, group=obj.group)
    return (_swap(scene, i, new), i) if new is not None else None


def wrong_position(scene: Scene, rng: np.random.Generator) -> Optional[tuple[Scene, int]]:
    candidates = [i for i, o in enumerate(scene.objects) if scene.prompt.groups[o.group].position is not None]
    if not candidates:
        return None
    i = int(rng.choice(candidates))
    obj = scene.objects[i]
    wanted = scene.prompt.groups[obj.group].position
    others = [o for j, o in enumerate(scene.objects) if j != i]
    size = min(SIZE_HALF_EXTENT, key=lambda s: abs(SIZE_HALF_EXTENT[s] - obj.h))
    for place in rng.permutation(POSITIONS):
        new = place_object(rng, obj.colour, obj.shape, size, str(place), others, group=obj.group)
        if new is not None and not position_holds(wanted, new.cx, new.cy):
            return _swap(scene, i, new), i
    return None


def missing_object(scene: Scene, rng: np.random.Generator) -> Optional[tuple[Scene, int]]:
    if len(scene.objects) < 1:
        return None
    i = int(rng.integers(len(scene.objects)))
    return scene.replace_objects([o for j, o in enumerate(scene.objects) if j != i]), -1


def extra_object(scene: Scene, rng: np.random.Generator) -> Optional[tuple[Scene, int]]:
    if len(scene.objects) >= 3:
        return None
    colour, shape = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))
    new = place_object(rng, colour, shape, str(rng.choice(list(SIZE_HALF_EXTENT))), None, scene.objects)
    if new is None:
        return None
    return scene.replace_objects(list(scene.objects) + [new]), len(scene.objects)


INJECTORS: dict[str, Callable] = {
    "wrong_colour": wrong_colour,
    "wrong_shape": wrong_shape,
    "wrong_size": wrong_size,
    "wrong_position": wrong_position,
    "missing_object": missing_object,
    "extra_object": extra_object,
}


def inject_misalignment(scene: Scene, rng: np.random.Generator, kind: Optional[str] = None,
                        size: int = 64) -> Optional[tuple[Scene, Misalignment]]:
    """A scene that contradicts its prompt in one way (`kind`, random if None), or None if `kind` cannot apply."""
    if kind is None:
        kind = str(rng.choice(MISALIGNMENT_KINDS))
    if kind not in INJECTORS:
        raise ValueError(f"unknown misalignment kind {kind!r}; expected one of {MISALIGNMENT_KINDS}")
    result = INJECTORS[kind](scene, rng)
    if result is None:
        return None
    new_scene, index = result
    judgements, _, _ = judge_words(new_scene.prompt, new_scene.objects)
    labels = [int(j.satisfied) for j in judgements]
    region = object_mask(new_scene.objects[index], size) if index >= 0 else np.zeros((size, size), dtype=bool)
    return new_scene, Misalignment(kind, labels, region)
