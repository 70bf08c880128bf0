import numpy as np
import pytest

from hsa_core.media import read_image, read_mp4, read_mp4_audio, upscale, write_image, write_mp4


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


def test_a_soundtrack_is_muxed_as_aac_and_comes_back(tmp_path):
    rate = 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)[None]  # 1 s, mono
    path = write_mp4(np.zeros((8, 32, 32, 3)), tmp_path / "clip.mp4", fps=8, audio=tone, sample_rate=rate)
    audio, sample_rate, codec = read_mp4_audio(path)
    assert (codec, sample_rate, audio.shape[0]) == ("aac", rate, 2)  # mono is written as stereo
    assert read_mp4(path).shape == (8, 32, 32, 3)
    delay = 1024  # AAC's encoder priming
    decoded = audio[0, delay : delay + rate // 2]
    assert np.corrcoef(decoded, tone[0, : rate // 2])[0, 1] > 0.99
    assert np.abs(audio[0] - audio[1]).max() < 1e-3


def test_a_malformed_soundtrack_is_refused(tmp_path):
    with pytest.raises(ValueError, match="audio must be"):
        write_mp4(np.zeros((2, 32, 32, 3)), tmp_path / "x.mp4", audio=np.zeros((3, 100)), sample_rate=16000)
    with pytest.raises(ValueError, match="audio must be"):
        write_mp4(np.zeros((2, 32, 32, 3)), tmp_path / "x.mp4", audio=np.zeros((2, 100)))


def test_a_lossless_mp4_decodes_to_the_clip_exactly(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)  # H.264's worst case
    lossless = write_mp4(noise, tmp_path / "master.mp4", fps=16, lossless=True)
    assert np.array_equal(read_mp4(lossless), noise)
    standard = read_mp4(write_mp4(noise, tmp_path / "standard.mp4", fps=16))
    assert np.abs(standard.astype(int) - noise).max() > 10  # yuv420p's chroma subsampling alone loses that much
