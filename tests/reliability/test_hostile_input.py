"""Hostile and malformed requests against a real gateway (uvicorn, Redis store, Celery queue, S3):
always a 4xx with a documented error code, never a 5xx, never a crashed worker.

The gateway serves a stand-in card for the tiny model (no worker computes the fuzzer's jobs); one
test runs a real worker to show that bad input that reaches a worker fails its job, not the worker.
"""

import http.client
import io
import json
import zlib

import httpx
import pytest
from PIL import Image

from hsa_video.harness.fuzz import documented_error_codes, fuzz_gateway
from hsa_video.harness.stack import API_KEY, started_stack
from jobs.queues import publish_job
from jobs.records import JobRecord, JobSpec, new_job_id

from .checks import assert_consistent_completion

FUZZ_EXAMPLES_PER_OPERATION = 150  # × (valid + invalid) × operations with inputs: > 1000 cases


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_endpoint):
    with started_stack(tmp_path_factory.mktemp("hostile"), s3_endpoint, stand_in=True,
                       max_active_jobs_per_key="0") as stack:
        yield stack


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert code in documented_error_codes()
    return error


def test_schema_fuzzing_finds_no_server_error(stack):
    result = fuzz_gateway(stack.base_url, API_KEY, FUZZ_EXAMPLES_PER_OPERATION)
    assert result.cases >= 1000
    assert result.server_errors == [], result.server_errors[:5]
    assert result.unstable_errors == [], result.unstable_errors[:5]
    assert result.nonconforming == [], result.nonconforming[:5]  # every status declared, every body on its schema


# images ------------------------------------------------------------------------------------------


def image_bytes(size=(32, 32), format="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format=format)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG of width × height black pixels in a few hundred kilobytes (zlib of zeros)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])  # 8-bit grey
    rows = zlib.compress(b"\x00" * ((width + 1) * height), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def submit_image(stack, data: bytes, filename="frame.png", content_type="image/png") -> httpx.Response:
    return stack.http.post("/v1/videos", data={"prompt": "a red circle", "size": "32x32"},
                           files={"input_reference": (filename, data, content_type)})


@pytest.mark.parametrize("name, data, status, code", [
    ("decompression bomb", png_bomb(30000, 30000), 422, "input_reference_too_many_pixels"),
    ("truncated png", image_bytes((64, 64))[:-40], 422, "invalid_input_reference"),
    ("truncated jpeg", image_bytes((64, 64), "JPEG")[:200], 422, "invalid_input_reference"),
    ("tiff (not accepted)", image_bytes(format="TIFF"), 422, "invalid_input_reference"),
    ("pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", 422, "invalid_input_reference"),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', 422,
     "invalid_input_reference"),
    ("empty file", b"", 422, "invalid_input_reference"),
    ("21 MiB", b"\x89PNG" + bytes(21 * 1024 * 1024), 413, "input_reference_too_large"),
])
def test_bad_images_are_refused(stack, name, data, status, code):
    assert_error(submit_image(stack, data), status, code)


def test_good_images_of_every_accepted_format_are_taken(stack):
    for format in ("PNG", "JPEG", "WEBP", "GIF", "BMP"):
        response = submit_image(stack, image_bytes((48, 48), format), f"frame.{format.lower()}")
        assert response.status_code == 200 and response.json()["image_to_video"], (format, response.text)


def test_bodies_over_the_request_limit_are_413_without_being_read(stack):
    # the headers alone: the answer comes before any of the 30 MiB is sent
    connection = http.client.HTTPConnection("127.0.0.1", stack.gateway_port, timeout=10)
    connection.putrequest("POST", "/v1/videos")
    for name, value in (("Authorization", f"Bearer {API_KEY}"), ("Content-Type", "application/json"),
                        ("Content-Length", str(30 * 1024 * 1024))):
        connection.putheader(name, value)
    connection.endheaders()
    declared = connection.getresponse()
    assert declared.status == 413 and json.loads(declared.read())["error"]["code"] == "request_too_large"
    connection.close()

    def chunks():  # no Content-Length: the gateway counts while it reads
        for _ in range(30):
            yield bytes(1024 * 1024)

    streamed = stack.http.post("/v1/videos", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(streamed, 413, "request_too_large")


# prompts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["a red circle\x00", "a red \x1b[31mcircle", "bell\x07", "del\x7f", "next\x85line"])
def test_control_characters_in_prompts_are_refused(stack, prompt):
    error = assert_error(stack.http.post("/v1/videos", json={"prompt": prompt}), 422, "invalid_prompt")
    assert error["param"] == "prompt"
    negative = stack.http.post("/v1/videos", json={"prompt": "a red circle", "negative_prompt": prompt})
    assert assert_error(negative, 422, "invalid_prompt")["param"] == "negative_prompt"


def test_unicode_prompts_are_kept_exactly(stack):
    prompt = "un cercle rouge 🔴 赤い円 دائرة حمراء e\u0301\u200d\tmoving\nleft"
    created = stack.http.post("/v1/videos", json={"prompt": prompt, "size": "32x32"})
    assert created.status_code == 200, created.text
    assert stack.http.get(f"/v1/videos/{created.json()['id']}").json()["prompt"] == prompt


def test_prompt_limits(stack):
    assert_error(stack.http.post("/v1/videos", json={"prompt": "x" * 2001}), 422, "prompt_too_long")
    assert_error(stack.http.post("/v1/videos", json={"prompt": "   "}), 422, "invalid_value")
    lone_surrogate = b'{"prompt": "a red circle \\ud800"}'
    assert_error(stack.http.post("/v1/videos", content=lone_surrogate, headers={"Content-Type": "application/json"}),
                 400, "invalid_json")
    deeply_nested = b'{"prompt": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    assert_error(stack.http.post("/v1/videos", content=deeply_nested, headers={"Content-Type": "application/json"}),
                 400, "invalid_json")
    assert_error(stack.http.post("/v1/videos", json={"prompt": "x"}, headers={"Idempotency-Key": "k" * 256}),
                 400, "invalid_idempotency_key")


# paths -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("video_id", ["..%2F..%2Fetc%2Fpasswd", "video_..%2F..%2Fx", "%2e%2e", "video_%00",
                                      "video_" + "a" * 100, "VIDEO_ABCDEF12", "video_zzzzzzzz"])
def test_ids_that_are_no_video_id_name_no_video(stack, video_id):
    for method, path in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        response = stack.http.request(method, f"/v1/videos/{video_id}{path}")
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] in ("video_not_found", "not_found")
    listing = stack.http.get("/v1/videos", params={"after": "../../x"})
    assert listing.status_code == 200 and listing.json()["data"] == []


# the worker side ---------------------------------------------------------------------------------


def test_bad_input_reaching_a_worker_fails_the_job_not_the_worker(stack):
    """Defence in depth: input files are only ever the gateway's own PNGs, but one planted in storage
    (here: a decompression bomb and garbage) fails its job and leaves the worker serving."""
    for queued in stack.store.queued_jobs("tiny"):  # the fuzzer's jobs: nobody waits for them
        stack.store.cancel(queued.id)
    stack.start_worker()
    stack.wait_for_workers(2)  # the stand-in card counts as one
    failed = []
    for name, data in (("bomb", png_bomb(30000, 30000)), ("garbage", b"\x89PNG not really")):
        job_id = new_job_id()
        spec = JobSpec(job_id=job_id, model="tiny", prompt="a red circle", input_key=f"videos/{job_id}/input.png",
                       width=32, height=32, num_frames=16, fps=8, steps=10, budget=1.0, seed=0)
        stack.put_object(spec.input_key, data)
        record = JobRecord(spec=spec)
        stack.store.create(record)
        publish_job(stack.celery, record)
        failed.append(stack.wait_terminal(spec.job_id))
    assert [record.status.value for record in failed] == ["failed", "failed"], failed
    assert all(record.error.code in ("invalid_request", "internal_error") for record in failed)
    assert stack.workers[0].alive()
    follow_up = stack.wait_terminal(stack.submit())
    assert_consistent_completion(stack, follow_up, attempts=1)
    assert json.loads(json.dumps(stack.record(follow_up.id).timings))  # a normal record
