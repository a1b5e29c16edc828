"""Rasterise ShapesWorld scenes: flat colours, hard edges, any resolution.

Edges are not anti-aliased on purpose: every pixel is either background or exactly one palette colour, which is what
lets the oracle read clean renders back exactly and find injected artifacts as the pixels no scene explains.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .scene import BACKGROUND, COLORS, SHAPES, Scene, SceneObject

DEFAULT_SIZE = 64


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates of pixel centres: (x, y), each (size, size)."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.meshgrid(c, c, indexing="xy")


def object_mask(obj: SceneObject, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Boolean (size, size) mask of the pixels whose centre lies inside the object."""
    x, y = pixel_grid(size)
    dx, dy = x - obj.cx, y - obj.cy
    if obj.shape == "circle":
        return dx * dx + dy * dy <= obj.h * obj.h
    if obj.shape == "square":
        return (np.abs(dx) <= obj.h) & (np.abs(dy) <= obj.h)
    if obj.shape == "triangle":
        # Upright isosceles triangle filling its bounding box: apex at the top centre, base along the bottom.
        depth = (dy + obj.h) / 2.0  # 0 at the apex, h at the base
        return (dy <= obj.h) & (depth >= 0) & (np.abs(dx) <= depth)
    raise ValueError(f"unknown shape {obj.shape!r}")


def patch_object_shapes(objects: Sequence[SceneObject], size: int, grid: int, min_cover: float = 0.25) -> np.ndarray:
    """(grid, grid) ints: per image patch (a `size // grid` pixel square), the index in SHAPES of the object that
    covers the largest share of it, if that share is at least `min_cover`, else len(SHAPES) (background). What a
    model's patch tokens must tell apart to read an object's shape."""
    if size % grid:
        raise ValueError(f"an image of {size} px does not split into {grid} x {grid} patches")
    patch = size // grid
    cover = np.zeros((len(objects) + 1, grid, grid))
    cover[0] = min_cover  # background wins where no object covers min_cover
    for i, obj in enumerate(objects, start=1):
        cover[i] = object_mask(obj, size).reshape(grid, patch, grid, patch).mean(axis=(1, 3))
    shapes = np.array([len(SHAPES)] + [SHAPES.index(o.shape) for o in objects])
    # ties (an object covering exactly min_cover) go to the background, the first row
    return shapes[cover.argmax(axis=0)]


def render_objects(objects: Sequence[SceneObject], size: int = DEFAULT_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 image of the objects on the background, later objects on top."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for obj in objects:
        image[object_mask(obj, size)] = COLORS[obj.colour]
    return image


def render(scene: Scene, size: int = DEFAULT_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 image of a scene."""
    return render_objects(scene.objects, size)
