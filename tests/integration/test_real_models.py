"""Every served family end to end: tiny random-init diffusers-format checkpoints on disk (Wan 2.1 T2V,
Wan 2.1 I2V, Wan 2.1 first-last-frame, Wan 2.2 TI2V-5B with its 48-channel VAE, Wan 2.2 T2V-A14B, LTX-2)
served by ``hsa-video worker --model NAME --model-path DIR`` behind a gateway (Celery over a real
redis-server, a moto S3 endpoint) and by ``hsa-video serve --model NAME --model-path DIR`` (one
process tree), driven by the unmodified openai SDK.

At budget 1.0 a served video must be diffusers' own pipeline run on the same directory with the same
prompt and seed — the whole served path, text encoding and VAE decode included — so the workers write
lossless MP4s (``HSA_VIDEO_LOSSLESS``): the decoded frames are compared to diffusers' to within the
8-bit rounding of the frames, where a lossy codec would blur the comparison past what a different
seed changes.
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI
from PIL import Image

from hsa_core.media import read_mp4, read_mp4_audio, to_uint8
from hsa_core.models import get_model_spec
from jobs.settings import hash_api_key
from tests.models.checkpoints import SERVED, write_checkpoint
from tests.services import Process, free_port, hsa_video_command, service_env, wait_until

API_KEY = "sk-real-models"
PROMPT = "a red car on the beach"
PARITY_STEPS, HALF_BUDGET_STEPS = 6, 20  # at 20 steps every family can run 0.5, the two-expert one too
MODELS = list(SERVED)


def png(seed: int, size: int) -> bytes:
    pixels = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def images_for(served, mode: str) -> dict[str, bytes]:
    """The frames a request of ``mode`` sends: none (t2v), a first frame (i2v), first and last (flf)."""
    size = served.width
    return {"t2v": {}, "i2v": {"input_reference": png(11, size)},
            "flf": {"input_reference": png(11, size), "last_frame": png(12, size)}}[mode]


def primary_mode(served) -> str:
    return "flf" if served.last_frame else "i2v" if served.image == "required" else "t2v"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {name: write_checkpoint(name, root / name) for name in MODELS}


class Deployment:
    def __init__(self, name: str, urls: dict[str, str], processes: dict[str, Process]):
        self.name, self.urls, self.processes = name, urls, processes

    def client(self, model: str) -> OpenAI:
        return OpenAI(base_url=self.urls[model] + "/v1", api_key=API_KEY, max_retries=0, timeout=60)

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{process.tail(30)}" for name, process in self.processes.items())


def _listed(base_url: str, models: list[str]) -> bool:
    response = httpx.get(base_url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
    return response.status_code == 200 and set(models) <= {model["id"] for model in response.json()["data"]}


@pytest.fixture(scope="module", params=["embedded", "celery"])
def deployment(request, checkpoints, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"real-{request.param}")
    settings = dict(api_key_sha256=hash_api_key(API_KEY), worker_heartbeat_seconds="2", poll_after_ms="100",
                    video_lossless="true")
    processes: dict[str, Process] = {}
    urls: dict[str, str] = {}
    try:
        if request.param == "celery":
            settings.update(redis_url=request.getfixturevalue("redis_url"), storage="s3", s3_bucket="real-models",
                            s3_endpoint_url=request.getfixturevalue("s3_endpoint"), s3_access_key_id="test",
                            s3_secret_access_key="test", data_dir=str(folder / "data"), worker_metrics_port="0")
            for name, served in SERVED.items():
                processes[name] = Process(hsa_video_command("worker", *served.worker_flags(checkpoints[name])),
                                          folder / f"{name}.log", env=service_env(**settings))
            port = free_port()
            processes["gateway"] = Process(hsa_video_command("serve", "--port", str(port), "--log-level", "warning"),
                                           folder / "gateway.log", env=service_env(**settings))
            urls = dict.fromkeys(MODELS, f"http://127.0.0.1:{port}")
            wait_until(lambda: _listed(urls[MODELS[0]], MODELS), 240, "every model listed", processes["gateway"],
                       interval=0.5)
        else:
            for name, served in SERVED.items():
                port = free_port()
                processes[name] = Process(
                    hsa_video_command("serve", "--port", str(port), "--log-level", "warning",
                                      *served.worker_flags(checkpoints[name])),
                    folder / f"{name}.log", env=service_env(**settings, data_dir=str(folder / name)))
                urls[name] = f"http://127.0.0.1:{port}"
            for name in MODELS:
                wait_until(lambda: _listed(urls[name], [name]), 240, f"{name} listed", processes[name], interval=0.5)
        yield Deployment(request.param, urls, processes)
    finally:
        for process in processes.values():
            process.stop()


def create(deployment: Deployment, model: str, mode: str, **extensions) -> openai.types.Video:
    """A create through the SDK, polled to the end. The SDK's ``videos.create`` has one file parameter;
    a first-last-frame request sends its two files through the SDK's own ``post``."""
    served, client = SERVED[model], deployment.client(model)
    files = images_for(served, mode)
    fields = dict(prompt=PROMPT, model=model, size=served.size)
    if "last_frame" in files:
        video = client.post("/videos", cast_to=openai.types.Video, body={**fields, **extensions},
                            files=[(name, (f"{name}.png", data, "image/png")) for name, data in files.items()],
                            options={"headers": {"Content-Type": "multipart/form-data"}})
    else:
        first = files.get("input_reference")
        image = {"input_reference": ("first.png", first, "image/png")} if first else {}
        video = client.videos.create(**fields, extra_body=extensions, **image)
    return client.videos.poll(video.id, poll_interval_ms=100)


def downloaded(deployment: Deployment, model: str, video, tmp_path) -> str:
    path = tmp_path / f"{video.id}.mp4"
    deployment.client(model).videos.download_content(video.id).write_to_file(path)
    return path


_references: dict[tuple, tuple[np.ndarray, np.ndarray | None]] = {}


def reference(checkpoints, model: str, mode: str, seed: int, steps: int):
    """diffusers' own pipeline, loaded from the served directory: (F, H, W, 3) uint8 frames and the waveform."""
    key = (model, mode, seed, steps)
    if key not in _references:
        _references[key] = _run_diffusers(checkpoints[model], model, mode, seed, steps)
    return _references[key]


def _run_diffusers(directory, model: str, mode: str, seed: int, steps: int):
    import diffusers
    import torch

    from hsa_core.models import get_model_spec

    spec, served = get_model_spec(model), SERVED[model]
    pipeline = diffusers.DiffusionPipeline.from_pretrained(str(directory))
    images = {name: Image.open(io.BytesIO(data)).convert("RGB") for name, data in images_for(served, mode).items()}
    arguments = dict(prompt=PROMPT, height=served.height, width=served.width, num_frames=served.num_frames,
                     num_inference_steps=steps, guidance_scale=spec.guidance_scale, output_type="np",
                     generator=torch.Generator().manual_seed(seed))
    if spec.family == "ltx2":
        if images:
            pipeline = diffusers.LTX2ImageToVideoPipeline(**pipeline.components)
            arguments["image"] = images["input_reference"]
        # use_cross_timestep: diffusers defaults to LTX-2.3's modulation; the registered ltx-2 is LTX-2.0
        arguments.update(frame_rate=spec.fps, audio_guidance_scale=spec.audio_guidance_scale,
                         use_cross_timestep=spec.cross_modal_timestep)
    else:
        if spec.experts == 2:
            arguments["guidance_scale_2"] = spec.guidance_scale_2
        if images and not isinstance(pipeline, diffusers.WanImageToVideoPipeline):  # TI2V ships as WanPipeline
            pipeline = diffusers.WanImageToVideoPipeline(**pipeline.components,
                                                         boundary_ratio=pipeline.config.get("boundary_ratio"),
                                                         expand_timesteps=pipeline.config.get("expand_timesteps"))
        if images:
            arguments["image"] = images["input_reference"]
        if "last_frame" in images:
            arguments["last_image"] = images["last_frame"]
    pipeline.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        output = pipeline(**arguments)
    audio = getattr(output, "audio", None)
    return to_uint8(output.frames[0]), None if audio is None else np.asarray(audio)[0]


def assert_same_frames(served: np.ndarray, expected: np.ndarray, other_seed: np.ndarray) -> None:
    """Equal up to the frames' 8-bit rounding (the float results agree to ~1e-6), where another seed's
    video differs at many pixels: the comparison can tell a different generation apart."""
    assert served.shape == expected.shape
    off = np.abs(served.astype(int) - expected)
    assert off.max() <= 1 and (off > 0).mean() < 0.01, (off.max(), (off > 0).mean())
    assert (np.abs(served.astype(int) - other_seed) > 1).mean() > 0.05


@pytest.mark.parametrize("model", MODELS)
def test_a_full_budget_video_is_diffusers_own_pipeline_output(deployment, checkpoints, model, tmp_path):
    served, mode = SERVED[model], primary_mode(SERVED[model])
    video = create(deployment, model, mode, budget=1.0, steps=PARITY_STEPS, seed=3)
    assert video.status == "completed", (video, deployment.logs())
    extra = video.model_extra
    assert extra["achieved_compute_fraction"] == 1.0 and extra["image_to_video"] == (mode != "t2v")
    assert extra["last_frame"] == (mode == "flf") and (video.size, extra["num_frames"]) == (served.size,
                                                                                           served.num_frames)
    path = downloaded(deployment, model, video, tmp_path)
    frames, waveform = reference(checkpoints, model, mode, seed=3, steps=PARITY_STEPS)
    other, _ = reference(checkpoints, model, mode, seed=4, steps=PARITY_STEPS)
    assert_same_frames(read_mp4(path), frames, other)
    if served.audio:  # LTX-2's soundtrack, muxed as AAC, as long as the clip
        audio, rate, codec = read_mp4_audio(path)
        assert codec == "aac" and rate == 16000 and audio.shape[0] == 2
        assert abs(audio.shape[1] / rate - served.num_frames / extra["fps"]) < 0.1
        assert waveform is not None and np.abs(waveform).max() > 0


@pytest.mark.parametrize("model", [name for name, served in SERVED.items() if served.image == "optional"])
def test_image_to_video_of_a_text_and_image_model_is_diffusers_own(deployment, checkpoints, model, tmp_path):
    video = create(deployment, model, "i2v", budget=1.0, steps=PARITY_STEPS, seed=3)
    assert video.status == "completed" and video.model_extra["image_to_video"], (video, deployment.logs())
    frames, _ = reference(checkpoints, model, "i2v", seed=3, steps=PARITY_STEPS)
    other, _ = reference(checkpoints, model, "i2v", seed=4, steps=PARITY_STEPS)
    assert_same_frames(read_mp4(downloaded(deployment, model, video, tmp_path)), frames, other)


@pytest.mark.parametrize("model", MODELS)
def test_half_budget_runs_hsa_and_reports_its_compute(deployment, model, tmp_path):
    served = SERVED[model]
    mode = "t2v" if served.image != "required" else primary_mode(served)
    video = create(deployment, model, mode, budget=0.5, steps=HALF_BUDGET_STEPS, seed=5)
    assert video.status == "completed", (video, deployment.logs())
    extra = video.model_extra
    assert extra["budget"] == 0.5 and 0.35 < extra["achieved_compute_fraction"] < 0.6
    assert extra["token_fraction"] < 0.75 and extra["timings"]["generate"] > 0
    clip = read_mp4(downloaded(deployment, model, video, tmp_path))
    assert clip.shape == (served.num_frames, served.height, served.width, 3)


def test_model_cards_come_from_the_loaded_models(deployment):
    for model, served in SERVED.items():
        card = next(m for m in deployment.client(model).models.list().data if m.id == model).model_extra
        limits = card["limits"]
        assert (limits["sizes"], limits["num_frames"], limits["default_steps"]) == ([served.size],
                                                                                   [served.num_frames], 40)
        assert card["image_input"] == {"none": "unsupported"}.get(served.image, served.image)
        assert card["last_frame_input"] == ("required" if served.last_frame else "unsupported")
        assert card["audio"] == served.audio
        assert limits["fps"] == get_model_spec(model).fps
        assert limits["guidance_scale_2"] == (3.0 if model == "wan2.2-t2v-a14b" else None)
        assert card["runtime"]["device"] == "cpu" and card["seconds_per_step"] > 0


def test_requests_the_workers_do_not_serve_are_refused_naming_what_is(deployment):
    client = deployment.client("wan2.1-t2v-1.3b")

    def refused(error_class, **request):
        with pytest.raises(error_class) as caught:
            client.videos.create(prompt=PROMPT, **request)
        return caught.value

    wrong_size = refused(openai.UnprocessableEntityError, model="wan2.1-t2v-1.3b", size="832x480")
    assert wrong_size.param == "size" and "choose one of 64x64" in wrong_size.message
    wrong_frames = refused(openai.UnprocessableEntityError, model="wan2.1-t2v-1.3b", size="64x64",
                           extra_body={"num_frames": 81})
    assert wrong_frames.param == "num_frames" and "generates 9 frames" in wrong_frames.message
    unknown = refused(openai.NotFoundError, model="wan2.1-t2v-14b")
    assert unknown.code == "model_not_found" and "wan2.1-t2v-1.3b" in unknown.message
    if deployment.name == "celery":  # one gateway in front of every model
        assert all(model in unknown.message for model in MODELS)
        no_image = deployment.client("wan2.1-i2v-14b-480p")
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            no_image.videos.create(prompt=PROMPT, model="wan2.1-i2v-14b-480p", size="64x64")
        assert caught.value.code == "input_reference_required"
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            client.videos.create(prompt=PROMPT, model="wan2.2-t2v-a14b", size="64x64",
                                 extra_body={"guidance_scale": 4.0, "guidance_scale_2": 2.0, "num_frames": 8})
        assert caught.value.param == "num_frames"
    single_expert = refused(openai.UnprocessableEntityError, model="wan2.1-t2v-1.3b", size="64x64",
                            extra_body={"guidance_scale_2": 2.0})
    assert single_expert.param == "guidance_scale_2"
    data_url = "data:image/png;base64," + base64.b64encode(png(1, 64)).decode()
    response = httpx.post(deployment.urls["wan2.1-t2v-1.3b"] + "/v1/videos",
                          headers={"Authorization": f"Bearer {API_KEY}"},
                          json={"prompt": PROMPT, "model": "wan2.1-t2v-1.3b", "size": "64x64",
                                "last_frame": {"image_url": data_url}})
    assert response.status_code == 422 and response.json()["error"]["code"] == "last_frame_unsupported"
