"""``/v1/videos``: create, list, retrieve, cancel/delete, download — the OpenAI Videos API."""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from . import metrics
from .auth import require_api_key
from .errors import APIError
from .jobs import JobRecord, JobStatus, input_key, new_job_id
from .schemas import parse_create, resolve_request, video_object
from .sla import plan_job, retry_after
from .stores import IdempotencyConflict

router = APIRouter(prefix="/v1/videos", tags=["videos"])
ApiKey = Annotated[str, Depends(require_api_key)]

MAX_IMAGE_BYTES = 20 * 1024 * 1024


def _services(request: Request):
    state = request.app.state
    return state.settings, state.store, state.queue, state.storage


async def _read_create_body(request: Request) -> tuple[dict[str, Any], bytes | None]:
    """Fields and the optional first-frame image, from JSON or multipart (the openai SDK sends multipart)."""
    content_type = request.headers.get("content-type", "")
    image: bytes | None = None
    if content_type.startswith("multipart/form-data") or content_type.startswith("application/x-www-form-urlencoded"):
        form = await request.form(max_part_size=MAX_IMAGE_BYTES)
        fields: dict[str, Any] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != "input_reference":
                    raise APIError(422, "invalid_value", f"{name}: unexpected file field", name)
                image = await value.read()
            else:
                fields[name] = value
        return fields, image
    try:
        fields = json.loads(await request.body() or b"null")
    except json.JSONDecodeError as error:
        raise APIError(400, "invalid_json", f"request body is not valid JSON: {error}") from None
    if not isinstance(fields, dict):
        raise APIError(400, "invalid_json", "request body must be a JSON object")
    reference = fields.pop("input_reference", None)
    if reference is not None:
        image = _image_from_reference(reference)
    return fields, image


def _image_from_reference(reference: Any) -> bytes:
    """JSON ``input_reference``: ``{"image_url": "data:image/png;base64,…"}`` (remote URLs are not fetched)."""
    import base64

    url = reference.get("image_url") if isinstance(reference, dict) else None
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise APIError(422, "invalid_input_reference", "input_reference: send a file (multipart) or "
                       '{"image_url": "data:image/...;base64,..."}', "input_reference")
    try:
        return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except ValueError:
        raise APIError(422, "invalid_input_reference", "input_reference: invalid base64", "input_reference") from None


def _normalise_image(data: bytes) -> bytes:
    """Any readable image → PNG bytes; 422 if it is not an image."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise APIError(413, "input_reference_too_large", f"input_reference: at most {MAX_IMAGE_BYTES} bytes",
                       "input_reference")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            out = io.BytesIO()
            image.save(out, format="PNG")
            return out.getvalue()
    except (UnidentifiedImageError, OSError, ValueError):
        raise APIError(422, "invalid_input_reference", "input_reference: not a readable image file",
                       "input_reference") from None


def _find_card(store, model: str):
    cards = store.models()
    for card in cards:
        if card.id == model:
            return card
    served = ", ".join(card.id for card in cards) or "none (no worker is running)"
    raise APIError(404, "model_not_found", f"model {model!r} is not served here; models: {served}", "model",
                   extra={"models": [card.id for card in cards]})


def _plan_deadline(record: JobRecord, card, active: list[JobRecord], settings) -> None:
    """Pick the budget for the deadline from the worker's timing model and the live queue (or 429)."""
    spec, now = record.spec, time.time()
    plan = plan_job(spec, card.timing, active, card.workers, now)
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
                        card.timing, active, card.workers, now)
    spec.budget = plan.budget
    record.predicted_service_seconds = round(plan.service_seconds, 3)
    record.predicted_completion_at = plan.completion_at
    spec.soft_time_limit = round(settings.time_limit_factor * plan.service_seconds + 60.0, 1)


def _get_record(store, video_id: str) -> JobRecord:
    record = store.get(video_id)
    if record is None:
        raise APIError(404, "video_not_found", f"no video with id {video_id!r}", "video_id")
    return record


@router.post("")
async def create_video(request: Request, api_key: ApiKey) -> JSONResponse:
    try:
        return await _create_video(request, api_key)
    except APIError as error:
        metrics.REJECTIONS.labels(error.code).inc()
        raise


async def _create_video(request: Request, api_key: str) -> JSONResponse:
    settings, store, queue, storage = _services(request)
    fields, image = await _read_create_body(request)
    body = parse_create(fields)
    card = await run_in_threadpool(_find_card, store, body.model or settings.default_model)
    job_id = new_job_id()
    png = _normalise_image(image) if image is not None else None
    spec = resolve_request(body, card, png is not None, job_id, input_key(job_id) if png else None)
    record = JobRecord(spec=spec)
    if card.timing is not None:
        active = await run_in_threadpool(store.active_jobs, card.id)
        _plan_deadline(record, card, active, settings)
    elif card.seconds_per_step:  # a worker without a timing model: no SLA planning, a generous limit
        spec.soft_time_limit = round(settings.time_limit_factor * card.seconds_per_step * spec.steps + 60.0, 1)

    idempotency_key = request.headers.get("idempotency-key")
    body_hash = None
    if idempotency_key:
        canonical = json.dumps(body.model_dump(), sort_keys=True) + (hashlib.sha256(png).hexdigest() if png else "")
        body_hash = hashlib.sha256(canonical.encode()).hexdigest()
        idempotency_key = f"{api_key[:16]}:{idempotency_key}"

    submitted = record

    def submit() -> tuple[JobRecord, bool]:
        if png is not None:
            storage.put_bytes(spec.input_key, png, "image/png")
        record, created = store.create(submitted, idempotency_key, body_hash)
        if created:
            try:
                queue.submit(spec)
            except Exception as error:  # broker down: drop the job rather than leave it queued forever
                store.delete(record.id)
                storage.delete_prefix(f"videos/{record.id}/")
                raise APIError(503, "queue_unavailable", f"could not queue the job: {error}",
                               type="server_error") from None
        return record, created

    try:
        record, created = await run_in_threadpool(submit)
    except IdempotencyConflict as conflict:
        raise APIError(409, "idempotency_key_reused", "Idempotency-Key was already used with a different "
                       f"request body (job {conflict.job_id})", extra={"video_id": conflict.job_id}) from None
    headers = {"openai-poll-after-ms": str(settings.poll_after_ms)}
    if created:
        metrics.SUBMISSIONS.labels(spec.model, spec.tier or "", spec.budget_source).inc()
    else:
        headers["idempotent-replayed"] = "true"
    return JSONResponse(video_object(record), headers=headers)


@router.get("")
def list_videos(
    request: Request,
    api_key: ApiKey,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    store = request.app.state.store
    records, has_more = store.list(limit, after, newest_first=order == "desc")
    data = [video_object(record) for record in records]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


@router.get("/{video_id}")
def retrieve_video(video_id: str, request: Request, response: Response, api_key: ApiKey) -> dict[str, Any]:
    record = _get_record(request.app.state.store, video_id)
    if not record.status.terminal:
        response.headers["openai-poll-after-ms"] = str(request.app.state.settings.poll_after_ms)
    return video_object(record)


@router.delete("/{video_id}")
def delete_video(video_id: str, request: Request, api_key: ApiKey) -> dict[str, Any]:
    """An active job is cancelled (its record stays, status ``cancelled``); a finished one is deleted
    with its files."""
    _, store, _, storage = _services(request)
    record = _get_record(store, video_id)
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
    record = _get_record(store, video_id)
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
