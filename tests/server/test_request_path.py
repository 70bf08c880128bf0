"""The gateway's one request path (FastAPI routes, the key check and rate limit as a dependency), on the
one-process mode's stores (SQLite, in-memory limits) and on Redis: the order of the answers a client can
get, errors included, and the metrics each request is counted under."""

import io
import uuid

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from jobs.queues import EmbeddedJobQueue
from jobs.settings import ServiceSettings, hash_api_key
from jobs.sla import TimingModel
from jobs.storage import LocalObjectStore
from jobs.stores.redis_store import RedisJobStore
from jobs.stores.sqlite_store import SqliteJobStore
from server.app import build_app
from server.limits import RedisRateLimiter

from .conftest import make_card

KEYS = ("sk-alice", "sk-bob")


class UnreachableOnRead(SqliteJobStore):
    async def get_async(self, job_id):
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")


def png_bytes(color=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


def client(tmp_path, store_class=SqliteJobStore, redis_url=None, card=None, **settings) -> TestClient:
    """The gateway on a store and storage of its own; with ``redis_url``, a Redis store and a Redis limiter."""
    settings = ServiceSettings(api_key_sha256=",".join(hash_api_key(key) for key in KEYS), data_dir=tmp_path,
                               _env_file=None, **settings)
    namespace = f"test-{uuid.uuid4().hex[:8]}:"
    store = RedisJobStore(redis_url, prefix=namespace) if redis_url else store_class(settings.database_path)
    store.register_model(card or make_card("tiny"), "w1", ttl_seconds=600)
    limiter = RedisRateLimiter(redis_url, settings.rate_limit_per_second, settings.rate_limit_burst,
                               prefix=f"{namespace}rate:") if redis_url else None
    return TestClient(build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=LocalObjectStore(
        settings.storage_dir), limiter=limiter), raise_server_exceptions=False)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request) -> dict:
    return {} if request.param == "sqlite" else {"redis_url": request.getfixturevalue("redis_url")}


def auth(key: str = KEYS[0]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_rate_limits_and_the_job_cap(tmp_path, backend):
    with client(tmp_path, rate_limit_per_second=0.1, rate_limit_burst=3, max_active_jobs_per_key=1,
                **backend) as gateway:
        answers = [gateway.post("/v1/videos", json={"prompt": "a red circle"}, headers=auth()) for _ in range(2)]
        job_id = answers[0].json()["id"]
        answers += [gateway.get(f"/v1/videos/{job_id}", headers=auth()) for _ in range(2)]
        answers.append(gateway.get("/v1/videos/not-a-video-id", headers=auth()))  # limited before refused
        assert [answer.status_code for answer in answers] == [200, 429, 200, 429, 429]
        assert answers[1].json()["error"]["code"] == "too_many_active_jobs"
        assert answers[3].json()["error"]["code"] == "rate_limit_exceeded"
        assert answers[1].headers["Retry-After"] and answers[3].headers["Retry-After"] in ("9", "10")


def test_a_limited_key_hears_429_before_any_other_refusal(tmp_path, backend):
    """Every create draws a token, refused or not, and an empty bucket answers 429 whatever else is wrong
    (before the body is read, so a limited key cannot make the gateway decode images either)."""
    card = make_card("tiny", timing=TimingModel(step_seconds_fixed=0.01, step_seconds_per_budget=0.04,
                                                job_seconds_fixed=0.3))
    image = {"input_reference": ("frame.png", png_bytes(), "image/png")}
    not_an_image = {"input_reference": ("f.png", b"not an image", "image/png")}
    requests = [
        {"json": {"prompt": "a red circle", "size": "32x32", "steps": 8, "seed": 1}},
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"json": {"prompt": "a red circle", "model": "sora-2"}},
        {"data": {"prompt": "a red circle"}, "files": not_an_image},
        {"data": {"prompt": "a red circle", "size": "32x32", "steps": 8, "seed": "2"}, "files": image},
    ]
    with client(tmp_path, card=card, rate_limit_per_second=0.1, rate_limit_burst=5, **backend) as gateway:
        answers = []
        for options in requests * 2:  # the second time round the bucket is empty
            options = {**options, "headers": {**options.get("headers", {}), **auth()}}
            answers.append(gateway.post("/v1/videos", **options))
    assert [answer.status_code for answer in answers] == [200, 400, 404, 422, 200] + [429] * 5
    assert {answer.json()["error"]["code"] for answer in answers[5:]} == {"rate_limit_exceeded"}
    assert all(answer.headers["Retry-After"] in ("9", "10") for answer in answers[5:])
    assert answers[0].json()["budget_source"] == "sla"  # planned: the queue view was read


def test_idempotent_replays(tmp_path, backend):
    with client(tmp_path, **backend) as gateway:
        headers = {**auth(), "Idempotency-Key": "order-1"}
        first = gateway.post("/v1/videos", json={"prompt": "a red circle"}, headers=headers)
        again = gateway.post("/v1/videos", json={"prompt": "a red circle"}, headers=headers)
        conflict = gateway.post("/v1/videos", json={"prompt": "a blue square"}, headers=headers)
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_key_reused"


def test_an_unreachable_store_is_503(tmp_path):
    with client(tmp_path, store_class=UnreachableOnRead) as gateway:
        response = gateway.get("/v1/videos/video_00000000000000000000000000000000", headers=auth())
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "service_unavailable"


def test_requests_are_counted_under_their_route_template(tmp_path):
    with client(tmp_path) as gateway:
        job_id = gateway.post("/v1/videos", json={"prompt": "a red circle"}, headers=auth()).json()["id"]
        gateway.get(f"/v1/videos/{job_id}", headers=auth())
        gateway.get("/v1/videos/not-a-video-id/extra/parts", headers=auth())
        metrics = gateway.get("/metrics").text
    assert 'route="/v1/videos",status="200"' in metrics
    assert 'route="/v1/videos/{video_id}",status="200"' in metrics
    assert 'route="unmatched",status="404"' in metrics  # the raw path never becomes a label


def test_a_poll_of_an_unfinished_video_says_when_to_poll_again(tmp_path):
    with client(tmp_path, poll_after_ms=250) as gateway:
        created = gateway.post("/v1/videos", json={"prompt": "a red circle"}, headers=auth())
        polled = gateway.get(f"/v1/videos/{created.json()['id']}", headers=auth())
    assert created.headers["openai-poll-after-ms"] == polled.headers["openai-poll-after-ms"] == "250"
