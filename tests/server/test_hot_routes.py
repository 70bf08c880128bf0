"""``HotRoutes`` (creates and status polls dispatched straight to their route functions) answers
exactly as FastAPI's own routing does: the same status, body and headers, request for request,
errors included. The reference is the same app built with ``hot_routes=False``."""

import base64
import io
import re
import uuid

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.app import build_app
from server.queues import EmbeddedJobQueue
from server.limits import RedisRateLimiter
from server.settings import ServiceSettings, hash_api_key
from server.sla import TimingModel
from server.storage import LocalObjectStore
from server.stores.redis_store import RedisJobStore
from server.stores.sqlite_store import SqliteJobStore

from .conftest import make_card

KEYS = ("sk-alice", "sk-bob")
# differ from request to request (a new job, the clock); everything else must match
VOLATILE = {"id", "created_at", "expires_at", "deadline_at", "predicted_completion_at", "video_id"}
COMPARED_HEADERS = ("content-type", "retry-after", "www-authenticate", "openai-poll-after-ms",
                    "idempotent-replayed", "location")


class UnreachableOnRead(SqliteJobStore):
    async def get_async(self, job_id):
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")


def png_bytes(color=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


def clients(tmp_path, store_class=SqliteJobStore, redis_url=None, card=None, **settings):
    """A hot-routes client and a reference client on the same store, storage and settings; with
    ``redis_url``, a Redis store and Redis rate limiters (one bucket namespace per client), where a
    hot poll takes its token inside the store's read script, and a hot create in the planner's queue
    read (when ``card`` has a timing model)."""
    settings = ServiceSettings(api_key_sha256=",".join(hash_api_key(key) for key in KEYS), data_dir=tmp_path,
                               _env_file=None, **settings)
    namespace = f"test-{uuid.uuid4().hex[:8]}:"
    shared = None if redis_url else store_class(settings.database_path)
    # Redis: one store object per app on the same keys (each TestClient runs its app on its own event
    # loop, and an asyncio Redis client belongs to one)
    stores = [RedisJobStore(redis_url, prefix=namespace) if redis_url else shared for _ in range(2)]
    stores[0].register_model(card or make_card("tiny"), "w1", ttl_seconds=600)
    storage = LocalObjectStore(settings.storage_dir)

    def limiter(hot: bool):
        if redis_url is None:
            return None  # the app's own, from settings (in memory)
        return RedisRateLimiter(redis_url, settings.rate_limit_per_second, settings.rate_limit_burst,
                                prefix=f"{namespace}rate-{hot}:")

    return tuple(TestClient(build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=storage,
                                      limiter=limiter(hot), hot_routes=hot), raise_server_exceptions=False)
                 for store, hot in zip(stores, (True, False)))


@pytest.fixture(params=["sqlite", "redis"])
def backend(request) -> dict:
    """The one-process mode's stores (SQLite, in-memory limits), or Redis for both."""
    return {} if request.param == "sqlite" else {"redis_url": request.getfixturevalue("redis_url")}


def comparable(response) -> tuple:
    try:
        body = response.json()
    except ValueError:
        body = response.content
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        for name in VOLATILE & inner.keys():
            inner[name] = "<volatile>"
        if isinstance(inner.get("message"), str) and "video_" in inner["message"]:
            inner["message"] = inner["message"].split("video_")[0]  # names the job id
        if isinstance(inner.get("message"), str):  # a rate limit's wait, to the hundredth of a second
            inner["message"] = re.sub(r"retry in [0-9.]+ s", "retry in <volatile> s", inner["message"])
    headers = {name: response.headers.get(name) for name in COMPARED_HEADERS}
    return response.status_code, body, headers


def auth(key: str = KEYS[0]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_hot_routes_answer_as_fastapi_routing_does(tmp_path, backend):
    hot, reference = clients(tmp_path, **backend)
    with hot, reference:
        # on Redis a hot poll's token comes from the store's read script (FastAPI's route takes it apart)
        assert hot.app.state.fused_rate_limits == bool(backend)
        alice_job = hot.post("/v1/videos", json={"prompt": "a red circle"}, headers=auth()).json()["id"]
        image = {"input_reference": ("frame.png", png_bytes(), "image/png")}
        requests = [
            ("POST", "/v1/videos", {"json": {"prompt": "a red circle moving left", "seed": 3}, "headers": auth()}),
            ("POST", "/v1/videos", {"json": {"prompt": "a red circle"}}),  # no key
            ("POST", "/v1/videos", {"json": {"prompt": "a red circle"}, "headers": auth("sk-mallory")}),
            ("POST", "/v1/videos", {"json": {"prompt": "a red circle"}, "headers": {"Authorization": "Basic x"}}),
            ("POST", "/v1/videos", {"content": b"{not json", "headers": {**auth(), "Content-Type": "application/json"}}),
            ("POST", "/v1/videos", {"json": ["a list"], "headers": auth()}),
            ("POST", "/v1/videos", {"json": {"prompt": "a red circle", "size": "13x7"}, "headers": auth()}),
            ("POST", "/v1/videos", {"json": {"prompt": ""}, "headers": auth()}),
            ("POST", "/v1/videos", {"json": {"prompt": "a red circle", "model": "sora-2"}, "headers": auth()}),
            ("POST", "/v1/videos", {"data": {"prompt": "a red circle", "seed": "5"}, "files": image, "headers": auth()}),
            ("POST", "/v1/videos", {"data": {"prompt": "a red circle"},
                                    "files": {"input_reference": ("f.png", b"not an image", "image/png")},
                                    "headers": auth()}),
            ("POST", "/v1/videos", {"content": b"--x\r\nbroken", "headers": {
                **auth(), "Content-Type": "multipart/form-data; boundary=x"}}),
            ("POST", "/v1/videos", {"json": {"prompt": "a red circle", "seed": 7, "input_reference": {
                "image_url": "data:image/png;base64," + base64.b64encode(png_bytes((0, 0, 255))).decode()}},
                "headers": auth()}),
            ("POST", "/v1/videos", {"json": {"prompt": "x" * 10}, "headers": {**auth(), "Idempotency-Key": ""}}),
            ("POST", "/v1/videos", {"content": b"x" * (2 << 20), "headers": {**auth(), "Content-Type": "application/json"}}),
            ("GET", f"/v1/videos/{alice_job}", {"headers": auth()}),
            ("GET", f"/v1/videos/{alice_job}", {"headers": auth(KEYS[1])}),  # another key's job
            ("GET", f"/v1/videos/{alice_job}", {}),
            ("GET", "/v1/videos/video_00000000000000000000000000000000", {"headers": auth()}),
            ("GET", "/v1/videos/not-a-video-id", {"headers": auth()}),
            ("GET", "/v1/videos/%2e%2e", {"headers": auth()}),
            ("GET", f"/v1/videos/{alice_job}/content", {"headers": auth()}),  # not a hot route
            ("GET", "/v1/videos/", {"headers": auth()}),
            ("PUT", f"/v1/videos/{alice_job}", {"headers": auth()}),
            ("POST", f"/v1/videos/{alice_job}", {"headers": auth()}),
        ]
        for method, path, options in requests:
            answers = [comparable(client.request(method, path, **options)) for client in (hot, reference)]
            assert answers[0] == answers[1], (method, path)
        assert answers[0][0] == 405  # the cases reached the end: the last one is refused the same way


def test_idempotent_replays_match(tmp_path):
    hot, reference = clients(tmp_path)
    with hot, reference:
        for client, key in ((hot, "hot"), (reference, "reference")):
            headers = {**auth(), "Idempotency-Key": f"order-{key}"}
            first = client.post("/v1/videos", json={"prompt": "a red circle"}, headers=headers)
            again = client.post("/v1/videos", json={"prompt": "a red circle"}, headers=headers)
            conflict = client.post("/v1/videos", json={"prompt": "a blue square"}, headers=headers)
            assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
            assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_key_reused"


def test_rate_limits_and_the_job_cap_match(tmp_path, backend):
    hot, reference = clients(tmp_path, rate_limit_per_second=0.1, rate_limit_burst=3, max_active_jobs_per_key=1,
                             **backend)
    with hot, reference:
        for client, key in ((hot, KEYS[0]), (reference, KEYS[1])):
            answers = [client.post("/v1/videos", json={"prompt": "a red circle"}, headers=auth(key)) for _ in range(2)]
            job_id = answers[0].json()["id"]
            answers += [client.get(f"/v1/videos/{job_id}", headers=auth(key)) for _ in range(2)]
            answers.append(client.get("/v1/videos/not-a-video-id", headers=auth(key)))  # limited before refused
            assert [answer.status_code for answer in answers] == [200, 429, 200, 429, 429]
            assert answers[1].json()["error"]["code"] == "too_many_active_jobs"
            assert answers[3].json()["error"]["code"] == "rate_limit_exceeded"
            assert answers[1].headers["Retry-After"] and answers[3].headers["Retry-After"] in ("9", "10")


def test_a_limited_key_hears_429_before_any_other_refusal(tmp_path, backend):
    """Every create draws a token, refused or not, and an empty bucket answers 429 whatever else is
    wrong — also when the hot create takes its token late, in the SLA planner's queue read (Redis)."""
    card = make_card("tiny", timing=TimingModel(step_seconds_fixed=0.01, step_seconds_per_budget=0.04,
                                                job_seconds_fixed=0.3))
    hot, reference = clients(tmp_path, card=card, rate_limit_per_second=0.1, rate_limit_burst=5, **backend)
    image = {"input_reference": ("frame.png", png_bytes(), "image/png")}
    not_an_image = {"input_reference": ("f.png", b"not an image", "image/png")}
    requests = [
        {"json": {"prompt": "a red circle", "size": "32x32", "steps": 8, "seed": 1}},
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"json": {"prompt": "a red circle", "model": "sora-2"}},
        {"data": {"prompt": "a red circle"}, "files": not_an_image},
        {"data": {"prompt": "a red circle", "size": "32x32", "steps": 8, "seed": "2"}, "files": image},
    ]
    with hot, reference:
        for client, key in ((hot, KEYS[0]), (reference, KEYS[1])):
            answers = []
            for options in requests * 2:  # the second time round the bucket is empty
                options = {**options, "headers": {**options.get("headers", {}), **auth(key)}}
                answers.append(client.post("/v1/videos", **options))
            assert [answer.status_code for answer in answers] == [200, 400, 404, 422, 200] + [429] * 5
            assert {answer.json()["error"]["code"] for answer in answers[5:]} == {"rate_limit_exceeded"}
            assert all(answer.headers["Retry-After"] in ("9", "10") for answer in answers[5:])
            client.answers = [comparable(answer) for answer in answers]
        assert hot.answers == reference.answers
        assert hot.answers[0][1]["budget_source"] == "sla"  # planned: the queue view was read


@pytest.mark.parametrize("hot", [True, False])
def test_an_unreachable_store_is_503_on_either_path(tmp_path, hot):
    clients_ = clients(tmp_path, store_class=UnreachableOnRead)
    with clients_[0 if hot else 1] as client:
        response = client.get("/v1/videos/video_00000000000000000000000000000000", headers=auth())
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "service_unavailable"


def test_hot_requests_are_counted_under_their_route_template(tmp_path):
    hot, _ = clients(tmp_path)
    with hot:
        job_id = hot.post("/v1/videos", json={"prompt": "a red circle"}, headers=auth()).json()["id"]
        hot.get(f"/v1/videos/{job_id}", headers=auth())
        metrics = hot.get("/metrics").text
    assert 'route="/v1/videos",status="200"' in metrics
    assert 'route="/v1/videos/{video_id}",status="200"' in metrics
