"""The gateway: ``build_app(settings)`` wires the job store, queue and object store into FastAPI.

Nothing happens at import; clients open in the lifespan and close with it. Tests pass their own
store/queue/storage to exercise both deployments (Redis + Celery + S3, and the embedded default).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any

import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from . import __version__
from .auth import require_api_key
from . import metrics
from .errors import install_error_handlers
from .schemas import model_object
from .settings import ServiceSettings, open_job_queue, open_job_store_for, open_object_store
from .videos import router as videos_router

log = logging.getLogger("hsa.gateway")


def build_app(settings: ServiceSettings | None = None, *, store=None, queue=None, storage=None) -> FastAPI:
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.store = store or open_job_store_for(settings)
        app.state.queue = queue or open_job_queue(settings)
        app.state.storage = storage or open_object_store(settings)
        if not settings.api_key_hashes:
            log.warning("no API keys configured (HSA_API_KEY_SHA256): the API is open to anyone who can reach it")
        yield
        app.state.queue.close()
        app.state.store.close()

    app = FastAPI(title="hsa-video", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible video generation with Heterogeneous Step Allocation")
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(videos_router)

    @app.middleware("http")
    async def observe_requests(request: Request, call_next):
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")  # the template, never the raw path (cardinality)
            metrics.HTTP_REQUESTS.labels(template, request.method, str(status)).inc()
            metrics.HTTP_LATENCY.labels(template, request.method).observe(time.perf_counter() - start)

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        body, content_type = await run_in_threadpool(metrics.exposition, request.app.state.store)
        return Response(body, media_type=content_type)

    @app.get("/v1/models", tags=["models"])
    def list_models(request: Request) -> dict[str, Any]:
        require_api_key(request)
        return {"object": "list", "data": [model_object(card) for card in request.app.state.store.models()]}

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: job store, broker and object storage reachable (workers are reported, not required)."""
        state = request.app.state
        checks: dict[str, str] = {}
        for name, component in (("job_store", state.store), ("broker", state.queue), ("storage", state.storage)):
            try:
                await run_in_threadpool(component.ping)
                checks[name] = "ok"
            except Exception as error:  # any failure means not ready; say which and why
                checks[name] = f"error: {type(error).__name__}: {error}"
        ready = all(value == "ok" for value in checks.values())
        try:
            models = {card.id: card.workers for card in await run_in_threadpool(state.store.models)}
        except Exception:
            models = {}
        return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks, "models": models},
                            status_code=200 if ready else 503)

    return app
