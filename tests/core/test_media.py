import numpy as np
import pytest

from hsa_core.media import read_image, read_mp4, upscale, write_image, write_mp4


def test_mp4_round_trip_keeps_frames_size_and_colours(tmp_path):
    clip = np.zeros((8, 32, 32, 3), dtype=np.float32)
    clip[:, :, :16] = [0.9, 0.1, 0.1]  # red left half
    clip[:, :, 16:] = [0.1, 0.2, 0.9]  # blue right half
    path = write_mp4(clip, tmp_path / "clip.mp4", fps=8)
    decoded = read_mp4(path)
    assert decoded.shape == (8, 32, 32, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded[:, 8:24, 2:12].astype(float) / 255 - [0.9, 0.1, 0.1]).max() < 0.06
    assert np.abs(decoded[:, 8:24, 20:30].astype(float) / 255 - [0.1, 0.2, 0.9]).max() < 0.06


def test_odd_sizes_and_bad_shapes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_mp4(np.zeros((2, 31, 32, 3)), tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="frames, height, width, 3"):
        write_mp4(np.zeros((2, 32, 32)), tmp_path / "x.mp4")


def test_upscale_and_image_round_trip(tmp_path):
    image = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    assert upscale(image[None], 2).shape == (1, 32, 32, 3)
    write_image(image, tmp_path / "a.png")
    back = read_image(tmp_path / "a.png")
    assert np.abs(back - image).max() <= 1 / 255 + 1e-6
    assert read_image(tmp_path / "a.png", size=8).shape == (8, 8, 3)
