"""Reading and writing the images people and models look at: robust loading, atomic PNG writes, grids."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class ImageLoadError(ValueError):
    """An input image that cannot be used; the message names the file and what to do."""


def to_rgb_array(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """uint8 (H, W, 3) from any PIL mode: alpha composited on `background`, 16-bit scaled, palettes expanded."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        gray = np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        image = Image.alpha_composite(canvas, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """uint8 (H, W, 3) from an image file, or ImageLoadError naming the file."""
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb_array(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageLoadError(f"{path}: not a readable image ({err}); re-export it as PNG or leave it out") from err


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def save_png(image: np.ndarray | Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically (a crash never leaves a half-written file under the final name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def make_grid(images: Sequence[np.ndarray], ncols: int = 8, pad: int = 2, scale: int = 1,
              captions: Sequence[str] | None = None, caption_height: int = 0) -> np.ndarray:
    """One uint8 image tiling `images` (all the same size) in rows of `ncols`, optionally upscaled and captioned."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    tiles = [np.asarray(Image.fromarray(im).resize((im.shape[1] * scale, im.shape[0] * scale), Image.NEAREST))
             for im in images]
    h, w = tiles[0].shape[:2]
    ncols = min(ncols, len(tiles))
    nrows = -(-len(tiles) // ncols)
    cell_h = h + caption_height
    grid = np.full((nrows * (cell_h + pad) + pad, ncols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        y, x = pad + r * (cell_h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = tile
    if captions and caption_height:
        canvas = Image.fromarray(grid)
        draw = ImageDraw.Draw(canvas)
        for i, text in enumerate(captions):
            r, c = divmod(i, ncols)
            draw.text((pad + c * (w + pad) + 1, pad + r * (cell_h + pad) + h + 1), text, fill=(0, 0, 0))
        grid = np.asarray(canvas)
    return grid


def heatmap_colors(heatmap: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) colours for a heatmap in [0, 1]: dark blue through green and yellow to red."""
    h = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * h - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * h - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * h - 1), 0, 1)
    return (np.stack([r, g, b], -1) * 255).round().astype(np.uint8)


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.8) -> np.ndarray:
    """The image with a heatmap in [0, 1] blended on top in proportion to the heat, on an absolute scale (a map that
    is 0.05 everywhere stays almost invisible; cold pixels keep their colour)."""
    image = np.asarray(image, dtype=np.float32)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != image.shape[:2]:
        heat = np.asarray(Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8)).resize(
            (image.shape[1], image.shape[0]), Image.BILINEAR), dtype=np.float32) / 255.0
    weight = (alpha * np.clip(heat, 0, 1) ** 0.5)[..., None]  # sqrt: a 0.25 heat shows at half strength
    return ((1 - weight) * image + weight * heatmap_colors(heat)).round().astype(np.uint8)
