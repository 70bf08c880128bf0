"""``/v1/videos``: create, list, retrieve, cancel/delete, download — the OpenAI Videos API."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from . import metrics
from .auth import authenticate, enforce_rate_limit, rate_limit_exceeded, require_api_key
from .errors import APIError
from .jobs import JobRecord, JobStatus, input_key, is_job_id, last_frame_key, new_job_id
from .limits import RateBucket
from .schemas import VideoCreate, parse_create, resolve_request, video_object
from .sla import floor_budget, load_capped_budget, plan_job, retry_after, work_ahead
from .stores import ActiveJobLimit, IdempotencyConflict, PlannerView

PREFIX = "/v1/videos"
router = APIRouter(prefix=PREFIX, tags=["videos"])
ApiKey = Annotated[str, Depends(require_api_key)]

MAX_IMAGE_BYTES = 20 * 1024 * 1024
# decoded size: a 20 MiB PNG of one colour can hold gigapixels (a decompression bomb); 4096² RGB is
# 48 MiB decoded, far above any model's frame, and is refused from its header before any decoding
MAX_IMAGE_PIXELS = 4096 * 4096
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MAX_IDEMPOTENCY_KEY_CHARS = 255
ACTIVE_LIMIT_RETRY_AFTER_SECONDS = 5  # a tiny job takes seconds: worth polling again soon, not hammering
CARD_CACHE_SECONDS = 1.0

# the create body, for the OpenAPI schema: the route reads JSON or multipart itself
_CREATE_SCHEMA = VideoCreate.model_json_schema()
_CREATE_MULTIPART_SCHEMA = {**_CREATE_SCHEMA, "properties": {
    **_CREATE_SCHEMA["properties"], "input_reference": {"type": "string", "format": "binary"},
    "last_frame": {"type": "string", "format": "binary"}}}
CREATE_OPENAPI = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _CREATE_SCHEMA},
    "multipart/form-data": {"schema": _CREATE_MULTIPART_SCHEMA},
}}}


def _services(request: Request):
    state = request.app.state
    return state.settings, state.store, state.queue, state.storage


IMAGE_FIELDS = ("input_reference", "last_frame")  # the first frame (I2V) and the last (first-last-frame models)


async def _read_create_body(request: Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Fields and the images sent (``IMAGE_FIELDS`` → bytes), from JSON or multipart (the openai SDK sends
    multipart)."""
    content_type = request.headers.get("content-type", "")
    images: dict[str, bytes] = {}
    if content_type.startswith("multipart/form-data") or content_type.startswith("application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_part_size=MAX_IMAGE_BYTES)
        except HTTPException as error:  # Starlette's answer to a malformed multipart body
            raise APIError(400, "invalid_multipart", f"malformed form body: {error.detail}") from None
        fields: dict[str, Any] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in IMAGE_FIELDS:
                    raise APIError(422, "invalid_value", f"{name}: unexpected file field", name)
                images[name] = await value.read()
            else:
                fields[name] = value
        _refuse_unencodable(fields)
        return fields, images
    try:
        fields = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise APIError(400, "invalid_json", f"request body is not valid JSON: {error}") from None
    except RecursionError:
        raise APIError(400, "invalid_json", "request body is nested too deeply") from None
    if not isinstance(fields, dict):
        raise APIError(400, "invalid_json", "request body must be a JSON object")
    _refuse_unencodable(fields)
    for name in IMAGE_FIELDS:
        reference = fields.pop(name, None)
        if reference is not None:
            images[name] = _image_from_reference(reference, name)
    return fields, images


def _refuse_unencodable(fields: dict[str, Any]) -> None:
    """JSON may spell lone UTF-16 surrogates (``"\\ud800"``); no store, log or response can encode them."""
    try:
        json.dumps(fields, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise APIError(400, "invalid_json", "request body holds unpaired UTF-16 surrogates (not Unicode text)") from None


def _image_from_reference(reference: Any, name: str) -> bytes:
    """A JSON image field: ``{"image_url": "data:image/png;base64,…"}`` (remote URLs are not fetched)."""
    import base64

    url = reference.get("image_url") if isinstance(reference, dict) else None
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise APIError(422, "invalid_input_reference", f"{name}: send a file (multipart) or "
                       '{"image_url": "data:image/...;base64,..."}', name)
    try:
        return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except ValueError:
        raise APIError(422, "invalid_input_reference", f"{name}: invalid base64", name) from None


def _normalise_image(data: bytes, name: str = "input_reference") -> bytes:
    """A PNG, JPEG, WebP, GIF or BMP image → PNG bytes (its first frame); 413 when too large in bytes,
    422 in pixels or when it is not a complete image of those formats. Worker processes only ever
    see the PNGs this writes. ``name``: the request field, for the error."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise APIError(413, "input_reference_too_large", f"{name}: at most {MAX_IMAGE_BYTES} bytes", name)
    too_many_pixels = APIError(422, "input_reference_too_many_pixels",
                               f"{name}: more than {MAX_IMAGE_PIXELS} pixels", name)
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            width, height = image.size  # from the header: nothing is decoded yet
            if width * height > MAX_IMAGE_PIXELS:
                raise too_many_pixels
            image = image.convert("RGB")  # decodes; a truncated file raises here
            out = io.BytesIO()
            image.save(out, format="PNG")
            return out.getvalue()
    except Image.DecompressionBombError:  # PIL's own, larger limit, checked when opening
        raise too_many_pixels from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        # SyntaxError: some PIL decoders report a malformed header that way
        raise APIError(422, "invalid_input_reference", f"{name}: not a complete {', '.join(IMAGE_FORMATS)} "
                       "image", name) from None


async def _live_cards(state) -> list:
    """The live workers' model cards, re-read at most every ``CARD_CACHE_SECONDS``: they change at
    heartbeat pace, and reading them (a scan plus every card's limits) is a fair share of a create."""
    cached = getattr(state, "live_cards", None)
    now = time.monotonic()
    if cached is None or now - cached[0] > CARD_CACHE_SECONDS:
        cached = state.live_cards = (now, await run_in_threadpool(state.store.models))
    return cached[1]


def _find_card(cards: list, model: str | None, default_model: str | None):
    """The card of ``model``; without one, of the configured default model, else of the only model
    served (404 naming the served models otherwise)."""
    served = ", ".join(card.id for card in cards) or "none (no worker is running)"
    if model is None:
        if default_model is None and len(cards) == 1:
            return cards[0]
        if default_model is None:
            raise APIError(404, "model_not_found", f"model: name one of the served models: {served}", "model",
                           extra={"models": [card.id for card in cards]})
        model = default_model
    for card in cards:
        if card.id == model:
            return card
    raise APIError(404, "model_not_found", f"model {model!r} is not served here; models: {served}", "model",
                   extra={"models": [card.id for card in cards]})


def _plan_deadline(record: JobRecord, card, timing, queue: PlannerView, settings) -> None:
    """Pick the budget for the deadline from the worker's timing model of the job's shape and the live
    queue (or 429)."""
    spec, now = record.spec, time.time()
    ahead = work_ahead(queue.queued_work, queue.running, spec.priority, timing, now)
    # the cap the worker applies at start (the load its heartbeat saw): predict the budget it will run
    cap = load_capped_budget(card.arrival_rate, card.workers, timing, spec.steps, spec.min_budget or 1.0)
    plan = plan_job(spec, timing, ahead, card.workers, now, budget_cap=cap)
    if plan.budget is None:
        # the queued SLA jobs shrink when they start if jobs behind them need the time: admit this one
        # if the queue at its smallest budgets leaves room, at its own smallest budget (re-planned at start)
        floor_ahead = work_ahead(queue.queued_floor_work, queue.running, spec.priority, timing, now)
        floor_spec = spec.model_copy(update={"budget": spec.min_budget or 1.0, "budget_source": "explicit"})
        floor_plan = plan_job(floor_spec, timing, floor_ahead, card.workers, now)
        if floor_plan.completion_at <= spec.deadline_at:
            plan = floor_plan
    if plan.budget is None:
        if not spec.best_effort:
            wait = retry_after(plan.fastest_completion_at - now, spec.deadline_at - now)
            raise APIError(429, "deadline_unreachable",
                           f"the deadline ({spec.deadline_at - now:.1f} s) cannot be met: the fastest this job "
                           f"can finish is in {plan.fastest_completion_at - now:.1f} s (queue wait "
                           f"{plan.wait_seconds:.1f} s at budget {spec.min_budget:g}); retry later, relax the "
                           "deadline, or send best_effort=true", "deadline_s", type="rate_limit_error",
                           headers={"Retry-After": str(wait)},
                           extra={"predicted_seconds": round(plan.fastest_completion_at - now, 2)})
        plan = plan_job(spec.model_copy(update={"budget": spec.min_budget or 1.0, "budget_source": "explicit"}),
                        timing, ahead, card.workers, now)
    spec.budget = plan.budget
    record.predicted_service_seconds = round(plan.service_seconds, 3)
    record.predicted_floor_seconds = round(timing.service_seconds(spec.steps, floor_budget(spec)), 3)
    record.predicted_completion_at = plan.completion_at
    spec.soft_time_limit = round(settings.time_limit_factor * plan.service_seconds + 60.0, 1)


async def _planner_view(store, model: str, token: OwedRateToken | None) -> PlannerView:
    """The SLA planner's view of ``model``'s queue; the caller's rate-limit token taken in the same
    script when it is owed and the limiter shares the store's Redis."""
    bucket = token.for_script() if token is not None else None
    if bucket is None:
        return await store.planner_view_async(model)
    wait, view = await store.planner_view_rate_limited_async(model, bucket)
    if wait > 0:
        raise rate_limit_exceeded(wait)
    return view


def _get_record(store, video_id: str, api_key: str) -> JobRecord:
    """The job, if ``api_key`` may see it: another key's job is as absent as an unknown one (404, not
    403, so ids cannot be probed). A malformed id is never looked up."""
    _refuse_malformed_id(video_id)
    return _visible(store.get(video_id), video_id, api_key)


async def _get_record_async(store, video_id: str, api_key: str) -> JobRecord:
    _refuse_malformed_id(video_id)
    return _visible(await store.get_async(video_id), video_id, api_key)


def _refuse_malformed_id(video_id: str) -> None:
    if not is_job_id(video_id):
        raise APIError(404, "video_not_found", "no video with that id (not a video id)", "video_id")


def _visible(record: JobRecord | None, video_id: str, api_key: str) -> JobRecord:
    if record is None or (api_key and record.owner != api_key):
        raise APIError(404, "video_not_found", f"no video with id {video_id!r}", "video_id")
    return record


def _fused_bucket(state, digest: str) -> RateBucket | None:
    """The caller's rate-limit bucket when a job-store script can take its token in the same round trip
    (limits and store on one Redis); None otherwise, or when auth (and so limiting) is off."""
    return state.limiter.bucket(digest) if digest and state.fused_rate_limits else None


class OwedRateToken:
    """A create's rate-limit token, not yet taken. With Redis limits and store, the SLA planner's queue
    read takes it in the same script (``for_script``): one round trip fewer per create. Whatever would
    answer before that read — a refusal (``take`` before it is raised), an image to decode — takes it
    first, so every create still draws one token and a limited key hears 429 before any other refusal,
    exactly as when the token is taken up front."""

    def __init__(self, request: Request, digest: str):
        self.request, self.digest = request, digest
        self.bucket = _fused_bucket(request.app.state, digest)
        self.owed = bool(digest)

    def for_script(self) -> RateBucket | None:
        """The bucket for a store script to take the token from (None: taken already, or not fusable)."""
        if not (self.owed and self.bucket):
            return None
        self.owed = False
        return self.bucket

    async def take(self) -> None:
        """Take the token now, if it is still owed (429 ``rate_limit_exceeded`` when the bucket is empty)."""
        if self.owed:
            self.owed = False
            await enforce_rate_limit(self.request, self.digest)


@router.post("", openapi_extra=CREATE_OPENAPI)
async def create_video(request: Request, api_key: ApiKey) -> JSONResponse:
    return await _create_video(request, api_key, None)


async def create_video_owing_token(request: Request) -> JSONResponse:
    """``create_video`` with its key check, for ``HotRoutes``: the rate-limit token is taken as late as
    the create's first Redis script (``OwedRateToken``): two round trips, not three (four while jobs
    run, before the planner's view became one script). CPU per create in-process on Redis, alternating
    runs: 1.16 / 1.27 / 1.51 → 1.03 / 1.13 / 1.15 ms with no job running, 2.14 / 2.16 → 1.61 / 1.54 ms
    with five."""
    digest = authenticate(request)
    token = OwedRateToken(request, digest)
    if token.bucket is None:  # nothing to fuse with: up front, as the dependency does
        await token.take()
    return await _create_video(request, digest, token)


async def _create_video(request: Request, api_key: str, token: OwedRateToken | None) -> JSONResponse:
    try:
        return await _answer_create(request, api_key, token)
    except APIError as error:
        if token is not None:
            await token.take()  # a limited key's refusal is its 429, whatever else is wrong
        if error.code != "rate_limit_exceeded":  # as on FastAPI's route, where the dependency refuses first
            metrics.REJECTIONS.labels(error.code).inc()
        raise


async def _answer_create(request: Request, api_key: str, token: OwedRateToken | None) -> JSONResponse:
    fields, images = await _read_create_body(request)
    body = parse_create(fields)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise APIError(400, "invalid_idempotency_key",
                       f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    record, created = await _accept_job(request.app.state, body, images, api_key, idempotency_key, token)
    headers = {"openai-poll-after-ms": str(request.app.state.settings.poll_after_ms)}
    if created:
        metrics.SUBMISSIONS.labels(record.spec.model, record.spec.tier or "", record.spec.budget_source).inc()
    else:
        headers["idempotent-replayed"] = "true"
    return JSONResponse(video_object(record), headers=headers)


async def _accept_job(state, body: VideoCreate, images: dict[str, bytes], api_key: str,
                      idempotency_key: str | None, token: OwedRateToken | None) -> tuple[JobRecord, bool]:
    """Validate against the model, plan the budget, store and queue the job; the stored job (an
    earlier one for a replayed idempotency key) and whether it is new. ``images``: the request's
    first and last frames by field name; ``token``: the caller's rate-limit token, when it is still owed.

    On the event loop, like a status poll: the store's reads and its one-trip create are awaited;
    only images (decoding, their upload) and the once-a-second card refresh go to the thread pool."""
    settings, store, queue, storage = state.settings, state.store, state.queue, state.storage
    card = _find_card(await _live_cards(state), body.model, settings.default_model)
    job_id = new_job_id()
    if images and token is not None:
        await token.take()  # a limited key's image is refused before it is decoded
    pngs = {name: await run_in_threadpool(_normalise_image, data, name) for name, data in images.items()}
    keys = {"input_reference": input_key(job_id), "last_frame": last_frame_key(job_id)}
    spec = resolve_request(body, card, job_id, *(keys[name] if name in pngs else None for name in IMAGE_FIELDS))
    record = JobRecord(spec=spec, owner=api_key)
    shape = card.shape(spec.width, spec.height, spec.num_frames)
    if shape.timing is not None:
        _plan_deadline(record, card, shape.timing, await _planner_view(store, card.id, token), settings)
    elif card.seconds_per_step:  # a worker without a timing model: no SLA planning, a generous limit
        spec.soft_time_limit = round(settings.time_limit_factor * card.seconds_per_step * spec.steps + 60.0, 1)
    if token is not None:
        await token.take()

    body_hash = None
    if idempotency_key:
        canonical = json.dumps(body.model_dump(), sort_keys=True) + "".join(
            f"{name}:{hashlib.sha256(png).hexdigest()}" for name, png in sorted(pngs.items()))
        body_hash = hashlib.sha256(canonical.encode()).hexdigest()
        idempotency_key = f"{api_key[:16]}:{idempotency_key}"

    for name, png in pngs.items():
        await run_in_threadpool(storage.put_bytes, keys[name], png, "image/png")
    created = False
    try:
        # the job and its queue message, in one transaction: queued if and only if stored
        stored, created = await store.create_async(record, idempotency_key, body_hash,
                                                   settings.max_active_jobs_per_key if api_key else 0,
                                                   queue.message(spec))
    except IdempotencyConflict as conflict:
        raise APIError(409, "idempotency_key_reused", "Idempotency-Key was already used with a different "
                       f"request body (job {conflict.job_id})", extra={"video_id": conflict.job_id}) from None
    except ActiveJobLimit as limit:
        raise APIError(429, "too_many_active_jobs", f"this API key already has {limit.limit} queued or running "
                       "jobs; wait for one to finish", type="rate_limit_error",
                       headers={"Retry-After": str(ACTIVE_LIMIT_RETRY_AFTER_SECONDS)}) from None
    finally:
        if pngs and not created:  # refused, failed or replayed: no job owns the uploaded images
            await run_in_threadpool(storage.delete_prefix, f"videos/{job_id}/")
    return stored, created


@router.get("")
def list_videos(
    request: Request,
    api_key: ApiKey,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    store = request.app.state.store
    if after is not None and not is_job_id(after):
        records, has_more = [], False  # names no job, like an unknown id
    else:
        records, has_more = store.list(limit, after, newest_first=order == "desc", owner=api_key or None)
    data = [video_object(record) for record in records]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


@router.get("/{video_id}", response_model=dict[str, Any])
async def retrieve_video(video_id: str, request: Request, api_key: ApiKey) -> JSONResponse:
    # the most frequent call (clients poll it): async, so a poll never waits for (nor pays for) a
    # thread-pool trip; a JSONResponse skips FastAPI's re-encoding of the plain-JSON object
    return _status_response(request, await _get_record_async(request.app.state.store, video_id, api_key))


async def poll_video(video_id: str, request: Request) -> JSONResponse:
    """``retrieve_video`` with its key check, for ``HotRoutes``. With Redis limits and store, the job
    store's read script takes the rate-limit token first: one command, one round trip (a poll's CPU
    0.77 → 0.61 ms in-process, medians of three alternating runs). Otherwise the check and the read are
    awaited together, one event-loop wake-up instead of two (0.78 → 0.66 ms). Either way the same
    answers, a 429 before a 404 or 503, as in sequence."""
    digest = authenticate(request)
    if not is_job_id(video_id):  # never looked up
        await enforce_rate_limit(request, digest)
        _refuse_malformed_id(video_id)
    state = request.app.state
    if bucket := _fused_bucket(state, digest):
        # on Redis the token and the record come back from one script: one round trip, not two
        wait, record = await state.store.get_rate_limited_async(video_id, bucket)
        if wait > 0:
            raise rate_limit_exceeded(wait)
        return _status_response(request, _visible(record, video_id, digest))
    limited, record = await asyncio.gather(enforce_rate_limit(request, digest),
                                           request.app.state.store.get_async(video_id), return_exceptions=True)
    for outcome in (limited, record):
        if isinstance(outcome, BaseException):
            raise outcome
    return _status_response(request, _visible(record, video_id, digest))


def _status_response(request: Request, record: JobRecord) -> JSONResponse:
    headers = None if record.status.terminal else {"openai-poll-after-ms": str(request.app.state.settings.poll_after_ms)}
    return JSONResponse(video_object(record), headers=headers)


@router.delete("/{video_id}")
def delete_video(video_id: str, request: Request, api_key: ApiKey) -> dict[str, Any]:
    """An active job is cancelled (its record stays, status ``cancelled``); a finished one is deleted
    with its files."""
    _, store, _, storage = _services(request)
    record = _get_record(store, video_id, api_key)
    if not record.status.terminal:
        record = store.cancel(video_id) or record
        if record.status == JobStatus.cancelled:
            return {"id": video_id, "object": "video.deleted", "deleted": False, "status": "cancelled"}
    storage.delete_prefix(f"videos/{video_id}/")
    store.delete(video_id)
    return {"id": video_id, "object": "video.deleted", "deleted": True}


@router.get("/{video_id}/content")
def download_video(video_id: str, request: Request, api_key: ApiKey,
                   variant: Literal["video", "thumbnail", "spritesheet"] = "video") -> Response:
    settings, store, _, storage = _services(request)
    record = _get_record(store, video_id, api_key)
    if variant != "video":
        raise APIError(422, "unsupported_variant", f"variant: only 'video' is available, not {variant!r}", "variant")
    if record.status != JobStatus.completed or record.output_key is None:
        raise APIError(409, "video_not_ready", f"video {video_id!r} is {record.status.value}, not completed",
                       extra={"status": record.status.value})
    if record.expires_at is not None and record.expires_at < time.time():
        raise APIError(410, "video_expired", f"video {video_id!r} expired", "video_id")
    url = storage.presigned_url(record.output_key, settings.presign_seconds)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    path = storage.local_path(record.output_key)
    if path is None:
        raise APIError(404, "video_content_missing", f"the MP4 of {video_id!r} is missing from storage",
                       type="server_error")
    return FileResponse(path, media_type="video/mp4", filename=f"{video_id}.mp4")


class HotRoutes:
    """Creates and status polls, nearly every request a gateway serves, go straight to their route
    functions (a poll to ``poll_video``), past FastAPI's routing, dependency solving and inner
    middleware: those layers cost ~0.3 ms of CPU per poll and ~0.65 ms per create here, measured
    in-process (docs/benchmarks.md).

    The same functions answer with the same errors: an ``APIError`` or Starlette ``HTTPException`` goes
    to the app's own handler for it; anything else propagates to its server-error handler, as it
    would from the route. ``scope["route"]`` is the route's, for the metrics. Any other request, and
    any under a ``root_path`` (a proxy's prefix, which routing strips), takes the usual way.
    Ordered inside CORS and ``GatewayMiddleware``, so body limits and metrics apply as before."""

    def __init__(self, app):
        self.app = app
        by_endpoint = {route.endpoint: route for route in router.routes}
        self.create_route, self.retrieve_route = by_endpoint[create_video], by_endpoint[retrieve_video]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        video_id = path[len(PREFIX) + 1:] if path.startswith(PREFIX + "/") else ""
        if method == "POST" and path == PREFIX:
            scope["route"] = self.create_route
        elif method == "GET" and video_id and "/" not in video_id:
            scope["route"] = self.retrieve_route
        else:
            return await self.app(scope, receive, send)
        request = Request(scope, receive)
        try:
            if method == "POST":
                response = await create_video_owing_token(request)
            else:
                response = await poll_video(video_id, request)
        except (APIError, HTTPException) as error:
            response = await self._handler_for(scope["app"], error)(request, error)
        finally:
            await request.close()  # a multipart body's spooled files
        await response(scope, receive, send)

    @staticmethod
    def _handler_for(app, error: Exception):
        return next(app.exception_handlers[cls] for cls in type(error).__mro__ if cls in app.exception_handlers)
