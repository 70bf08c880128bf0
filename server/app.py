"""The gateway: ``build_app(settings)`` wires the job store, queue and object store into FastAPI.

Nothing happens at import; clients open in the lifespan and close with it. Tests pass their own
store/queue/storage to exercise both deployments (Redis + Celery + S3, and the embedded default).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from jobs import metrics
from jobs.destinations import parse_networks
from jobs.public import ModelObject
from jobs.queues import open_job_queue
from jobs.redaction import redact
from jobs.settings import ServiceSettings, open_job_store_for, open_object_store

from . import __version__
from .auth import ApiKey
from .errors import APIError, error_body, error_responses, install_error_handlers
from .limits import open_rate_limiter
from .videos import router as videos_router

log = logging.getLogger("hsa.gateway")


class RequestTooLarge(APIError):
    def __init__(self, limit: int):
        super().__init__(413, "request_too_large", f"request body over {limit} bytes")


class GatewayMiddleware:
    """Every request: refuse bodies over ``max_body_bytes`` (413 from ``Content-Length`` before
    reading anything, or once a streamed body crosses it) and observe the HTTP metrics.

    Plain ASGI rather than ``@app.middleware("http")``: it must wrap ``receive`` to count a streamed
    body, and it spares every request the extra task and memory streams of Starlette's HTTP middleware."""

    def __init__(self, app, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # unless a response starts: an unhandled error
        limit = self.max_body_bytes

        async def observed_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # no MIME sniffing of any answer: an upload or a prompt echoed back stays data
                message = {**message, "headers": [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]}
            await send(message)

        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise RequestTooLarge(limit)  # answered by the APIError handler
            return message

        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                error = RequestTooLarge(limit)
                body = json.dumps(error_body(error.code, error.message)).encode()
                await observed_send({"type": "http.response.start", "status": 413, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")]})
                await observed_send({"type": "http.response.body", "body": body})
                return
            await self.app(scope, limited_receive, observed_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")  # the template, never the raw path (cardinality)
            metrics.HTTP_REQUESTS.labels(template, scope["method"], str(status)).inc()
            metrics.HTTP_LATENCY.labels(template, scope["method"]).observe(time.perf_counter() - start)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


STATIC_DIR = Path(__file__).parent / "static"


def playground_csp(settings: ServiceSettings) -> str:
    """The page loads only its own script and style, talks only to this API (and to the object store
    that presigned downloads point at), plays only videos it fetched itself (blob:), and cannot be framed."""
    connect = ["'self'"]
    if settings.storage == "s3":
        endpoint = urlsplit(settings.s3_public_endpoint_url or settings.s3_endpoint_url or "")
        if endpoint.scheme and endpoint.netloc:
            connect.append(f"{endpoint.scheme}://{endpoint.netloc}")
    return "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' blob: data:",
        "media-src 'self' blob:", f"connect-src {' '.join(connect)}", "form-action 'none'",
        "frame-ancestors 'none'", "base-uri 'none'",
    ])


def _mount_playground(app: FastAPI, settings: ServiceSettings) -> None:
    """The browser playground at ``/``: static files shipped in the package, using the public API."""
    headers = {"Content-Security-Policy": playground_csp(settings), "Referrer-Policy": "no-referrer",
               "Cache-Control": "no-cache"}
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def playground() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=headers)


READY_CHECK_SECONDS = 2.0  # load balancers and orchestrators give a readiness probe a few seconds


async def _check(state, name: str, component) -> str:
    """"ok", or why not, within ``READY_CHECK_SECONDS``. A ping still running from an earlier probe (a
    client in its reconnect loop) is waited on again rather than joined by a second one, so probes of
    a dead dependency do not pile up threads."""
    pending = state.ready_checks.get(name)
    if pending is None or pending.done():
        pending = state.ready_checks[name] = asyncio.ensure_future(run_in_threadpool(component.ping))
    try:
        await asyncio.wait_for(asyncio.shield(pending), READY_CHECK_SECONDS)
        return "ok"
    except asyncio.TimeoutError:
        return f"error: no answer within {READY_CHECK_SECONDS:g} s"
    except Exception as error:  # any failure means not ready; say which and why
        return redact(f"error: {type(error).__name__}: {error}")


def build_app(settings: ServiceSettings | None = None, *, store=None, queue=None, storage=None,
              limiter=None) -> FastAPI:
    """The gateway app over the services ``settings`` name (tests pass their own store, queue, storage)."""
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.store = store or open_job_store_for(settings)
        app.state.queue = queue or open_job_queue(settings)
        app.state.storage = storage or open_object_store(settings)
        app.state.limiter = limiter or open_rate_limiter(settings)
        if not settings.api_key_hashes:
            log.warning("no API keys configured (HSA_API_KEY_SHA256): the API is open to anyone who can reach it")
        # Everything loaded so far (FastAPI, pydantic, Celery, boto3: hundreds of thousands of objects)
        # lives as long as the process. Left in the collector's oldest generation, every full
        # collection walks it with the event loop stopped, and those pauses become the gateway's p99.
        # Frozen, a full collection walks only what requests allocate.
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()  # an app built and stopped in-process (tests) leaves nothing uncollectable
        await app.state.limiter.close()
        await app.state.store.close_async()
        app.state.queue.close()
        app.state.store.close()

    app = FastAPI(title="hsa-video", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible video generation with Heterogeneous Step Allocation")
    app.state.settings = settings
    app.state.ready_checks = {}
    app.state.webhook_networks = parse_networks(settings.webhook_allowed_networks)
    install_error_handlers(app)
    app.include_router(videos_router)
    if settings.cors_allow_origins:  # off by default: browsers get no cross-origin access at all
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_allow_origins,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key"])
    app.add_middleware(GatewayMiddleware, max_body_bytes=settings.max_request_bytes)

    if settings.playground:
        _mount_playground(app, settings)

    if settings.metrics_port is None:  # else `hsa-video serve` serves them on that port
        @app.get("/metrics", tags=["health"], include_in_schema=False)
        async def prometheus_metrics(request: Request) -> Response:
            body, content_type = await run_in_threadpool(metrics.exposition, request.app.state.store)
            return Response(body, media_type=content_type)

    @app.get("/v1/models", tags=["models"], response_model=ModelList, responses=error_responses(401, 429, 503))
    async def list_models(request: Request, api_key: ApiKey) -> ModelList:
        """The models live workers serve, each with what it accepts (sizes, frames, image input, …)."""
        cards = await run_in_threadpool(request.app.state.store.models)
        return ModelList(data=[ModelObject.of(card) for card in cards])

    @app.get("/v1/models/{model_id}", tags=["models"], response_model=ModelObject,
             responses=error_responses(401, 404, 429, 503))
    async def retrieve_model(model_id: str, request: Request, api_key: ApiKey) -> ModelObject:
        """One served model (404 ``model_not_found`` naming the served ones)."""
        cards = await run_in_threadpool(request.app.state.store.models)
        for card in cards:
            if card.id == model_id:
                return ModelObject.of(card)
        served = ", ".join(card.id for card in cards) or "none (no worker is running)"
        raise APIError(404, "model_not_found", f"model {model_id!r} is not served here; models: {served}", "model",
                       extra={"models": [card.id for card in cards]})

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: job store, broker and object storage reachable, and a worker serving a model; each
        check answers within ``READY_CHECK_SECONDS``."""
        state = request.app.state
        names = ("job_store", "broker", "storage")
        outcomes = await asyncio.gather(*(_check(state, name, component) for name, component in
                                          zip(names, (state.store, state.queue, state.storage))))
        checks = dict(zip(names, outcomes))
        models: dict[str, int] = {}
        if checks["job_store"] == "ok":
            try:
                cards = await asyncio.wait_for(run_in_threadpool(state.store.models), READY_CHECK_SECONDS)
                models = {card.id: card.workers for card in cards}
            except Exception:  # the store blinked between the two reads: the next probe says
                pass
        checks["workers"] = "ok" if models else "error: no worker serves a model yet"
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks, "models": models},
                            status_code=200 if ready else 503)

    return app
