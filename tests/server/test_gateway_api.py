"""The gateway over HTTP (in-process ASGI client): auth, validation, idempotency, the error shape.

No worker runs here — a registered model card stands in for a live worker's heartbeat — so every
job stays queued; the job lifecycle itself is covered by tests/integration with real processes.
"""

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from jobs.queues import EmbeddedJobQueue
from jobs.settings import ServiceSettings, hash_api_key
from jobs.storage import LocalObjectStore
from jobs.stores.sqlite_store import SqliteJobStore
from server.app import build_app

from .conftest import make_card

KEY = "sk-test-key"


class UnreachableStore(SqliteJobStore):
    async def create_async(self, *args, **kwargs):
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")


def png_bytes(color=(255, 0, 0), size=32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def parts(tmp_path):
    settings = ServiceSettings(api_key_sha256=hash_api_key(KEY), data_dir=tmp_path, default_model="tiny",
                               _env_file=None)
    store = SqliteJobStore(settings.database_path)
    store.register_model(make_card("tiny"), "w1", ttl_seconds=600)
    store.register_model(make_card("t2v-only", image_input="unsupported"), "w2", ttl_seconds=600)
    store.register_model(make_card("i2v-only", image_input="required"), "w3", ttl_seconds=600)
    return settings, store, LocalObjectStore(settings.storage_dir)


@pytest.fixture
def client(parts):
    settings, store, storage = parts
    app = build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=storage)
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


def create(client, **fields):
    return client.post("/v1/videos", json={"prompt": "a red circle moving left", **fields})


def assert_error(response, status, code, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_health_and_readiness_need_no_key(client):
    client.headers.pop("Authorization")
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"job_store": "ok", "broker": "ok", "storage": "ok", "workers": "ok"}
    assert ready.json()["models"] == {"i2v-only": 1, "t2v-only": 1, "tiny": 1}


def test_readiness_fails_when_storage_is_unreachable(parts):
    settings, store, storage = parts

    class BrokenStorage(LocalObjectStore):
        def ping(self):
            raise OSError("disk gone")

    app = build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=BrokenStorage(settings.storage_dir))
    with TestClient(app) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["storage"].startswith("error: OSError: disk gone")


def test_readiness_waits_for_a_worker(tmp_path):
    settings = ServiceSettings(data_dir=tmp_path, _env_file=None)
    store = SqliteJobStore(settings.database_path)
    app = build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=LocalObjectStore(settings.storage_dir))
    with TestClient(app) as client:
        starting = client.get("/readyz")
        assert starting.status_code == 503 and starting.json()["checks"]["workers"].startswith("error: no worker")
        store.register_model(make_card("tiny"), "w1", ttl_seconds=600)
        assert client.get("/readyz").status_code == 200


def test_readiness_answers_in_two_seconds_when_a_dependency_hangs(parts):
    import threading
    import time

    settings, store, storage = parts
    released, pings = threading.Event(), []

    class HangingStorage(LocalObjectStore):
        def ping(self):
            pings.append(1)
            released.wait(60)  # an endpoint that accepts connections and never answers

    app = build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=HangingStorage(settings.storage_dir))
    try:
        with TestClient(app) as client:
            for _ in range(3):
                started = time.monotonic()
                ready = client.get("/readyz")
                assert time.monotonic() - started < 3.0
                assert ready.status_code == 503 and ready.json()["checks"]["storage"] == "error: no answer within 2 s"
            assert ready.json()["checks"]["job_store"] == "ok"
            assert len(pings) == 1  # later probes wait on the same ping: no thread piles up per probe
            released.set()
            assert client.get("/readyz").status_code == 200
    finally:
        released.set()


def test_a_create_while_the_default_model_starts_is_queued_against_its_last_card(parts):
    settings, store, storage = parts
    app = build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=storage)
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as client:
        import time

        store.register_model(make_card("tiny"), "w1", ttl_seconds=0.01)  # its worker stopped; a new one starts
        time.sleep(0.05)
        assert "tiny" not in {card.id for card in store.models()}
        queued = create(client, size="32x32")
        assert queued.status_code == 200 and queued.json()["status"] == "queued"
        assert_error(create(client, size="64x64"), 422, "invalid_size", "size")  # validated all the same


def test_a_create_for_a_default_model_never_seen_is_a_retryable_503(tmp_path):
    settings = ServiceSettings(data_dir=tmp_path, default_model="wan2.1-t2v-1.3b", _env_file=None)
    app = build_app(settings, store=SqliteJobStore(settings.database_path), queue=EmbeddedJobQueue(),
                    storage=LocalObjectStore(settings.storage_dir))
    with TestClient(app) as client:
        response = create(client)
        assert_error(response, 503, "model_starting", "model")
        assert response.headers["retry-after"] == "5"
        assert_error(create(client, model="ltx-2"), 404, "model_not_found", "model")


@pytest.mark.parametrize("header, code", [(None, "missing_api_key"), ("Bearer wrong", "invalid_api_key"),
                                          ("Basic abc", "missing_api_key")])
def test_api_key_required(client, header, code):
    client.headers.pop("Authorization")
    headers = {"Authorization": header} if header else {}
    for method, path in (("get", "/v1/videos"), ("get", "/v1/models"), ("get", "/v1/videos/video_x")):
        response = getattr(client, method)(path, headers=headers)
        assert_error(response, 401, code)
        assert response.json()["error"]["type"] == "authentication_error"
    assert_error(client.post("/v1/videos", json={"prompt": "x"}, headers=headers), 401, code)


def test_models_lists_live_workers_with_limits(client):
    data = client.get("/v1/models").json()["data"]
    tiny = next(model for model in data if model["id"] == "tiny")
    assert tiny["limits"]["sizes"] == ["32x32", "128x128"] and tiny["limits"]["seconds"] == ["2"]
    assert "min_budget_t2v" not in tiny["limits"]


def test_create_json_fills_defaults_from_the_model(client):
    response = create(client, budget=0.5, seed=7)
    assert response.status_code == 200, response.text
    video = response.json()
    assert video["object"] == "video" and video["status"] == "queued" and video["progress"] == 0
    assert (video["model"], video["size"], video["seconds"], video["num_frames"]) == ("tiny", "128x128", "2", 16)
    assert (video["steps"], video["budget"], video["seed"], video["guidance_scale"]) == (40, 0.5, 7, 4.0)
    assert response.headers["openai-poll-after-ms"] == "500"
    assert client.get(f"/v1/videos/{video['id']}").json()["id"] == video["id"]


def test_create_multipart_converts_form_fields(client):
    response = client.post("/v1/videos", data={"prompt": "a red circle", "budget": "0.5", "steps": "12",
                                               "seconds": "2", "size": "32x32"})
    assert response.status_code == 200, response.text
    video = response.json()
    assert (video["budget"], video["steps"], video["size"], video["image_to_video"]) == (0.5, 12, "32x32", False)


def test_image_to_video_stores_the_first_frame_as_png(client, parts):
    _, store, storage = parts
    response = client.post("/v1/videos", data={"prompt": "a red circle"},
                           files={"input_reference": ("frame.jpg", png_bytes((0, 0, 255), 64), "image/png")})
    assert response.status_code == 200, response.text
    record = store.get(response.json()["id"])
    assert response.json()["image_to_video"] and record.spec.input_key == f"videos/{record.id}/input.png"
    image = Image.open(io.BytesIO(storage.get_bytes(record.spec.input_key)))
    assert image.size == (64, 64) and image.getpixel((3, 3)) == (0, 0, 255)


def test_image_as_json_data_url(client):
    url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    response = create(client, input_reference={"image_url": url})
    assert response.status_code == 200 and response.json()["image_to_video"]
    assert_error(create(client, input_reference={"image_url": "https://example.com/a.png"}), 422,
                 "invalid_input_reference", "input_reference")


def test_unknown_model_is_404_listing_the_models(client):
    error = assert_error(create(client, model="wan-14b"), 404, "model_not_found", "model")
    assert error["models"] == ["i2v-only", "t2v-only", "tiny"]
    assert "tiny" in error["message"]


@pytest.mark.parametrize("fields, code, param", [
    ({"size": "100x100"}, "invalid_size", "size"),
    ({"seconds": "4"}, "invalid_seconds", "seconds"),
    ({"num_frames": 17}, "invalid_num_frames", "num_frames"),
    ({"seconds": "2", "num_frames": 8}, "invalid_num_frames", "num_frames"),
    ({"steps": 101}, "invalid_value", "steps"),
    ({"steps": 0}, "invalid_value", "steps"),
    ({"budget": 0}, "invalid_value", "budget"),
    ({"budget": 1.5}, "invalid_value", "budget"),
    ({"budget": 0.2}, "budget_infeasible", "budget"),
    ({"guidance_scale": -1}, "invalid_value", "guidance_scale"),
    ({"seed": -3}, "invalid_value", "seed"),
    ({"webhook_url": "ftp://x"}, "invalid_value", "webhook_url"),
    ({"prompt": "   "}, "invalid_value", "prompt"),
    ({"prompt": "x" * 2001}, "prompt_too_long", "prompt"),
    ({"frobnicate": 1}, "invalid_value", "frobnicate"),
    ({"budget": "half"}, "invalid_value", "budget"),
    ({"seed": False}, "invalid_value", "seed"),  # JSON is held to the schema's types: false is no seed
    ({"best_effort": 0}, "invalid_value", "best_effort"),
    ({"steps": 40.5}, "invalid_value", "steps"),
])
def test_invalid_requests_are_422_naming_the_field(client, fields, code, param):
    error = assert_error(create(client, **fields), 422, code, param)
    assert param in error["message"]


def test_infeasible_budget_says_the_minimum(client):
    error = assert_error(create(client, budget=0.2, steps=8), 422, "budget_infeasible", "budget")
    assert error["min_budget"] == 0.3


def test_image_rules_per_model(client):
    files = {"input_reference": ("f.png", png_bytes(), "image/png")}
    assert_error(client.post("/v1/videos", data={"prompt": "x", "model": "t2v-only"}, files=files), 422,
                 "input_reference_unsupported", "input_reference")
    assert_error(create(client, model="i2v-only"), 422, "input_reference_required", "input_reference")
    bad = {"input_reference": ("f.png", b"not an image", "image/png")}
    assert_error(client.post("/v1/videos", data={"prompt": "x"}, files=bad), 422, "invalid_input_reference",
                 "input_reference")


def test_malformed_json_is_400(client):
    response = client.post("/v1/videos", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_json")
    assert_error(client.post("/v1/videos", json=[1, 2]), 400, "invalid_json")


def test_idempotency_key(client):
    headers = {"Idempotency-Key": "abc"}
    first = client.post("/v1/videos", json={"prompt": "a red circle", "seed": 1}, headers=headers)
    again = client.post("/v1/videos", json={"prompt": "a red circle", "seed": 1}, headers=headers)
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    error = assert_error(client.post("/v1/videos", json={"prompt": "a red circle", "seed": 2}, headers=headers),
                         409, "idempotency_key_reused")
    assert error["video_id"] == first.json()["id"]
    other = client.post("/v1/videos", json={"prompt": "a red circle", "seed": 1}, headers={"Idempotency-Key": "xyz"})
    assert other.json()["id"] != first.json()["id"]


def test_store_down_at_create_is_503_and_leaves_no_uploaded_image(parts):
    settings, store, storage = parts
    unreachable = UnreachableStore(settings.database_path)
    unreachable.register_model(make_card("tiny"), "w1", ttl_seconds=600)
    app = build_app(settings, store=unreachable, queue=EmbeddedJobQueue(), storage=storage)
    # the gateway still re-raises it for the server's log; the client sees the error shape
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}, raise_server_exceptions=False) as client:
        response = client.post("/v1/videos", data={"prompt": "a red circle moving left"},
                               files={"input_reference": ("first.png", png_bytes(), "image/png")})
        assert_error(response, 503, "service_unavailable")
        assert response.headers["retry-after"] == "1"
        assert client.get("/v1/videos").json()["data"] == []
    assert not list(settings.storage_dir.rglob("*.png"))  # the image went up before the store failed: removed


def test_list_paginates_newest_first(client):
    ids = [create(client, seed=i).json()["id"] for i in range(5)]
    page = client.get("/v1/videos", params={"limit": 2}).json()
    assert [v["id"] for v in page["data"]] == ids[::-1][:2] and page["has_more"]
    assert page["object"] == "list" and page["last_id"] == ids[3]
    page = client.get("/v1/videos", params={"limit": 2, "after": page["last_id"]}).json()
    assert [v["id"] for v in page["data"]] == ids[::-1][2:4]
    page = client.get("/v1/videos", params={"limit": 10, "order": "asc"}).json()
    assert [v["id"] for v in page["data"]] == ids and not page["has_more"]
    assert_error(client.get("/v1/videos", params={"limit": 0}), 422, "invalid_value", "limit")


def test_unknown_video_is_404(client):
    for method, path in (("get", "/v1/videos/video_nope"), ("delete", "/v1/videos/video_nope"),
                         ("get", "/v1/videos/video_nope/content")):
        assert_error(getattr(client, method)(path), 404, "video_not_found")


def test_content_of_an_unfinished_video_is_409(client):
    video = create(client).json()
    error = assert_error(client.get(f"/v1/videos/{video['id']}/content"), 409, "video_not_ready")
    assert error["status"] == "queued"
    assert_error(client.get(f"/v1/videos/{video['id']}/content", params={"variant": "thumbnail"}), 422,
                 "unsupported_variant", "variant")


def test_delete_cancels_an_active_job_then_deletes_it(client, parts):
    _, _, storage = parts
    files = {"input_reference": ("f.png", png_bytes(), "image/png")}
    video = client.post("/v1/videos", data={"prompt": "x"}, files=files).json()
    cancelled = client.delete(f"/v1/videos/{video['id']}").json()
    assert cancelled == {"id": video["id"], "object": "video.deleted", "deleted": False, "status": "cancelled"}
    assert client.get(f"/v1/videos/{video['id']}").json()["status"] == "cancelled"
    deleted = client.delete(f"/v1/videos/{video['id']}").json()
    assert deleted == {"id": video["id"], "object": "video.deleted", "deleted": True}
    assert_error(client.get(f"/v1/videos/{video['id']}"), 404, "video_not_found")
    assert storage.local_path(f"videos/{video['id']}/input.png") is None


def test_metrics_are_open_and_count_requests_by_route_template(client, parts):
    from prometheus_client.parser import text_string_to_metric_families

    def scrape():
        response = client.get("/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(response.text) for s in family.samples}

    first, second = create(client).json(), create(client).json()
    client.get("/v1/videos/video_nope")
    client.headers.pop("Authorization")
    samples = scrape()
    assert samples[("hsa_queue_depth", (("model", "tiny"),))] == 2
    assert samples[("hsa_jobs_in_progress", (("model", "tiny"),))] == 0
    parts[1].start(first["id"])
    parts[1].cancel(second["id"])
    moved = scrape()
    assert moved[("hsa_queue_depth", (("model", "tiny"),))] == 0
    assert moved[("hsa_jobs_in_progress", (("model", "tiny"),))] == 1
    assert samples[("hsa_live_workers", (("model", "tiny"),))] == 1
    not_found = ("hsa_http_requests_total", (("method", "GET"), ("route", "/v1/videos/{video_id}"), ("status", "404")))
    assert samples[not_found] >= 1  # the template, not /v1/videos/video_nope
    assert not any("video_nope" in str(labels) for _, labels in samples)


def test_the_start_up_heap_is_frozen_while_serving_and_released_after(parts):
    import gc

    settings, store, storage = parts
    app = build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=storage)
    assert gc.get_freeze_count() == 0
    with TestClient(app):
        assert gc.get_freeze_count() > 10_000  # full collections skip the modules and app built at start-up
    assert gc.get_freeze_count() == 0  # a stopped app (tests build hundreds) stays collectable


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/metrics",  # the gateway's own metrics
    "http://localhost:6379/",  # Redis beside it
    "http://[::1]:9000/minio",
    "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
    "http://10.0.0.5/hook",
    "http://0x7f000001/hook",  # 127.0.0.1 spelled as a number
])
def test_a_webhook_to_a_non_public_address_is_refused_at_submission(client, url):
    error = assert_error(create(client, webhook_url=url), 422, "invalid_webhook_url", "webhook_url")
    assert "HSA_WEBHOOK_ALLOWED_NETWORKS" in error["message"] and "127.0.0.1" not in error["message"]


def test_a_webhook_host_that_does_not_resolve_is_refused(client):
    error = assert_error(create(client, webhook_url="http://hooks.invalid/x"), 422, "invalid_webhook_url")
    assert "does not resolve" in error["message"]


def test_an_allowed_network_accepts_its_webhooks(parts):
    settings, store, storage = parts
    settings = settings.model_copy(update={"webhook_allowed_networks": "127.0.0.0/8"})
    app = build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=storage)
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as client:
        response = create(client, webhook_url="http://127.0.0.1:9/hook", size="32x32")
        assert response.status_code == 200, response.text
        assert_error(create(client, webhook_url="http://10.0.0.5/hook"), 422, "invalid_webhook_url")


def test_a_dry_run_plans_without_creating_a_job(client):
    before = client.get("/v1/videos").json()["data"]
    explicit = client.post("/v1/videos/plan", json={"prompt": "a red circle", "size": "32x32", "budget": 0.5})
    assert explicit.status_code == 200, explicit.text
    plan = explicit.json()
    assert plan["object"] == "video.plan" and plan["budget"] == 0.5 and plan["budget_source"] == "explicit"
    assert (plan["model"], plan["size"], plan["num_frames"], plan["steps"]) == ("tiny", "32x32", 16, 40)
    assert plan["min_budget"] == 0.3 and plan["workers"] == 1
    assert client.get("/v1/videos").json()["data"] == before  # nothing created
    assert_error(client.post("/v1/videos/plan", json={"prompt": "x", "size": "1x1"}), 422, "invalid_size", "size")
    assert_error(client.post("/v1/videos/plan", json={"prompt": "x", "model": "nope"}), 404, "model_not_found")
    assert_error(client.post("/v1/videos/plan", json={"prompt": "x", "frobnicate": 1}), 422, "invalid_value",
                 "frobnicate")
    # image-to-video planned as such: the t2v-only model refuses it, as its create would
    assert_error(client.post("/v1/videos/plan", json={"prompt": "x", "model": "t2v-only", "image_to_video": True}),
                 422, "input_reference_unsupported")


def test_a_dry_run_of_a_deadline_predicts_start_and_completion(tmp_path):
    from hsa_video.harness.cards import STAND_IN_TIMING

    settings = ServiceSettings(data_dir=tmp_path, _env_file=None)
    store = SqliteJobStore(settings.database_path)
    store.register_model(make_card("tiny", timing=STAND_IN_TIMING), "w1", ttl_seconds=600)
    app = build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=LocalObjectStore(settings.storage_dir))
    with TestClient(app) as client:
        relaxed = client.post("/v1/videos/plan", json={"prompt": "x", "size": "32x32", "deadline_s": 600}).json()
        tight = client.post("/v1/videos/plan", json={"prompt": "x", "size": "32x32", "deadline_s": 1.2}).json()
        assert relaxed["budget"] == 1.0 and relaxed["budget_source"] == "sla"
        assert tight["min_budget"] <= tight["budget"] < 1.0  # the planner spends less to meet the deadline
        for plan in (relaxed, tight):
            assert plan["predicted_start_at"] <= plan["predicted_completion_at"] <= plan["deadline_at"] + 1
        hopeless = client.post("/v1/videos/plan", json={"prompt": "x", "size": "32x32", "deadline_s": 0.01})
        assert_error(hopeless, 429, "deadline_unreachable", "deadline_s")
        assert client.get("/v1/videos").json()["data"] == []


def test_the_playground_page_has_a_strict_policy_and_can_be_turned_off(parts):
    from server.app import playground_csp

    settings, store, storage = parts
    app = build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=storage)
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and '<label for="prompt">Prompt</label>' in page.text
        assert page.headers["content-security-policy"] == playground_csp(settings)
        assert page.headers["x-content-type-options"] == "nosniff"
        assert client.get("/static/playground.js").headers["content-type"].startswith("text/javascript")
    # presigned downloads go to the object store: the page may fetch from there, and nowhere else
    s3 = settings.model_copy(update={"storage": "s3", "s3_endpoint_url": "http://minio:9000",
                                     "s3_public_endpoint_url": "https://videos.example.com/s3"})
    assert "connect-src 'self' https://videos.example.com;" in playground_csp(s3)
    off = settings.model_copy(update={"playground": False})
    with TestClient(build_app(off, store=store, queue=EmbeddedJobQueue(), storage=storage)) as client:
        assert client.get("/").status_code == 404 and client.get("/static/playground.js").status_code == 404
