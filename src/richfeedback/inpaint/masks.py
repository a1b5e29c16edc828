"""From a heatmap to the mask an inpainting pipeline repaints, and the soft alpha that pastes the repair back.

    heatmap (any resolution, [0, 1])
      -> resized to the image (bilinear)
      -> threshold: absolute ("0.2"), relative to the map's hottest pixel ("r0.5"), quantile ("q0.95": the hottest
         5%) or Otsu ("otsu"); never below `floor` (a cold map stays unmasked whatever its own scale)
      -> small components removed (fragments the heatmap model is unsure of)
      -> grown (hysteresis, `grow`): each kept component takes in the connected pixels above a lower cut, so the
         mask follows the whole defect and not only its hottest core (a defect partly left outside the mask is
         partly redrawn by the inpainter, which continues what it sees)
      -> dilated (pixels, or a fraction of the image side): the repair needs context around the defect
      -> rounded up to whole latent cells: diffusers binarises the mask at 0.5 and resizes it to the latent grid with
         nearest interpolation, so a mask that covers part of a cell is repainted all or nothing depending on which
         pixel the resize samples; whole cells make what is repainted the same as what we composite.
    mask (bool, image size)
      -> feather_mask: alpha 1 inside, falling to 0 at the mask's edge and exactly 0 outside it, so compositing
         blends the seam without touching a single pixel outside the mask.

Masks are white (True) where the image is repainted, as in diffusers.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image
from scipy import ndimage

Threshold = Union[str, float]
Length = Union[str, float, int]


class MaskError(ValueError):
    """A mask or heatmap that cannot be used with its image; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """How a heatmap becomes a mask.

    threshold: "0.2" or 0.2 (absolute heat), "r0.5" (a fraction of the heatmap's hottest value), "q0.95" (quantile
        of the heatmap's own values) or "otsu".
    floor: the cut is never below this absolute heat (relative, quantile and Otsu cuts scale with the map: without
        a floor an image the model finds clean would still get a mask).
    grow: None, or a lower cut in the same syntax (also floored): kept components grow over the connected pixels
        above it (hysteresis thresholding).
    dilate: pixels ("3", 3) or a fraction of the image's shorter side ("0.05").
    min_area: components smaller than this (pixels, or a fraction of the image area when < 1) are dropped before
        dilation.
    round_to_cells: round the mask up to whole latent cells of this many pixels (the pipeline's VAE scale factor);
        0 or 1 leaves it as it is.
    feather: pixels over which the composite fades from repair to original inside the mask's edge; 0 is a hard edge.

    Defaults, tuned on ShapesWorld dev images (`artifact_examples(40, seed=1)`, checked on seed 2; the benchmark
    uses seed 0), 8 candidates, share fixed by the oracle's judgement, selected by rahf:plausibility: absolute 0.2 /
    dilate 2 / feather 2 (the old defaults) 42.5%; relative r0.5 with floor 0.05 (empty masks 17% -> 5%, artifact
    coverage 0.77 -> 0.90) 50%; a hard edge (feather 0) on top 62.5%. A feathered edge blends the original back in
    at the mask's rim, and the inpainter completes a defect it still half sees; with the legacy path's latent
    blending the hard seam does not show. Growing to r0.3 covers whole ghosts (the largest defects) and pays off
    with the rahf:mask-heat selector (seed 1 / seed 2: 67.5% / 57.5%, against 65% / 47.5% without growth; the old
    defaults with rahf:plausibility: 42.5% / 35%). Floor 0.1 rather than 0.05: one dev image in 80 lost, but half
    as many clean renders masked (the heatmap peaks above 0.05 on half of all clean renders, above 0.1 on a quarter)
    and so repainted for nothing. Dilate 3, grow r0.2 and CFG 7 did worse.
    """

    threshold: Threshold = "r0.5"
    floor: float = 0.1
    grow: Optional[Threshold] = "r0.3"
    dilate: Length = 2
    min_area: float = 4
    round_to_cells: int = 0
    feather: float = 0.0


def parse_threshold(threshold: Threshold) -> tuple[str, float | None]:
    """("absolute", value) | ("relative", fraction) | ("quantile", q) | ("otsu", None) from "0.2", 0.2, "r0.5",
    "q0.95" or "otsu"."""
    if isinstance(threshold, (int, float)):
        kind, value = "absolute", float(threshold)
    else:
        text = str(threshold).strip().lower()
        try:
            if text == "otsu":
                return "otsu", None
            if text.startswith("q"):
                kind, value = "quantile", float(text[1:])
            elif text.startswith("r"):
                kind, value = "relative", float(text[1:])
            else:
                kind, value = "absolute", float(text)
        except ValueError:
            raise ValueError(f"threshold {threshold!r} is not understood: use a heat value such as 0.2, a fraction "
                             "of the hottest pixel's heat such as r0.5, a quantile such as q0.95 (the hottest 5% of "
                             "pixels), or otsu") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold {threshold!r} is outside [0, 1]: heatmaps and quantiles live in [0, 1]")
    return kind, value


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance of the values' histogram.

    (scikit-image's `threshold_otsu` does the same; this is the only thing we would use it for.)
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return hi  # a flat map has no two classes: nothing is above it
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:][np.argmax(between)])  # pixels strictly above the upper edge of the low class


def threshold_value(heatmap: np.ndarray, threshold: Threshold, floor: float = 0.0) -> float:
    """The heat value above which a pixel is masked (never below `floor`)."""
    kind, value = parse_threshold(threshold)
    if kind == "absolute":
        cut = value
    elif kind == "relative":
        cut = value * float(heatmap.max())
    elif kind == "quantile":
        cut = float(np.quantile(heatmap, value))
    else:
        cut = otsu_threshold(heatmap)
    return max(float(floor), cut)


def grow_components(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """`mask` plus every 8-connected component of `region` that touches it (hysteresis thresholding)."""
    if not mask.any():
        return mask.copy()
    labels, _ = ndimage.label(region | mask, structure=np.ones((3, 3)))
    touched = np.unique(labels[mask])
    return np.isin(labels, touched[touched > 0])


def pixels(length: Length, side: int) -> float:
    """A length in pixels from pixels (3, "3") or a fraction of `side` ("0.05", 0.05: anything below 1)."""
    try:
        value = float(length)
    except (TypeError, ValueError):
        raise ValueError(f"length {length!r} is not a number: give pixels (3) or a fraction of the image side "
                         "(0.05)") from None
    if value < 0:
        raise ValueError(f"length {length!r} is negative")
    return value * side if 0 < value < 1 else value


def disk(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= radius * radius + 1e-9


def dilate_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """Grow the mask by a disk of `radius` pixels (round, so corners do not grow more than edges)."""
    if radius < 1:
        return mask.copy()
    return ndimage.binary_dilation(mask, structure=disk(radius))


def remove_small_components(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """Drop 8-connected components with fewer than `min_pixels` pixels."""
    if min_pixels <= 1 or not mask.any():
        return mask.copy()
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    areas = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    keep = np.concatenate([[False], areas >= min_pixels])
    return keep[labels]


def round_to_cells(mask: np.ndarray, cell: int) -> np.ndarray:
    """Every `cell` x `cell` block (aligned to the top-left corner, as the latent grid is) that the mask touches
    becomes fully masked."""
    if cell <= 1:
        return mask.copy()
    h, w = mask.shape
    ph, pw = -h % cell, -w % cell
    padded = np.pad(mask, ((0, ph), (0, pw)))
    blocks = padded.reshape(padded.shape[0] // cell, cell, padded.shape[1] // cell, cell).any(axis=(1, 3))
    return np.repeat(np.repeat(blocks, cell, axis=0), cell, axis=1)[:h, :w]


def feather_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """float32 alpha: 1 deep inside the mask, ramping down over `radius` pixels to the mask's edge, 0 outside.

    The ramp lies inside the mask (distance to the nearest unmasked pixel), never outside it: the compositing
    guarantee (pixels outside the mask are the input's) holds for any radius.
    """
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0 or not mask.any() or mask.all():
        return mask.astype(np.float32)
    # Distance from each masked pixel to the nearest unmasked one (1 on the mask's rim). The image border is not an
    # edge of the mask (edge padding): a mask that touches the border stays opaque there.
    inside = ndimage.distance_transform_edt(np.pad(mask, 1, mode="edge"))[1:-1, 1:-1]
    return np.clip(inside / (radius + 1.0), 0.0, 1.0).astype(np.float32) * mask


def resize_heatmap(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """A float heatmap resized (bilinear) to (height, width)."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape == (height, width):
        return heatmap
    return np.asarray(Image.fromarray(heatmap, mode="F").resize((width, height), Image.BILINEAR), dtype=np.float32)


def heatmap_to_mask(heatmap: np.ndarray, height: int, width: int, config: MaskConfig = MaskConfig()
                    ) -> tuple[np.ndarray, float]:
    """(bool mask at (height, width), the threshold used) from a heatmap in [0, 1] at any resolution."""
    heat = resize_heatmap(heatmap, height, width)
    if not 0.0 <= config.floor <= 1.0:
        raise ValueError(f"floor {config.floor!r} is outside [0, 1]: heatmaps live in [0, 1]")
    cut = threshold_value(heat, config.threshold, config.floor)
    mask = heat > cut
    side = min(height, width)
    min_pixels = config.min_area * height * width if 0 < config.min_area < 1 else config.min_area
    mask = remove_small_components(mask, min_pixels)
    if config.grow is not None:  # a lower cut than `cut` only grows; a higher one changes nothing
        mask = grow_components(mask, heat > min(cut, threshold_value(heat, config.grow, config.floor)))
    mask = dilate_mask(mask, pixels(config.dilate, side))
    mask = round_to_cells(mask, config.round_to_cells)
    return mask, cut


def finish_user_mask(mask: np.ndarray, config: MaskConfig) -> np.ndarray:
    """A user's own mask is used as drawn, only rounded up to latent cells (so what is repainted is what is
    composited)."""
    return round_to_cells(mask, config.round_to_cells)


def _read_gray(path: Path) -> np.ndarray:
    """float32 (H, W) in [0, 1] from a grayscale or colour image file (colour: its luminance), any bit depth."""
    if not path.exists():
        raise MaskError(f"{path}: no such mask or heatmap file")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                return (array / (65535.0 if array.max() > 255 else 255.0)).astype(np.float32)
            if image.mode == "F":
                return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
            if image.mode in ("RGBA", "LA", "PA", "P"):
                image = image.convert("RGBA")
                alpha = np.asarray(image, dtype=np.float32)[..., 3] / 255.0
                gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
                return gray * alpha  # transparent means "not masked", whatever colour it hides
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError) as err:
        raise MaskError(f"{path}: not a readable image ({err}); save the mask as a grayscale PNG") from err


def _check_size(array: np.ndarray, path: Path, height: int, width: int, what: str) -> None:
    if array.shape != (height, width):
        raise MaskError(f"{path}: the {what} is {array.shape[1]}x{array.shape[0]} but its image is {width}x{height}; "
                        f"save the {what} at the image's size")


def read_mask_file(path: str | os.PathLike, height: int, width: int) -> np.ndarray:
    """A user's mask (white = repaint, binarised at 0.5 as diffusers does); it must have the image's size."""
    path = Path(path)
    gray = _read_gray(path)
    _check_size(gray, path, height, width, "mask")
    return gray >= 0.5


def read_heatmap_file(path: str | os.PathLike, height: int, width: int) -> np.ndarray:
    """A user's heatmap (grayscale, white = hot) in [0, 1]; a different resolution with the same aspect ratio is
    resized (heatmap models predict at their own resolution), any other size is an error."""
    path = Path(path)
    heat = _read_gray(path)
    h, w = heat.shape
    if abs(h * width - w * height) > max(h, w, height, width):  # allow for rounding of odd sizes
        raise MaskError(f"{path}: the heatmap is {w}x{h} but its image is {width}x{height} (another aspect ratio); "
                        "save it at the image's size or aspect ratio")
    return resize_heatmap(heat, height, width)
