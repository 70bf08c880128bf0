"""The tiny model's parts with random init: tokenizer, text encoder, autoencoder, save/load, generate."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from hsa_core import EulerSampler, HSASampler
from hsa_core.models.tiny.model import TinyConfig, TinyVideoModel
from hsa_core.models.tiny.text import BOS, PAD, UNK, Tokenizer, domain_vocabulary

SMALL = TinyConfig(layers=1, heads=1, head_dim=24, text_layers=1, text_dim=16, autoencoder_width=16, steps=4)


@pytest.fixture(scope="module")
def small_model():
    return TinyVideoModel.create(SMALL, seed=0)


def test_tokenizer_handles_unknown_words_case_and_length():
    tokenizer = Tokenizer(domain_vocabulary(), max_words=5)
    ids = tokenizer(["A RED Zebra", "", "a red circle moving left on a plain blue background"])
    assert ids.shape == (3, 6)
    assert ids[0, 0] == BOS and ids[0, 3] == UNK and ids[0, 4] == PAD
    assert (ids[1, 1:] == PAD).all()
    assert (ids[2] != PAD).all()  # truncated to 5 words
    assert tokenizer.unknown_words("a red zebra!") == ["zebra"]


def test_text_encoder_zeroes_rows_past_the_prompt(small_model):
    embeds = small_model.encode_prompts(["a red circle", "gibberish 123 ☃"])
    assert embeds.shape == (2, SMALL.max_words + 1, SMALL.text_dim)
    assert embeds[0, 4:].abs().sum() == 0 and embeds[0, :4].abs().sum() > 0
    assert torch.isfinite(embeds).all()


def test_autoencoder_shapes_and_range(small_model):
    video = torch.rand(2, 3, 4, 32, 32)
    latents = small_model.autoencoder.encode(video)
    assert latents.shape == (2, SMALL.latent_channels, 4, 16, 16)
    decoded = small_model.autoencoder.decode(latents)
    assert decoded.shape == video.shape and decoded.min() >= 0 and decoded.max() <= 1


def test_save_and_load_round_trip(small_model, tmp_path):
    small_model.save(tmp_path, training={"steps": 3})
    loaded = TinyVideoModel.load(tmp_path)
    assert loaded.config == small_model.config
    ids = ["a blue square staying still on a plain red background"]
    assert torch.equal(loaded.encode_prompts(ids), small_model.encode_prompts(ids))
    for a, b in zip(loaded.transformer.state_dict().values(), small_model.transformer.state_dict().values()):
        assert torch.equal(a, b)


def test_missing_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="hsa-video train-tiny"):
        TinyVideoModel.load(tmp_path)


def test_generate_t2v_and_i2v_shapes_and_frozen_first_latent(small_model):
    clip, result = small_model.generate("a red circle moving left on a plain blue background", EulerSampler(), steps=4)
    assert clip.shape == (SMALL.frames, 32, 32, 3) and result.token_fraction == 1
    image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    recorded = []
    clip, result = small_model.generate("x", HSASampler(1.0), image=image, steps=4, callback=recorded.append)
    assert len(recorded) == 4
    with pytest.raises(ValueError, match="image must be"):
        small_model.generate("x", EulerSampler(), image=np.zeros((16, 16, 3)), steps=2)


def test_evaluation_report_has_the_documented_shape(small_model, tmp_path):
    from hsa_video.tiny.evaluate import ATTRIBUTES, EvalSettings, evaluate, write_reports, write_strip

    settings = EvalSettings(prompts=2, steps=4, sensitivity_prompts=1, strip_samples=1)
    report, samples = evaluate(small_model, settings)
    for mode in ("t2v", "i2v", "checker_on_ground_truth"):
        assert report[mode]["n"] == 2 and set(report[mode]["accuracy"]) == set(ATTRIBUTES)
    assert report["checker_on_ground_truth"]["accuracy"]["color"] == 1.0
    assert "first_frame_max_abs_error" in report["i2v"]
    assert set(report["step_sensitivity_psnr_db"]) == {"10_vs_40", "20_vs_40"}
    json_path, md_path = write_reports(report, tmp_path)
    assert json_path.exists() and "| T2V all |" in md_path.read_text()
    assert write_strip(samples, tmp_path / "strip.png").stat().st_size > 0


def test_training_runs_checkpoints_and_resumes_where_it_stopped(tmp_path):
    """A few steps of both stages from scratch, then a resume: the step count, the clips seen and the
    training time carry on from the saved state, and the exported weights load."""
    from hsa_video.tiny.train import TrainSettings, train

    settings = TrainSettings(out=tmp_path, max_steps=2, batch=2, autoencoder_steps=2, autoencoder_batch=4,
                             threads=1)
    first = train(settings)
    assert first["steps"] == 2 and first["clips_seen"] == 4 and first["seconds"] > 0
    assert (tmp_path / "train_state.pt").exists()
    resumed = train(replace(settings, resume=True, max_steps=1))
    assert resumed["steps"] == 3 and resumed["clips_seen"] == 6 and resumed["seconds"] > first["seconds"]
    assert TinyVideoModel.load(tmp_path).config is not None


def test_object_loss_weights_mark_the_object_and_its_rim_only():
    """A square covering latent pixels (2..3, 2..3) exactly gets 1 + extra there; its one-pixel rim
    covers half of each edge neighbour and a quarter of each corner neighbour; the rest weighs 1."""
    from hsa_video.tiny.train import object_loss_weights

    masks = torch.zeros(1, 2, 32, 32, dtype=torch.bool)
    masks[0, 1, 4:8, 4:8] = True  # frame 1 only; latent pixels are 2×2
    weights = object_loss_weights(masks, latent_size=16, extra=4.0)
    assert weights.shape == (1, 1, 2, 16, 16)
    assert (weights[0, 0, 0] == 1).all()  # no object in frame 0
    frame = weights[0, 0, 1]
    assert (frame[2:4, 2:4] == 5).all()
    assert frame[1, 2] == pytest.approx(1 + 4 * 0.5)  # the grown rim covers one of its two pixel rows
    assert frame[1, 1] == pytest.approx(1 + 4 * 0.25)  # and one pixel of the diagonal neighbour
    assert (frame[6:, :] == 1).all() and (frame[:, 6:] == 1).all()
    assert (object_loss_weights(masks, 16, extra=0.0) == 1).all()
