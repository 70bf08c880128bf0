"""LTX-2 (joint audio and video) against diffusers' pipelines, on tiny random-init components.

Budget 1.0 must reproduce diffusers' own loop — LTX2Pipeline / LTX2ImageToVideoPipeline with the
checkpoint's FlowMatchEulerDiscreteScheduler (resolution-dependent shift, terminal stretch), same seed,
prompt embeddings passed in — on both the video and the audio latents, with diffusers' default guidance
(CFG, spatio-temporal and modality-isolation guidance, guidance rescaling), with other values of each
and with plain CFG; budget 0.5 must spend half the token evaluations with the audio tokens computed at
every step of every guidance branch; a saved checkpoint must load by name and the CLI must write a clip
with its soundtrack.
"""

import dataclasses
import inspect
import json

import numpy as np
import pytest
import torch

from hsa_core import ConfigError, EulerSampler, HSASampler
from hsa_core.errors import MissingDependencyError, ModelNotFoundError
from hsa_core.media import read_mp4, read_mp4_audio, write_image
from hsa_core.models import get_model_spec, load_model
from hsa_core.models.ltx2 import LTX2VideoModel
from hsa_video.cli import main

from .tiny_ltx2 import FRAME_RATE, HEIGHT, NUM_FRAMES, WIDTH, build_pipeline, text_embeddings, tiny_image

TOLERANCE = 1e-4
GUIDANCE, AUDIO_GUIDANCE = 3.0, 7.0
SPEC = get_model_spec("ltx-2")
# guidance settings, in hsa_core's names (prepare); {} is the preset, diffusers' defaults
PLAIN_CFG = dict(stg_scale=0.0, audio_stg_scale=0.0, stg_blocks=[], modality_scale=1.0, audio_modality_scale=1.0,
                 guidance_rescale=0.0, audio_guidance_rescale=0.0)
# every term on, with values of its own; STG at block 1 (the default, 28, is beyond the tiny model's 2 blocks)
ALL_TERMS = dict(guidance_scale=2.5, audio_guidance_scale=5.0, stg_scale=0.8, audio_stg_scale=1.5, stg_blocks=[1],
                 modality_scale=2.0, audio_modality_scale=4.0, guidance_rescale=0.5, audio_guidance_rescale=0.9)
WITHOUT_CFG = dict(ALL_TERMS, guidance_scale=1.0, audio_guidance_scale=1.0, stg_blocks=[0])
SMALL = dict(height=HEIGHT, width=WIDTH, num_frames=NUM_FRAMES, frame_rate=FRAME_RATE)
VIDEO_TOKENS, AUDIO_TOKENS = 3 * 16 * 16, 5


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline()


@pytest.fixture(scope="module")
def perturbable_pipeline():
    """Blocks that take STG's perturbation (LTX-2.3's configuration; LTX-2.0's blocks ignore it)."""
    return build_pipeline(perturbed_attn=True)


def embeddings():
    prompt, prompt_mask, negative, negative_mask = text_embeddings()
    return dict(prompt_embeds=prompt, prompt_attention_mask=prompt_mask, negative_prompt_embeds=negative,
                negative_prompt_attention_mask=negative_mask)


def reference_latents(pipeline, with_image, steps, seed, cross_modal_timestep=False, **guidance):
    """diffusers' run; ``guidance`` in hsa_core's names, diffusers' defaults for what it leaves out."""
    import diffusers

    if with_image:
        pipeline = diffusers.LTX2ImageToVideoPipeline(**pipeline.components)
        pipeline.set_progress_bar_config(disable=True)
    if "stg_blocks" in guidance:
        guidance["spatio_temporal_guidance_blocks"] = guidance.pop("stg_blocks") or None
    return pipeline(
        **embeddings(), **({"image": tiny_image()} if with_image else {}), height=HEIGHT, width=WIDTH,
        num_frames=NUM_FRAMES, frame_rate=FRAME_RATE, num_inference_steps=steps, **guidance,
        use_cross_timestep=cross_modal_timestep, generator=torch.Generator().manual_seed(seed),
        output_type="latent", return_dict=False)


def prepare(model, with_image, steps, seed=7, **guidance):
    return model.prepare(**embeddings(), image=tiny_image() if with_image else None, steps=steps, seed=seed,
                         **guidance, **SMALL)


@pytest.mark.parametrize("guidance, perturbable, with_image, cross_modal_timestep, passes", [
    pytest.param(PLAIN_CFG, False, False, False, 2, id="plain-cfg-t2v"),
    pytest.param(PLAIN_CFG, False, True, False, 2, id="plain-cfg-i2v"),
    pytest.param(PLAIN_CFG, False, True, True, 2, id="plain-cfg-i2v-cross-timestep"),
    # LTX-2.0's blocks ignore STG's perturbation: diffusers' STG forward repeats the conditional one, not run here
    pytest.param({}, False, False, False, 3, id="defaults-t2v"),
    pytest.param({}, False, True, False, 3, id="defaults-i2v"),
    pytest.param(ALL_TERMS, True, False, False, 4, id="all-terms-t2v"),
    pytest.param(ALL_TERMS, True, True, True, 4, id="all-terms-i2v-cross-timestep"),
    pytest.param(WITHOUT_CFG, True, True, False, 3, id="stg-modality-rescale-without-cfg-i2v"),
])
def test_full_budget_reproduces_the_diffusers_pipeline_on_video_and_audio(
        pipeline, perturbable_pipeline, guidance, perturbable, with_image, cross_modal_timestep, passes, request):
    pipeline = perturbable_pipeline if perturbable else pipeline
    model = LTX2VideoModel(pipeline, dataclasses.replace(SPEC, cross_modal_timestep=cross_modal_timestep))
    job = prepare(model, with_image, steps=6, **guidance)
    result = model.denoise(job, HSASampler(1.0))
    video, audio = model.latents(job, result.tokens)
    # run after wrapping: the swapped attention processors hand diffusers' own calls to diffusers' code
    reference_video, reference_audio = reference_latents(pipeline, with_image, 6, 7, cross_modal_timestep,
                                                         **guidance)
    video_error = float((video - reference_video).abs().max())
    audio_error = float((audio - reference_audio).abs().max())
    print(f"ltx-2 {request.node.callspec.id}: max |Δ| video {video_error:.2e} audio {audio_error:.2e}")
    assert video.shape == (1, 4, 3, 16, 16) and audio.shape == (1, 2, AUDIO_TOKENS, 2)
    assert video_error <= TOLERANCE and audio_error <= TOLERANCE
    assert result.token_fraction == 1.0 and result.kv_cache_bytes == 0
    assert job.conditioning.num_branches == job.settings["transformer_passes_per_step"] == passes
    # the sampler stepped through the checkpoint scheduler's σ's (shifted by the token count, stretched to 0.1)
    assert job.schedule.sigmas[-2].item() == pytest.approx(0.1) and job.settings["shift"] > 1


def test_the_parity_check_can_fail(pipeline):
    """The audio guidance scale is visible in both streams at the tolerance the tests use."""
    model = LTX2VideoModel(pipeline, SPEC)
    job = prepare(model, False, steps=6, **PLAIN_CFG)
    video, audio = model.latents(job, model.denoise(job, HSASampler(1.0)).tokens)
    reference_video, reference_audio = reference_latents(pipeline, False, 6, 7, **PLAIN_CFG,
                                                         audio_guidance_scale=GUIDANCE)
    assert (audio - reference_audio).abs().max() > 100 * TOLERANCE
    assert (video - reference_video).abs().max() > 100 * TOLERANCE  # through the audio→video attention


@pytest.mark.parametrize("term_off", [
    dict(stg_scale=0.0, audio_stg_scale=0.0), dict(modality_scale=1.0, audio_modality_scale=1.0),
    dict(guidance_rescale=0.0, audio_guidance_rescale=0.0)], ids=["stg", "modality", "rescale"])
def test_each_guidance_term_is_visible_at_the_tolerance(perturbable_pipeline, term_off):
    """The all-terms parity would fail if a term were dropped."""
    model = LTX2VideoModel(perturbable_pipeline, SPEC)
    job = prepare(model, False, steps=6, **ALL_TERMS)
    video, audio = model.latents(job, model.denoise(job, HSASampler(1.0)).tokens)
    reference_video, reference_audio = reference_latents(perturbable_pipeline, False, 6, 7,
                                                         **{**ALL_TERMS, **term_off})
    assert (video - reference_video).abs().max() > 100 * TOLERANCE
    assert (audio - reference_audio).abs().max() > 100 * TOLERANCE


@pytest.mark.parametrize("with_image", [False, True])
def test_half_budget_with_every_guidance_branch_schedules_video_tokens_and_computes_audio_tokens_every_step(
        perturbable_pipeline, with_image):
    model = LTX2VideoModel(perturbable_pipeline, SPEC)
    job = prepare(model, with_image, steps=20, **ALL_TERMS)
    before = model.adapter.computed_tokens
    sampler = HSASampler(0.5)
    result = model.denoise(job, sampler)
    computed = {k: v - before[k] for k, v in model.adapter.computed_tokens.items()}

    # the budget counts audio tokens like video tokens: Σ active / (T · (N_v + N_a))
    assert result.num_tokens == VIDEO_TOKENS + AUDIO_TOKENS
    assert abs(result.token_fraction - 0.5) <= 0.02
    branches = 4  # conditional, negative prompt, STG, modality isolation: one active set for all
    assert job.conditioning.num_branches == branches
    assert computed["audio_tokens"] == 20 * AUDIO_TOKENS * branches  # every step, every branch
    assert computed["video_tokens"] == sum(s.active_tokens - AUDIO_TOKENS for s in result.steps) * branches
    assert min(s.active_tokens for s in result.steps) < VIDEO_TOKENS // 2  # the caching window was sparse
    # the cache holds video tokens only, self-attention and video→audio K/V, per branch, as estimated
    estimate = model.kv_cache_estimate(job, sampler)
    assert estimate.tokens == VIDEO_TOKENS and estimate.width == 2 * 8 + 2 * 4 and estimate.branches == branches
    assert result.kv_cache_bytes == estimate.total_bytes > 0
    assert torch.isfinite(result.tokens).all()
    if with_image:  # the image's latent frame is never stepped
        assert int(job.frozen.sum()) == 16 * 16
        assert torch.equal(result.tokens[:, job.frozen], job.tokens[:, job.frozen])


@pytest.mark.parametrize("branch_inputs", [{}, {"perturbed_blocks": [1]}, {"isolate_modalities": True}],
                         ids=["conditional", "stg", "modality-isolation"])
def test_a_token_subset_equals_the_full_forward_on_those_tokens(perturbable_pipeline, branch_inputs):
    """KV-cache synchronisation: video self-attention and video→audio attention read the cached rows, in
    every kind of guidance branch."""
    model = LTX2VideoModel(perturbable_pipeline, SPEC)
    job = prepare(model, True, steps=4)
    adapter, layout = model.adapter, job.layout
    branch = adapter.prepare_branch(layout, job.conditioning.prompt_embeds, **branch_inputs)
    cache = adapter.new_kv_cache(layout)
    sigma = torch.where(job.frozen, 0.0, 0.7)[None]  # per token: the image's frame at σ = 0
    full = adapter.velocity(job.tokens, sigma, branch, kv_cache=cache)
    active = torch.cat([torch.tensor([3, 300, 301, 767]), torch.arange(VIDEO_TOKENS, layout.num_tokens)])
    subset = adapter.velocity(job.tokens[:, active], sigma[:, active], branch, active=active, kv_cache=cache)
    assert (subset - full[:, active]).abs().max() <= 1e-5
    # without the cached rows the same subset attends to itself only and gets other velocities
    alone = adapter.velocity(job.tokens[:, active], sigma[:, active], branch, active=active)
    assert (alone - full[:, active]).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="audio tokens are computed at every step"):
        adapter.velocity(job.tokens[:, :4], sigma[:, :4], branch, active=torch.arange(4), kv_cache=cache)


def test_decoding_falls_back_to_tiles_on_out_of_memory_and_keeps_the_audio(pipeline, monkeypatch):
    model = LTX2VideoModel(pipeline, SPEC)
    job = prepare(model, False, steps=2)
    latents, audio_latents = model.latents(job, model.denoise(job, EulerSampler()).tokens)
    decode = pipeline.vae.decode

    def decode_runs_out_of_memory_untiled(*args, **kwargs):
        if not pipeline.vae.use_tiling:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return decode(*args, **kwargs)

    monkeypatch.setattr(pipeline.vae, "decode", decode_runs_out_of_memory_untiled)
    frames, audio, decoded_with = model.decode(latents, audio_latents)
    assert decoded_with == "tiled" and frames.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
    assert audio.shape[0] == 2 and audio.shape[1] > 0  # stereo waveform from the vocoder


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A directory holding the tiny LTX-2 pipeline, Gemma 3 text encoder and tokenizer included."""
    directory = tmp_path_factory.mktemp("ltx-2")
    build_pipeline(with_text_encoder=True).save_pretrained(directory)
    return directory


def test_a_saved_checkpoint_loads_by_name_and_generates_what_the_original_does(saved):
    request = dict(seed=3, steps=3, **SMALL)
    original = LTX2VideoModel(build_pipeline(with_text_encoder=True), SPEC)
    loaded = load_model("ltx-2", saved)
    assert type(loaded) is LTX2VideoModel and type(loaded.pipeline).__name__ == "LTX2Pipeline"
    expected = original.generate("a cat sings on the beach", EulerSampler(), image=tiny_image(), **request)
    video = loaded.generate("a cat sings on the beach", EulerSampler(), image=tiny_image(), **request)
    assert (video.latents - expected.latents).abs().max() <= 1e-5
    assert (video.audio_latents - expected.audio_latents).abs().max() <= 1e-5
    assert video.frames.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3) and video.fps == FRAME_RATE
    assert np.abs(video.frames - expected.frames).max() <= 1e-4
    assert video.sample_rate == 16000 and np.abs(video.audio - expected.audio).max() <= 1e-4


CLI_SMALL = ["--height", str(HEIGHT), "--width", str(WIDTH), "--frames", str(NUM_FRAMES), "--fps", str(FRAME_RATE),
             "--threads", "1"]


def test_the_cli_writes_the_clip_with_its_soundtrack_at_a_reduced_budget(saved, tmp_path, capsys):
    # 0.6: this toy clip's conditioning frame is half its video tokens, recomputed as context at every
    # caching-window step, so its floor at 12 steps is 0.534
    frame = write_image(np.full((HEIGHT, WIDTH, 3), 0.5, dtype=np.float32), tmp_path / "frame.png")
    out = tmp_path / "clip.mp4"
    code = main(["generate", "--model", "ltx-2", "--model-path", str(saved), "--prompt", "a dog runs",
                 "--image", str(frame), "--budget", "0.6", "--steps", "12", "--out", str(out), *CLI_SMALL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # the preset's guidance: CFG's two branches and modality isolation (the tiny LTX-2.0-like blocks ignore STG)
    assert "K/V cache: 2 layers × 768 tokens × 24 × 2 (K, V) × 4 B (float32) × 3 guidance branches" in captured.err
    assert "ltx-2 32×32×5  budget 0.6" in captured.out
    assert read_mp4(out).shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
    audio, sample_rate, codec = read_mp4_audio(out)
    # the tiny vocoder upsamples 4× only, so its soundtrack is short; it is there and not silent
    assert (codec, sample_rate, audio.shape[0]) == ("aac", 16000, 2) and np.abs(audio).max() > 0


@pytest.mark.parametrize("args, message", [
    (["--model", "ltx-2", "--model-path", "/nonexistent/ltx"],
     "error [model_not_found]: no model directory at /nonexistent/ltx: put the diffusers-format weights of ltx-2 "
     "there, e.g. `huggingface-cli download Lightricks/LTX-2"),
    (["--model", "ltx-2", "--model-path", "/x", "--guidance-2", "2"],
     "error [invalid_config]: --guidance-2 is for two-expert Wan models; ltx-2 has one transformer"),
    (["--model", "wan2.1-t2v-1.3b", "--model-path", "/x", "--audio-guidance", "2"],
     "error [invalid_config]: --audio-guidance is for LTX-2; wan2.1-t2v-1.3b generates no audio"),
])
def test_user_errors_are_one_clear_line_and_exit_2(args, message, capsys):
    assert main(["generate", "--prompt", "x", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_wan_checkpoint_is_refused_as_ltx_2(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(ModelNotFoundError, match="holds a WanPipeline checkpoint, but ltx-2 needs a LTX2Pipeline or "
                                                 "LTX2ImageToVideoPipeline"):
        load_model("ltx-2", tmp_path)


def test_a_missing_pyav_names_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "av" else real_find_spec(name, *args))
    with pytest.raises(MissingDependencyError, match="ltx-2 needs the Python package av: pip install av"):
        load_model("ltx-2", tmp_path)


@pytest.mark.parametrize("request_change, message", [
    ({"height": 48}, "height and width must be positive multiples of 32, got 48×32"),
    ({"num_frames": 6}, r"num_frames must be 2·k \+ 1 \(e.g. 121\), got 6"),
])
def test_requests_the_model_cannot_serve_are_refused_before_any_work(pipeline, request_change, message):
    model = LTX2VideoModel(pipeline, SPEC)
    with pytest.raises(ConfigError, match=message):
        model.prepare(**embeddings(), **{**SMALL, **request_change})


def test_the_registry_serves_ltx_2_with_its_presets():
    assert (SPEC.family, SPEC.task, SPEC.steps, SPEC.fps) == ("ltx2", "ti2v", 40, 24)
    assert (SPEC.height, SPEC.width, SPEC.num_frames) == (512, 768, 121)
    assert SPEC.shift is None  # the checkpoint scheduler's resolution-dependent shift


@pytest.mark.parametrize("pipeline_name", ["LTX2Pipeline", "LTX2ImageToVideoPipeline"])
def test_the_ltx_2_guidance_preset_is_diffusers_default(pipeline_name):
    import diffusers

    defaults = {name: parameter.default for name, parameter in
                inspect.signature(getattr(diffusers, pipeline_name).__call__).parameters.items()}
    preset = SPEC.audio_video_guidance
    assert (SPEC.guidance_scale, SPEC.audio_guidance_scale) == (defaults["guidance_scale"],
                                                                defaults["audio_guidance_scale"])
    for name in ("stg_scale", "audio_stg_scale", "modality_scale", "audio_modality_scale", "guidance_rescale",
                 "audio_guidance_rescale"):
        assert getattr(preset, name) == defaults[name], name
    assert list(preset.stg_blocks) == defaults["spatio_temporal_guidance_blocks"]


def test_guidance_settings_the_model_cannot_serve_are_refused(pipeline):
    model = LTX2VideoModel(pipeline, SPEC)
    with pytest.raises(ConfigError, match=r"stg_scale > 0\) needs the blocks to perturb"):
        prepare(model, False, steps=2, stg_blocks=[])
    job = prepare(model, False, steps=2)
    with pytest.raises(ConfigError, match="cannot perturb the self-attention of blocks \\[1\\]: it has 2 blocks and "
                                          "perturbed_attn=False"):
        model.adapter.prepare_branch(job.layout, job.conditioning.prompt_embeds, perturbed_blocks=[1])


def test_a_step_that_computes_only_the_audio_tokens_runs(pipeline):
    """Aligned phases leave window steps where no video token is due; the audio tokens are computed anyway,
    with the video stream over zero rows and the video context from the cache."""
    model = LTX2VideoModel(pipeline, SPEC)
    result = model.denoise(prepare(model, False, steps=20), HSASampler(0.5))
    assert AUDIO_TOKENS in [stats.active_tokens for stats in result.steps]
    assert torch.isfinite(result.tokens).all() and abs(result.token_fraction - 0.5) < 0.05
