"""Artifact injectors: the implausible parts of generated images, each with its ground-truth region.

Every injector edits pixels of a rendered scene and returns the region it changed (the pixels that differ visibly from
the input, holes filled). Regions are at least a few pixels thick, so they are what a person would click on and what
the oracle can recover; none of them moves an object's bounding box, so the scene still reads the same.

Kinds: `smear` (a stroke of the object's colour dragged across the background), `broken_edge` (a bite out of an
object's outline), `stray_blob` (a small fragment of colour where nothing should be), `texture_noise` (a patch of
high-frequency noise) and `ghost` (a faint offset duplicate of an object, like a repeated limb).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import numpy as np
from scipy import ndimage

from .render import object_mask, pixel_grid
from .scene import BACKGROUND, COLORS, Scene

ARTIFACT_KINDS = ("smear", "broken_edge", "stray_blob", "texture_noise", "ghost")
_CHANGE_THRESHOLD = 30


@dataclasses.dataclass
class Artifact:
    kind: str
    region: np.ndarray = dataclasses.field(repr=False)  # bool (H, W)
    object_index: int = -1  # the object it damaged, -1 for none

    @property
    def area(self) -> float:
        return float(self.region.mean())


def _changed_region(before: np.ndarray, after: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    changed = np.abs(after.astype(np.int16) - before.astype(np.int16)).max(-1) > _CHANGE_THRESHOLD
    return ndimage.binary_fill_holes(changed & footprint)


def _occupied(scene: Scene, size: int, grow_px: int = 2) -> np.ndarray:
    occupied = np.zeros((size, size), dtype=bool)
    for obj in scene.objects:
        occupied |= object_mask(obj, size)
    return ndimage.binary_dilation(occupied, iterations=grow_px) if grow_px else occupied


def _segment_distance(x, y, x0, y0, x1, y1):
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def smear(image: np.ndarray, scene: Scene, rng: np.random.Generator) -> Optional[tuple[np.ndarray, np.ndarray, int]]:
    size = image.shape[0]
    x, y = pixel_grid(size)
    for _ in range(20):
        oi = int(rng.integers(len(scene.objects)))
        obj = scene.objects[oi]
        angle = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.15, 0.28)
        width = max(rng.uniform(0.05, 0.075), 3.2 / size)
        x0, y0 = obj.cx + 0.8 * obj.h * math.cos(angle), obj.cy + 0.8 * obj.h * math.sin(angle)
        x1, y1 = x0 + length * math.cos(angle), y0 + length * math.sin(angle)
        if not (0.03 < x1 < 0.97 and 0.03 < y1 < 0.97):
            continue
        stroke = _segment_distance(x, y, x0, y0, x1, y1) <= width / 2
        others = _occupied(scene.replace_objects([o for j, o in enumerate(scene.objects) if j != oi]), size)
        if (stroke & others).any():
            continue
        out = image.astype(np.float32)
        blend = 0.5 * out[stroke] + 0.5 * np.array(COLORS[obj.colour], np.float32)
        out[stroke] = blend + rng.normal(0, 8, blend.shape)
        out = np.clip(np.round(out), 0, 255).astype(np.uint8)
        return out, _changed_region(image, out, stroke), oi
    return None


def broken_edge(image: np.ndarray, scene: Scene, rng: np.random.Generator) -> Optional[tuple[np.ndarray, np.ndarray, int]]:
    size = image.shape[0]
    x, y = pixel_grid(size)
    oi = int(rng.integers(len(scene.objects)))
    obj = scene.objects[oi]
    # A point on the outline away from the extremes that define the bounding box.
    if obj.shape == "circle":
        angle = math.pi / 4 + int(rng.integers(4)) * math.pi / 2 + rng.uniform(-0.25, 0.25)
        px, py, inward = obj.cx + obj.h * math.cos(angle), obj.cy + obj.h * math.sin(angle), angle + math.pi
    elif obj.shape == "square":
        side, along = int(rng.integers(4)), rng.uniform(-0.3, 0.3) * obj.h
        normal = [(1, 0), (-1, 0), (0, 1), (0, -1)][side]
        px = obj.cx + normal[0] * obj.h + normal[1] * along
        py = obj.cy + normal[1] * obj.h + normal[0] * along
        inward = math.atan2(-normal[1], -normal[0])
    else:  # triangle: the middle of the base (a bite in a slanted edge would read as another shape)
        px, py, inward = obj.cx + rng.uniform(-0.3, 0.3) * obj.h, obj.cy + obj.h, -math.pi / 2
    radius = max((rng.uniform(0.3, 0.4) if obj.shape == "triangle" else rng.uniform(0.45, 0.6)) * obj.h, 2.6 / size)
    depth = 0.3 if obj.shape == "triangle" else 0.5
    bx, by = px + depth * radius * math.cos(inward), py + depth * radius * math.sin(inward)
    bite = ((x - bx) ** 2 + (y - by) ** 2 <= radius ** 2) & object_mask(obj, size)
    out = image.copy()
    out[bite] = BACKGROUND
    region = _changed_region(image, out, bite)
    return (out, region, oi) if region.any() else None


def stray_blob(image: np.ndarray, scene: Scene, rng: np.random.Generator) -> Optional[tuple[np.ndarray, np.ndarray, int]]:
    size = image.shape[0]
    x, y = pixel_grid(size)
    free = ~_occupied(scene, size, grow_px=3)
    scale = size / 64
    for _ in range(50):
        cx, cy = rng.uniform(0.08, 0.92, size=2)
        blob = np.zeros((size, size), dtype=bool)
        for _ in range(int(rng.integers(1, 4))):
            r = rng.uniform(1.6, 2.4) / size
            ox, oy = rng.normal(0, 1.5 / size, size=2)
            blob |= (x - cx - ox) ** 2 + (y - cy - oy) ** 2 <= r * r
        # Smaller than the smallest object, so that it is a fragment and never read as an extra object.
        if not (8 * scale * scale <= blob.sum() <= 20 * scale * scale) or (blob & ~free).any():
            continue
        if rng.random() < 0.5:
            colour = np.array(COLORS[str(rng.choice(list(COLORS)))], np.float32)
        else:
            colour = rng.uniform(0, 200, size=3).astype(np.float32)
        out = image.copy()
        out[blob] = np.clip(colour + rng.normal(0, 6, (int(blob.sum()), 3)), 0, 255).astype(np.uint8)
        region = _changed_region(image, out, blob)
        if region.sum() >= 6 * scale * scale:
            return out, region, -1
    return None


def texture_noise(image: np.ndarray, scene: Scene, rng: np.random.Generator) -> Optional[tuple[np.ndarray, np.ndarray, int]]:
    size = image.shape[0]
    x, y = pixel_grid(size)
    oi = -1
    if rng.random() < 0.6:
        oi = int(rng.integers(len(scene.objects)))
        obj = scene.objects[oi]
        # Inside the object, so that its outline (and so what the scene reads as) is kept.
        half = rng.uniform(0.25, 0.4) * 2 * obj.h / 2 + 1.5 / size
        cx, cy = obj.cx + rng.uniform(-0.15, 0.15) * obj.h, obj.cy + rng.uniform(0.0, 0.3) * obj.h
        footprint = (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half) & object_mask(obj, size)
        footprint &= ndimage.binary_erosion(object_mask(obj, size), iterations=2)
    else:
        free = ~_occupied(scene, size, grow_px=3)
        for _ in range(50):
            half = rng.uniform(0.05, 0.09)
            cx, cy = rng.uniform(half + 0.02, 1 - half - 0.02, size=2)
            footprint = (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
            if not (footprint & ~free).any():
                break
        else:
            return None
    if footprint.sum() < 9:
        return None
    out = image.astype(np.float32)
    noise = rng.uniform(0, 255, size=(int(footprint.sum()), 3))
    out[footprint] = 0.25 * out[footprint] + 0.75 * noise
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    region = ndimage.binary_closing(_changed_region(image, out, footprint), iterations=1) & footprint
    return out, ndimage.binary_fill_holes(region), oi


def ghost(image: np.ndarray, scene: Scene, rng: np.random.Generator) -> Optional[tuple[np.ndarray, np.ndarray, int]]:
    size = image.shape[0]
    for _ in range(30):
        oi = int(rng.integers(len(scene.objects)))
        obj = scene.objects[oi]
        angle = rng.uniform(0, 2 * math.pi)
        shift = rng.uniform(0.9, 1.3) * 2 * obj.h
        copy = dataclasses.replace(obj, cx=obj.cx + shift * math.cos(angle), cy=obj.cy + shift * math.sin(angle))
        if not (copy.h < copy.cx < 1 - copy.h and copy.h < copy.cy < 1 - copy.h):
            continue
        footprint = object_mask(copy, size) & ~object_mask(obj, size)
        others = _occupied(scene.replace_objects([o for j, o in enumerate(scene.objects) if j != oi]), size)
        if (footprint & others).any():
            continue
        out = image.astype(np.float32)
        out[footprint] = 0.5 * out[footprint] + 0.5 * np.array(COLORS[obj.colour], np.float32)
        out = np.clip(np.round(out), 0, 255).astype(np.uint8)
        region = _changed_region(image, out, footprint)
        if region.sum() >= 6:
            return out, region, oi
    return None


INJECTORS: dict[str, Callable] = {
    "smear": smear,
    "broken_edge": broken_edge,
    "stray_blob": stray_blob,
    "texture_noise": texture_noise,
    "ghost": ghost,
}


def inject_artifact(image: np.ndarray, scene: Scene, rng: np.random.Generator,
                    kind: Optional[str] = None) -> Optional[tuple[np.ndarray, Artifact]]:
    """Add one artifact of `kind` (random if None) to a rendered scene, avoiding regions already damaged.

    Returns the new image and the artifact, or None when this kind does not fit this scene.
    """
    if kind is None:
        kind = str(rng.choice(ARTIFACT_KINDS))
    if kind not in INJECTORS:
        raise ValueError(f"unknown artifact kind {kind!r}; expected one of {ARTIFACT_KINDS}")
    if not scene.objects:
        return None
    result = INJECTORS[kind](image, scene, rng)
    if result is None:
        return None
    out, region, oi = result
    return out, Artifact(kind, region, oi)
