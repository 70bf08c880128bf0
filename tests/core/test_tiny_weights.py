"""The shipped tiny-model weights: they load from the package and run T2V and I2V end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from hsa_core import EulerSampler, HSASampler
from hsa_core.media import read_mp4, write_image
from hsa_core.models.tiny.model import WEIGHTS_DIR, TinyVideoModel
from hsa_video.tiny.checker import check_clip
from hsa_video.tiny.domain import render, sample_spec


@pytest.fixture(scope="module")
def model():
    return TinyVideoModel.load()


def test_weights_ship_inside_the_package_with_their_card_and_log():
    for name in ("tiny_config.json", "autoencoder.safetensors", "text_encoder.safetensors", "MODEL_CARD.md",
                 "train_log.jsonl", "loss.png", "transformer/config.json",
                 "transformer/diffusion_pytorch_model.safetensors"):
        assert (WEIGHTS_DIR / name).exists(), name
    shipped = [p for p in WEIGHTS_DIR.rglob("*") if p.is_file() and p.name != "train_state.pt"]  # state: local only
    size = sum(p.stat().st_size for p in shipped)
    assert size <= 20 * 2**20
    assert json.loads((WEIGHTS_DIR / "tiny_config.json").read_text())["training"]["steps"] > 0


def test_autoencoder_reconstructs_ground_truth_clips(model):
    spec = sample_spec(np.random.default_rng(3), "train")
    clip = torch.from_numpy(render(spec)).permute(3, 0, 1, 2)[None]
    with torch.no_grad():
        decoded = model.autoencoder.decode(model.autoencoder.encode(clip))
    assert ((decoded - clip) ** 2).mean() < 0.01


def test_i2v_holds_the_first_latent_frame_bit_exact(model):
    spec = sample_spec(np.random.default_rng(4), "train")
    image = render(spec)[0]
    clip, result = model.generate(spec.caption, HSASampler(0.5), image=image, steps=20, seed=1)
    grid = model.adapter.token_grid(model.config.latent_shape)
    first = model.autoencoder.encode(torch.from_numpy(image).permute(2, 0, 1)[None, :, None])
    latents = torch.zeros(model.config.latent_shape)
    latents[:, :, :1] = first
    frozen = grid.frame_mask([0])
    assert torch.equal(result.tokens[:, frozen], grid.patchify(latents)[:, frozen])
    assert check_clip(clip, spec.caption, first_frame=image).first_frame_max_abs_error < 0.5


def test_prompts_outside_the_vocabulary_do_not_crash(model):
    clip, _ = model.generate("a 🦄 unicorn dancing the tango 123", EulerSampler(), steps=2)
    assert clip.shape == (16, 32, 32, 3) and np.isfinite(clip).all()


def test_generate_cli_writes_a_playable_mp4(tmp_path):
    image = tmp_path / "first.png"
    write_image(render(sample_spec(np.random.default_rng(5), "train"))[0], image)
    out = tmp_path / "clip.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "hsa_video.cli", "generate", "--prompt",
         "a red circle moving left on a plain blue background", "--image", str(image), "--budget", "0.5",
         "--steps", "20", "--out", str(out), "--upscale", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "achieved compute fraction" in result.stdout
    frames = read_mp4(out)
    assert frames.shape == (16, 64, 64, 3)
