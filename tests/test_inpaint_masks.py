"""Heatmap -> mask operations of `richfeedback.inpaint.masks`: thresholds, dilation, components, latent cells,
feathering, and reading users' mask and heatmap files."""

import numpy as np
import pytest
from PIL import Image

from richfeedback.inpaint.masks import (MaskConfig, MaskError, dilate_mask, feather_mask, grow_components,
                                        heatmap_to_mask, otsu_threshold, parse_threshold, pixels, read_heatmap_file,
                                        read_mask_file, remove_small_components, resize_heatmap, round_to_cells,
                                        threshold_value)


def test_threshold_specs_are_absolute_quantile_or_otsu():
    assert parse_threshold(0.3) == ("absolute", 0.3)
    assert parse_threshold("0.25") == ("absolute", 0.25)
    assert parse_threshold("q0.95") == ("quantile", 0.95)
    assert parse_threshold("OTSU") == ("otsu", None)
    assert parse_threshold("r0.5") == ("relative", 0.5)
    for bad in ("hot", "q", "1.5", "q-0.1", "r", "r1.5"):
        with pytest.raises(ValueError, match="threshold"):
            parse_threshold(bad)


def test_quantile_threshold_masks_the_hottest_share():
    ramp = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    mask = ramp > threshold_value(ramp, "q0.9")
    assert abs(mask.mean() - 0.10) < 0.005


def test_relative_threshold_scales_with_the_hottest_pixel_and_stops_at_the_floor():
    heat = np.zeros((8, 8), np.float32)
    heat[2, 2], heat[5, 5] = 0.4, 0.1
    assert threshold_value(heat, "r0.5") == pytest.approx(0.2)
    assert threshold_value(heat * 0.1, "r0.5") == pytest.approx(0.02)  # a cold map still has a hottest pixel ...
    assert threshold_value(heat * 0.1, "r0.5", floor=0.05) == 0.05  # ... which the floor keeps unmasked
    assert threshold_value(heat, "0.01", floor=0.05) == 0.05
    assert threshold_value(heat, "q0.5", floor=0.05) == 0.05


def test_grow_takes_in_connected_warm_pixels_only():
    core = np.zeros((10, 10), bool)
    core[2, 2] = True
    warm = np.zeros((10, 10), bool)
    warm[1:4, 1:6] = True  # touches the core
    warm[8, 8] = True  # warm but apart from any core: not taken
    grown = grow_components(core, warm)
    assert grown[1:4, 1:6].all() and not grown[8, 8] and grown.sum() == 15
    assert not grow_components(np.zeros((10, 10), bool), warm).any()


def test_heatmap_to_mask_with_relative_threshold_floor_and_grow():
    heat = np.zeros((64, 64), np.float32)
    heat[20:30, 20:30] = 0.15  # the defect's faint rim
    heat[23:27, 23:27] = 0.3  # its hot core
    heat[50:54, 50:54] = 0.1  # warm elsewhere, not connected to a core
    config = MaskConfig(threshold="r0.5", floor=0.05, grow=None, dilate=0, round_to_cells=1)
    core, cut = heatmap_to_mask(heat, 64, 64, config)
    assert cut == pytest.approx(0.15) and core.sum() == 16
    grown, _ = heatmap_to_mask(heat, 64, 64, MaskConfig(threshold="r0.5", floor=0.05, grow="r0.2", dilate=0,
                                                         round_to_cells=1))
    assert grown[20:30, 20:30].all() and grown.sum() == 100  # the whole defect, not the unconnected warm patch
    cold, cut = heatmap_to_mask(heat * 0.1, 64, 64, config)  # hottest 0.03: below the floor
    assert cut == 0.05 and not cold.any()
    with pytest.raises(ValueError, match="floor"):
        heatmap_to_mask(heat, 64, 64, MaskConfig(floor=2.0))


def test_otsu_splits_a_two_level_map_between_its_levels():
    heat = np.full((32, 32), 0.1, np.float32)
    heat[8:16, 8:16] = 0.8
    noisy = heat + np.random.default_rng(0).normal(0, 0.01, heat.shape)
    cut = otsu_threshold(noisy)
    assert 0.1 < cut < 0.75
    assert ((noisy > cut) == (heat == np.float32(0.8))).all()
    assert otsu_threshold(np.zeros((4, 4))) == 0.0  # flat map: nothing strictly above


def test_lengths_are_pixels_or_fractions_of_the_side():
    assert pixels(3, 64) == 3
    assert pixels("0.05", 64) == pytest.approx(3.2)
    with pytest.raises(ValueError):
        pixels("-1", 64)


def test_dilation_grows_a_point_into_a_disk_of_the_radius():
    mask = np.zeros((21, 21), bool)
    mask[10, 10] = True
    grown = dilate_mask(mask, 3)
    assert grown[10, 13] and grown[10, 7] and grown[13, 10]
    assert not grown[10, 14] and not grown[13, 13]  # a disk: the corner at distance 4.2 stays out
    assert grown.sum() == 29


def test_small_components_are_removed_and_large_ones_kept():
    mask = np.zeros((16, 16), bool)
    mask[1, 1:3] = True  # 2 pixels
    mask[8:11, 8:11] = True  # 9 pixels
    kept = remove_small_components(mask, 4)
    assert kept[8:11, 8:11].all() and not kept[1, 1:3].any()


def test_rounding_up_fills_every_latent_cell_the_mask_touches():
    mask = np.zeros((16, 16), bool)
    mask[5, 5] = True
    mask[15, 0] = True
    cells = round_to_cells(mask, 4)
    assert cells.sum() == 32
    assert cells[4:8, 4:8].all() and cells[12:16, 0:4].all()
    odd = round_to_cells(np.ones((10, 10), bool), 4)  # sizes that are not multiples of the cell
    assert odd.shape == (10, 10) and odd.all()


def test_feathering_stays_inside_the_mask():
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    alpha = feather_mask(mask, 2)
    assert (alpha[~mask] == 0).all()
    assert alpha[16, 16] == 1.0
    assert 0 < alpha[8, 16] < alpha[9, 16] < 1.0  # the rim ramps up inwards
    edge = np.zeros((16, 16), bool)
    edge[:, :6] = True  # touches the image border: no fade along the border
    assert feather_mask(edge, 2)[8, 0] == 1.0
    assert (feather_mask(mask, 0) == mask).all()


def test_heatmap_to_mask_thresholds_dilates_and_rounds_at_image_size():
    heat = np.zeros((16, 16), np.float32)
    heat[4:6, 4:6] = 0.9  # hot block at the heatmap's resolution: about pixels 16..23 at 64x64 (bilinear)
    heat[12, 12] = 0.9  # one hot heatmap pixel: at most 4x4 image pixels, dropped by min_area 20
    mask, cut = heatmap_to_mask(heat, 64, 64, MaskConfig(threshold=0.5, grow=None, dilate=0, min_area=20,
                                                         round_to_cells=1))
    assert cut == 0.5
    assert mask[17:23, 17:23].all() and not mask[24:, :].any() and not mask[:, 24:].any()
    grown, _ = heatmap_to_mask(heat, 64, 64, MaskConfig(threshold=0.5, grow=None, dilate=2, min_area=20,
                                                        round_to_cells=8))
    assert grown[16:24, 16:24].all() and grown.sum() % 64 == 0 and grown.sum() > mask.sum()  # whole 8x8 cells
    cold, _ = heatmap_to_mask(heat * 0.1, 64, 64, MaskConfig(threshold=0.5))
    assert not cold.any()


def test_resize_heatmap_keeps_values_in_range():
    heat = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    big = resize_heatmap(heat, 64, 48)
    assert big.shape == (64, 48) and 0 <= big.min() and big.max() <= 1


def test_mask_file_of_another_size_is_an_error_naming_the_fix(tmp_path):
    path = tmp_path / "m.png"
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(path)
    with pytest.raises(MaskError, match=r"m.png: the mask is 32x32 but its image is 64x64; save the mask"):
        read_mask_file(path, 64, 64)


def test_mask_files_in_any_mode_binarise_at_half(tmp_path):
    gray = np.zeros((8, 8), np.uint8)
    gray[:, 4:] = 200
    Image.fromarray(gray).save(tmp_path / "l.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "i16.png")  # 16-bit
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, 4:, 3] = 255  # white everywhere, but transparent on the left
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    for name in ("l.png", "i16.png", "rgba.png"):
        mask = read_mask_file(tmp_path / name, 8, 8)
        assert mask[:, 4:].all() and not mask[:, :4].any(), name


def test_unreadable_mask_file_says_so(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    with pytest.raises(MaskError, match="broken.png: not a readable image"):
        read_mask_file(path, 8, 8)


def test_heatmap_files_are_resized_within_one_aspect_ratio(tmp_path):
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / "h.png")
    heat = read_heatmap_file(tmp_path / "h.png", 64, 64)
    assert heat.shape == (64, 64) and abs(float(heat.mean()) - 128 / 255) < 1e-3
    with pytest.raises(MaskError, match="another aspect ratio"):
        read_heatmap_file(tmp_path / "h.png", 64, 32)
