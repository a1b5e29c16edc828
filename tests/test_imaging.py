"""Image inputs in every common mode load as RGB; broken files give an error naming the file."""

import numpy as np
import pytest
from PIL import Image

from richfeedback.imaging import ImageLoadError, load_rgb, make_grid, save_png


def test_rgba_is_composited_on_white(tmp_path):
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "a.png")
    assert (load_rgb(tmp_path / "a.png") == 255).all()


@pytest.mark.parametrize("mode", ["L", "P", "LA", "RGB", "CMYK"])
def test_modes_load_as_uint8_rgb(tmp_path, mode):
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    Image.new("RGB", (5, 3), (10, 200, 30)).convert(mode).save(path)
    array = load_rgb(path)
    assert array.shape == (3, 5, 3) and array.dtype == np.uint8


def test_16_bit_grayscale_is_scaled_to_8_bits(tmp_path):
    Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16)).save(tmp_path / "g16.png")
    assert (load_rgb(tmp_path / "g16.png") == 255).all()


def test_truncated_file_error_names_the_file(tmp_path):
    save_png(np.zeros((32, 32, 3), np.uint8), tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="cut.png"):
        load_rgb(tmp_path / "cut.png")
    with pytest.raises(ImageLoadError, match="no such file"):
        load_rgb(tmp_path / "missing.png")


def test_grid_tiles_images_in_rows():
    grid = make_grid([np.zeros((8, 8, 3), np.uint8)] * 5, ncols=2, pad=1)
    assert grid.shape == (3 * 9 + 1, 2 * 9 + 1, 3)
