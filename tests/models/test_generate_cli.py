"""``hsa-video generate --model <name> --model-path <dir>`` on tiny saved checkpoints."""

import pytest

from hsa_core.media import read_mp4, write_image
from hsa_video.cli import main

from .tiny import HEIGHT, NUM_FRAMES, WIDTH, build_pipeline

SMALL = ["--height", str(HEIGHT), "--width", str(WIDTH), "--frames", str(NUM_FRAMES), "--threads", "1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    def save(name):
        directory = tmp_path_factory.mktemp(name)
        build_pipeline(name, with_text_encoder=True).save_pretrained(directory)
        return directory

    return save


def test_text_to_video_at_half_budget_reports_the_cache_and_writes_the_clip(checkpoint, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    code = main(["generate", "--model", "wan2.1-t2v-1.3b", "--model-path", str(checkpoint("wan2.1-t2v-1.3b")),
                 "--prompt", "a red car on the beach", "--budget", "0.5", "--steps", "12",
                 "--kv-cache-dtype", "bfloat16", "--out", str(out), *SMALL])
    captured = capsys.readouterr()
    assert code == 0
    assert "K/V cache: 2 layers × 48 tokens × 24 × 2 (K, V) × 2 B (bfloat16) × 2 guidance branches" in captured.err
    assert "wan2.1-t2v-1.3b 64×64×9  budget 0.5" in captured.out and "decoded on device" in captured.out
    assert read_mp4(out).shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)


def test_image_to_video_takes_the_first_frame_from_a_file(checkpoint, tmp_path, capsys):
    import numpy as np

    frame = write_image(np.full((HEIGHT, WIDTH, 3), 0.5, dtype=np.float32), tmp_path / "frame.png")
    out = tmp_path / "i2v.mp4"
    code = main(["generate", "--model", "wan2.1-i2v-14b-480p", "--model-path",
                 str(checkpoint("wan2.1-i2v-14b-480p")), "--prompt", "a dog runs", "--image", str(frame),
                 "--steps", "2", "--out", str(out), *SMALL])
    assert code == 0
    assert "K/V cache: none" in capsys.readouterr().err
    assert read_mp4(out).shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)


def test_ti2v_image_to_video_at_half_budget_holds_the_first_frame_and_writes_the_clip(checkpoint, tmp_path, capsys):
    import numpy as np

    frame = write_image(np.full((HEIGHT, WIDTH, 3), 0.5, dtype=np.float32), tmp_path / "frame.png")
    out = tmp_path / "ti2v.mp4"
    # 20 steps: the image's latent frame (a third of the tiny grid's tokens) is refreshed at every step,
    # which puts the minimum budget of 12 steps above 0.5
    code = main(["generate", "--model", "wan2.2-ti2v-5b", "--model-path", str(checkpoint("wan2.2-ti2v-5b")),
                 "--prompt", "a dog runs", "--image", str(frame), "--budget", "0.5", "--steps", "20",
                 "--out", str(out), *SMALL])
    captured = capsys.readouterr()
    assert code == 0
    # 48-channel latents of 3 × 4 × 4 from the 16× VAE → 3 × 2 × 2 tokens
    assert "K/V cache: 2 layers × 12 tokens × 24 × 2 (K, V)" in captured.err
    assert "wan2.2-ti2v-5b 64×64×9  budget 0.5" in captured.out and "decoded on device" in captured.out
    assert read_mp4(out).shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)


@pytest.mark.parametrize("args, message", [
    (["--model", "sora"], "error [invalid_config]: unknown model 'sora'; known models: tiny, ltx-2, wan2.1-flf2v"),
    (["--model", "wan2.1-t2v-1.3b"], "error [invalid_config]: --model-path is required for wan2.1-t2v-1.3b"),
    (["--model", "wan2.1-t2v-1.3b", "--model-path", "/nonexistent/wan"],
     "error [model_not_found]: no model directory at /nonexistent/wan: put the diffusers-format weights of "
     "wan2.1-t2v-1.3b there, e.g. `huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
    (["--model", "wan2.1-t2v-1.3b", "--model-path", "/x", "--kv-cache-dtype", "int4"],
     "error [invalid_config]: kv_cache_dtype must be one of"),
    (["--model-path", "/x"], "error [invalid_config]: --model-path is for real checkpoints"),
])
def test_user_errors_are_one_clear_line_and_exit_2(args, message, capsys):
    assert main(["generate", "--prompt", "x", *args]) == 2
    assert message in capsys.readouterr().err


def test_an_image_to_video_model_without_an_image_exits_2(checkpoint, capsys):
    code = main(["generate", "--model", "wan2.2-i2v-a14b", "--model-path", str(checkpoint("wan2.2-i2v-a14b")),
                 "--prompt", "a cat", *SMALL])
    assert code == 2
    assert "error [invalid_config]: wan2.2-i2v-a14b is image-to-video: it needs an image" in capsys.readouterr().err
