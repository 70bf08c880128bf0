"""``/v1/videos``: create, list, retrieve, cancel/delete, download — the OpenAI Videos API."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import socket
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from jobs import metrics
from jobs.destinations import DestinationRefused, check_resolved, url_host_port
from jobs.public import VideoObject
from jobs.records import JobRecord, JobStatus, input_key, is_job_id, last_frame_key, new_job_id
from jobs.sla import DeadlineUnreachable, plan_at_submit
from jobs.stores import ActiveJobLimit, IdempotencyConflict

from .auth import ApiKey, client_identity
from .errors import APIError, error_responses
from .schemas import VideoCreate, parse_create, resolve_request

log = logging.getLogger("hsa.gateway")

PREFIX = "/v1/videos"
router = APIRouter(prefix=PREFIX, tags=["videos"])

MAX_IMAGE_BYTES = 20 * 1024 * 1024
# decoded size: a 20 MiB PNG of one colour can hold gigapixels (a decompression bomb); 4096² RGB is
# 48 MiB decoded, far above any model's frame, and is refused from its header before any decoding
MAX_IMAGE_PIXELS = 4096 * 4096
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MAX_IDEMPOTENCY_KEY_CHARS = 255
ACTIVE_LIMIT_RETRY_AFTER_SECONDS = 5  # a tiny job takes seconds: worth polling again soon, not hammering
CARD_CACHE_SECONDS = 1.0
WEBHOOK_RESOLVE_SECONDS = 2.0
MODEL_STARTING_RETRY_AFTER_SECONDS = 5  # a create waits no longer for the webhook host's DNS

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


async def _read_create_body(request: Request) -> tuple[dict[str, Any], dict[str, bytes], bool]:
    """Fields, the images sent (``IMAGE_FIELDS`` → bytes) and whether the body was a form (its fields are
    text), from JSON or multipart (the openai SDK sends multipart)."""
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
        return fields, images, True
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
    return fields, images, False


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


def expected_model(settings) -> str | None:
    """The model this deployment serves even while no worker has published it yet: the configured
    default, or in one-process mode the embedded worker's."""
    return settings.default_model if settings.redis_url else (settings.default_model or settings.model)


async def _find_card(state, cards: list, model: str | None):
    """The card of ``model``; without one, of the configured default model, else of the only model
    served (404 naming the served models otherwise). While the expected model's worker starts, the
    card it last published: the job is queued and runs once the worker is up."""
    served = ", ".join(card.id for card in cards) or "none (no worker is running)"
    expected = expected_model(state.settings)
    if model is None:
        if expected is None and len(cards) == 1:
            return cards[0]
        if expected is None:
            raise APIError(404, "model_not_found", f"model: name one of the served models: {served}", "model",
                           extra={"models": [card.id for card in cards]})
        model = expected
    for card in cards:
        if card.id == model:
            return card
    if model == expected:
        last = await run_in_threadpool(state.store.last_card, model)
        if last is not None:
            return last
        raise APIError(503, "model_starting", f"model {model!r} is starting and has not been served here before; "
                       "retry in a few seconds", "model", type="server_error",
                       headers={"Retry-After": str(MODEL_STARTING_RETRY_AFTER_SECONDS)})
    raise APIError(404, "model_not_found", f"model {model!r} is not served here; models: {served}", "model",
                   extra={"models": [card.id for card in cards]})


def _get_record(store, video_id: str, api_key: str) -> JobRecord:
    """The job, if ``api_key`` may see it: another key's job is as absent as an unknown one (404, not
    403, so ids cannot be probed). A malformed id is never looked up."""
    _refuse_malformed_id(video_id)
    return _visible(store.get(video_id), video_id, api_key)


def _refuse_malformed_id(video_id: str) -> None:
    if not is_job_id(video_id):
        raise APIError(404, "video_not_found", "no video with that id (not a video id)", "video_id")


def _visible(record: JobRecord | None, video_id: str, api_key: str) -> JobRecord:
    if record is None or (api_key and record.owner != api_key):
        raise APIError(404, "video_not_found", f"no video with id {video_id!r}", "video_id")
    return record


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeletedVideo(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool
    status: Literal["cancelled"] | None = None  # set when the call cancelled an active job instead


@router.post("", response_model=VideoObject, openapi_extra=CREATE_OPENAPI,
             responses=error_responses(400, 401, 404, 409, 413, 422, 429, 503))
async def create_video(request: Request, response: Response, api_key: ApiKey) -> VideoObject:
    """Create a video job (JSON, or multipart with image files); it is queued at once and runs on a worker."""
    try:
        fields, images, form = await _read_create_body(request)
        body = parse_create(fields, strict=not form)
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
            raise APIError(400, "invalid_idempotency_key",
                           f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters")
        # open mode: every caller sees every job, but the cap on active jobs is the client's own
        owner = client_identity(request, api_key)
        record, created = await _accept_job(request.app.state, body, images, api_key, owner, idempotency_key)
    except APIError as error:
        metrics.REJECTIONS.labels(error.code).inc()
        raise
    response.headers["openai-poll-after-ms"] = str(request.app.state.settings.poll_after_ms)
    if created:
        metrics.SUBMISSIONS.labels(record.spec.model, record.spec.tier or "", record.spec.budget_source).inc()
    else:
        response.headers["idempotent-replayed"] = "true"
    return VideoObject.of(record)


async def _accept_job(state, body: VideoCreate, images: dict[str, bytes], api_key: str, owner: str,
                      idempotency_key: str | None) -> tuple[JobRecord, bool]:
    """Validate against the model, plan the budget, store the job and publish it to the workers; the stored
    job (an earlier one for a replayed idempotency key) and whether it is new. ``images``: the request's
    first and last frames by field name."""
    settings, store, queue, storage = state.settings, state.store, state.queue, state.storage
    if body.webhook_url:
        await _refuse_unreachable_webhook(body.webhook_url, state.webhook_networks)
    job_id = new_job_id()
    pngs = {name: await run_in_threadpool(_normalise_image, data, name) for name, data in images.items()}
    keys = {"input_reference": input_key(job_id), "last_frame": last_frame_key(job_id)}
    _, spec, plan = await _plan(state, body, job_id, *(keys[name] if name in pngs else None for name in IMAGE_FIELDS))
    record = JobRecord(spec=spec, plan=plan, owner=owner)
    record.published_at = record.created_at

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
        stored, created = await store.create_async(record, idempotency_key, body_hash,
                                                   settings.max_active_jobs_per_key)
    except IdempotencyConflict as conflict:
        raise APIError(409, "idempotency_key_reused", "Idempotency-Key was already used with a different "
                       f"request body (job {conflict.job_id})", extra={"video_id": conflict.job_id}) from None
    except ActiveJobLimit as limit:
        raise APIError(429, "too_many_active_jobs", f"this caller already has {limit.limit} queued or running "
                       "jobs; wait for one to finish", type="rate_limit_error",
                       headers={"Retry-After": str(ACTIVE_LIMIT_RETRY_AFTER_SECONDS)}) from None
    finally:
        if pngs and not created:  # refused, failed or replayed: no job owns the uploaded images
            await run_in_threadpool(storage.delete_prefix, f"videos/{job_id}/")
    if created:
        try:
            await run_in_threadpool(queue.publish, stored)
        except Exception as error:  # stored, so not lost: a worker's reconciler publishes it again
            log.warning("job %s stored but not published (%s: %s); the reconciler will publish it", job_id,
                        type(error).__name__, error)
    return stored, created


async def _plan(state, body: VideoCreate, job_id: str, input_key: str | None, last_frame_key: str | None):
    """The model's card, the job's spec and its plan (budget, predicted completion) as of now; 404 / 422
    for what the model does not offer, 429 ``deadline_unreachable``. Creates and dry runs share it."""
    card = await _find_card(state, await _live_cards(state), body.model)
    spec = resolve_request(body, card, job_id, input_key, last_frame_key)
    timing = card.shape(spec.width, spec.height, spec.num_frames).timing
    view = await state.store.planner_view_async(card.id) if timing is not None else None
    try:
        # the workers cap an SLA budget by the load their heartbeat saw: the gateway predicts the same
        plan = plan_at_submit(spec, timing, view, max(card.workers, 1), card.arrival_rate, time.time(),
                              state.settings.time_limit_factor, card.seconds_per_step)
    except DeadlineUnreachable as unreachable:
        raise APIError(429, "deadline_unreachable", f"{unreachable}; retry later, relax the deadline, or send "
                       "best_effort=true", "deadline_s", type="rate_limit_error",
                       headers={"Retry-After": str(unreachable.retry_after)},
                       extra={"predicted_seconds": round(unreachable.fastest_seconds, 2)}) from None
    return card, spec, plan


async def _refuse_unreachable_webhook(url: str, allowed) -> None:
    """422 unless every address the URL's host resolves to is one webhooks may reach (the worker checks
    again when it delivers). The message names no address: internal names stay internal."""
    try:
        host, port = url_host_port(url)
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
                                           WEBHOOK_RESOLVE_SECONDS)
        except (OSError, UnicodeError, asyncio.TimeoutError):
            infos = []
        addresses = [info[4][0] for info in infos]
        if not addresses:
            raise APIError(422, "invalid_webhook_url", f"webhook_url: {host!r} does not resolve", "webhook_url")
        check_resolved(host, addresses, allowed)
    except DestinationRefused:
        raise APIError(422, "invalid_webhook_url", "webhook_url: not a public address (loopback, private, "
                       "link-local, multicast and reserved addresses are refused unless the operator allows "
                       "their network with HSA_WEBHOOK_ALLOWED_NETWORKS)", "webhook_url") from None


class VideoPlanRequest(VideoCreate):
    """``POST /v1/videos/plan``: a create's JSON body, and whether the job would bring images."""

    image_to_video: bool = Field(False, description="plan it as image-to-video (an input_reference sent)")
    last_frame: bool = Field(False, description="plan it with a last frame (first-last-frame models)")


class VideoPlan(BaseModel):
    """What a create would be planned as now; nothing is created, stored or queued."""

    object: Literal["video.plan"] = "video.plan"
    model: str
    size: str
    seconds: str
    num_frames: int
    steps: int
    budget: float = Field(description="the compute budget the job would run with")
    budget_source: Literal["explicit", "sla"]
    min_budget: float = Field(description="the smallest budget its steps allow")
    tier: str
    deadline_at: int
    best_effort: bool
    workers: int = Field(description="live workers serving the model (0: its worker is starting)")
    predicted_service_seconds: float | None = Field(description="on a worker, at that budget")
    predicted_start_at: int | None
    predicted_completion_at: int | None


@router.post("/plan", response_model=VideoPlan, responses=error_responses(400, 401, 404, 413, 422, 429, 503),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": VideoPlanRequest.model_json_schema()}}}})
async def plan_video(request: Request, api_key: ApiKey) -> VideoPlan:
    """Dry run: the budget the planner would choose for this request now and when it would finish, from
    the live queue, without creating a job (an HSA extension, e.g. to show before submitting)."""
    fields, images, form = await _read_create_body(request)
    if images or form:
        raise APIError(400, "invalid_json", "a plan takes a JSON body and no images: say image_to_video=true")
    body = parse_create(fields, schema=VideoPlanRequest)
    create = VideoCreate.model_validate(body.model_dump(exclude={"image_to_video", "last_frame"}))
    card, spec, plan = await _plan(request.app.state, create, new_job_id(),
                                "plan/input.png" if body.image_to_video else None,
                                "plan/last.png" if body.last_frame else None)
    completion = plan.predicted_completion_at
    start = None if completion is None or plan.predicted_service_seconds is None \
        else completion - plan.predicted_service_seconds
    return VideoPlan(model=spec.model, size=f"{spec.width}x{spec.height}", seconds=f"{spec.num_frames / spec.fps:g}",
                     num_frames=spec.num_frames, steps=spec.steps, budget=round(plan.budget, 4),
                     budget_source=spec.budget_source, min_budget=spec.min_budget, tier=spec.tier,
                     deadline_at=int(spec.deadline_at), best_effort=spec.best_effort, workers=card.workers,
                     predicted_service_seconds=None if plan.predicted_service_seconds is None
                     else round(plan.predicted_service_seconds, 3),
                     predicted_start_at=None if start is None else int(start),
                     predicted_completion_at=None if completion is None else int(completion))


@router.get("", response_model=VideoList, responses=error_responses(401, 422, 429, 503))
def list_videos(
    request: Request,
    api_key: ApiKey,
    after: Annotated[str | None, Query(description="the id of the last video of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> VideoList:
    """The caller's videos, newest first by default, a page at a time."""
    store = request.app.state.store
    if after is not None and not is_job_id(after):
        records, has_more = [], False  # names no job, like an unknown id
    else:
        records, has_more = store.list(limit, after, newest_first=order == "desc", owner=api_key or None)
    data = [VideoObject.of(record) for record in records]
    return VideoList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                     has_more=has_more)


@router.get("/{video_id}", response_model=VideoObject, responses=error_responses(401, 404, 429, 503))
async def retrieve_video(video_id: str, request: Request, response: Response, api_key: ApiKey) -> VideoObject:
    """A video's status, progress and figures; clients poll it (``openai-poll-after-ms`` says how often)."""
    _refuse_malformed_id(video_id)
    record = _visible(await request.app.state.store.get_async(video_id), video_id, api_key)
    if not record.status.terminal:
        response.headers["openai-poll-after-ms"] = str(request.app.state.settings.poll_after_ms)
    return VideoObject.of(record)


@router.delete("/{video_id}", response_model=DeletedVideo, response_model_exclude_none=True,
                responses=error_responses(401, 404, 429, 503))
def delete_video(video_id: str, request: Request, api_key: ApiKey) -> DeletedVideo:
    """An active job is cancelled (its record stays, status ``cancelled``); a finished one is deleted
    with its files."""
    _, store, _, storage = _services(request)
    record = _get_record(store, video_id, api_key)
    if not record.status.terminal:
        record = store.cancel(video_id) or record
        if record.status == JobStatus.cancelled:
            return DeletedVideo(id=video_id, deleted=False, status="cancelled")
    storage.delete_prefix(f"videos/{video_id}/")
    store.delete(video_id)
    return DeletedVideo(id=video_id, deleted=True)


@router.get("/{video_id}/content", response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}, "description": "the MP4"},
                       307: {"description": "a presigned URL of the MP4 in object storage"},
                       **error_responses(401, 404, 409, 410, 422, 429, 503)})
def download_video(video_id: str, request: Request, api_key: ApiKey,
                   variant: Literal["video", "thumbnail", "spritesheet"] = "video") -> Response:
    """The finished MP4: streamed from local storage, or a redirect to a presigned S3 URL."""
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
