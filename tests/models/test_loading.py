"""Loading by name from a local diffusers directory, and every error a user can hit on the way."""

import json

import numpy as np
import pytest
import torch

from hsa_core import ConfigError, EulerSampler
from hsa_core.errors import MissingDependencyError, ModelNotFoundError
from hsa_core.models import available_models, get_model_spec, load_model
from hsa_core.models.wan import WanVideoModel

from .tiny import HEIGHT, NUM_FRAMES, WIDTH, build_pipeline, tiny_image

SMALL = dict(height=HEIGHT, width=WIDTH, num_frames=NUM_FRAMES, steps=3)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name → a directory holding the tiny pipeline (tokenizer and text encoder included) of that family."""
    directories = {}

    def save(name):
        if name not in directories:
            directory = tmp_path_factory.mktemp(name)
            build_pipeline(name, with_text_encoder=True).save_pretrained(directory)
            directories[name] = directory
        return directories[name]

    return save


@pytest.mark.parametrize("name, with_image", [
    ("wan2.1-t2v-1.3b", False), ("wan2.1-i2v-14b-480p", True), ("wan2.2-ti2v-5b", True), ("wan2.2-ti2v-5b", False),
    ("wan2.2-t2v-a14b", False), ("wan2.2-i2v-a14b", True),
])
def test_a_saved_checkpoint_loads_by_name_and_generates_what_the_original_does(saved, name, with_image):
    request = dict(image=tiny_image() if with_image else None, seed=3, **SMALL)
    original = WanVideoModel(build_pipeline(name, with_text_encoder=True), get_model_spec(name))
    loaded = load_model(name, saved(name))
    assert type(loaded.pipeline) is type(original.pipeline)
    expected = original.generate("a red car on the beach", EulerSampler(), **request)
    video = loaded.generate("a red car on the beach", EulerSampler(), **request)
    # the prompt encoded by the loaded UMT5, the same noise, the same loop (loading may reorder float sums)
    assert (video.latents - expected.latents).abs().max() <= 1e-5
    assert video.frames.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3) and video.decoded_with == "device"
    assert np.abs(video.frames - expected.frames).max() <= 1e-4


def test_the_registry_lists_every_family_with_40_step_presets():
    assert available_models() == ["ltx-2", "wan2.1-flf2v-14b-720p", "wan2.1-i2v-14b-480p", "wan2.1-t2v-1.3b",
                                  "wan2.1-t2v-14b", "wan2.2-i2v-a14b", "wan2.2-t2v-a14b", "wan2.2-ti2v-5b"]
    assert {get_model_spec(name).steps for name in available_models()} == {40}
    assert get_model_spec("wan2.2-t2v-a14b").guidance_scale_2 == 3.0


def test_an_unknown_model_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'sora'; known models: ltx-2, wan2.1-flf2v-14b-720p, wan2"):
        load_model("sora", "/nowhere")


def test_a_missing_directory_says_where_to_put_the_weights(tmp_path):
    missing = tmp_path / "Wan2.1-T2V-1.3B"
    with pytest.raises(ModelNotFoundError, match=f"no model directory at {missing}.*"
                                                 "huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers") as error:
        load_model("wan2.1-t2v-1.3b", missing)
    assert error.value.code == "model_not_found"


def test_a_directory_without_model_index_is_not_a_diffusers_checkpoint(tmp_path):
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="not a diffusers-format model directory"):
        load_model("wan2.1-t2v-1.3b", tmp_path)


def test_a_text_to_video_checkpoint_is_refused_as_image_to_video(saved):
    with pytest.raises(ModelNotFoundError, match="holds a WanPipeline checkpoint, but wan2.1-i2v-14b-480p needs a "
                                                 "WanImageToVideoPipeline"):
        load_model("wan2.1-i2v-14b-480p", saved("wan2.1-t2v-1.3b"))


def test_a_two_expert_model_needs_its_second_transformer(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps(
        {"_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"],
         "transformer_2": [None, None]}))
    with pytest.raises(ModelNotFoundError, match="no transformer_2, but wan2.2-t2v-a14b is a two-expert model"):
        load_model("wan2.2-t2v-a14b", tmp_path)


def test_a_missing_optional_package_names_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "accelerate" else real_find_spec(name, *args))
    with pytest.raises(MissingDependencyError, match="wan2.1-t2v-1.3b needs the Python package accelerate: "
                                                     "pip install accelerate") as error:
        load_model("wan2.1-t2v-1.3b", tmp_path)
    assert error.value.code == "missing_dependency"


@pytest.mark.parametrize("name, request_change, message", [
    ("wan2.1-i2v-14b-480p", {}, "wan2.1-i2v-14b-480p is image-to-video: it needs an image"),
    ("wan2.1-t2v-1.3b", {"image": "frame"}, "wan2.1-t2v-1.3b is text-to-video: it takes no image"),
    ("wan2.1-t2v-1.3b", {"height": 72}, "height and width must be positive multiples of 16, got 72×64"),
    # the Wan 2.2 VAE is 16× spatial: one 1×2×2 transformer patch spans 32 pixels
    ("wan2.2-ti2v-5b", {"height": 48}, "height and width must be positive multiples of 32, got 48×64"),
    ("wan2.1-t2v-1.3b", {"num_frames": 8}, r"num_frames must be 4·k \+ 1 \(e.g. 81\), got 8"),
])
def test_requests_the_model_cannot_serve_are_refused_before_any_work(name, request_change, message):
    model = WanVideoModel(build_pipeline(name), get_model_spec(name))
    request = {**SMALL, **request_change}
    if request.get("image") == "frame":
        request["image"] = tiny_image()
    with pytest.raises(ConfigError, match=message):
        model.prepare(prompt_embeds=torch.zeros(1, 4, 32), negative_prompt_embeds=torch.zeros(1, 4, 32), **request)


def test_an_image_to_video_transformer_without_its_condition_is_refused():
    from hsa_core.adapters.wan import WanAdapter

    adapter = WanAdapter(build_pipeline("wan2.2-i2v-a14b").transformer)
    grid = adapter.token_grid((1, 16, 3, 8, 8))
    with pytest.raises(ConfigError, match=r"image-to-video: it needs condition latents of shape \(1, 20, 3, 8, 8\)"):
        adapter.prepare_branch(grid, torch.zeros(1, 4, 32))
