"""The API's request and response shapes: ``VideoCreate`` in, the OpenAI video object out.

A create request is validated twice: by type here (``VideoCreate``: 422 on unknown fields, wrong
types, values outside their domain), then against the chosen model's limits (``resolve_request``:
size, frames, steps, budget feasibility, image required or refused).
"""

from __future__ import annotations

import math
import secrets
import time
import unicodedata
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from jobs.records import MAX_STEPS, JobSpec, ModelCard, frames_for_seconds
from jobs.sla import DEFAULT_TIER, TIERS

from .errors import APIError

MAX_SEED = 2**31 - 1
PROMPT_WHITESPACE = "\t\n\r"
# what _printable_text enforces, for the OpenAPI schema: no control characters but tab, newline, return
PRINTABLE = {"pattern": "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$"}
# validation errors with their own error code (any other is ``invalid_value``)
OWN_ERROR_CODES = ("invalid_prompt",)


class VideoCreate(BaseModel):
    """``POST /v1/videos``: OpenAI's fields plus the HSA extensions (extra body fields in the SDK)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    prompt: str = Field(min_length=1, json_schema_extra=PRINTABLE)
    model: str | None = None
    seconds: str | None = None
    size: str | None = None
    # extensions
    budget: float | None = Field(None, gt=0, le=1, description="fraction of the full sampler's compute")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    guidance_scale: float | None = Field(None, ge=0, le=30)
    guidance_scale_2: float | None = Field(None, ge=0, le=30, description="two-expert models: the low-noise expert's")
    negative_prompt: str = Field("", json_schema_extra=PRINTABLE)
    num_frames: int | None = Field(None, ge=1)
    webhook_url: str | None = None
    deadline_s: float | None = Field(None, gt=0, le=7 * 24 * 3600,
                                     description="seconds from submission to a downloadable video")
    tier: Literal["interactive", "standard", "batch"] | None = None
    best_effort: bool | None = None  # accept at the smallest budget when the deadline cannot be met

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _printable_text(cls, value: str) -> str:
        # any language, emoji and combining marks are welcome; control characters (NUL, escape
        # sequences, …) are no prompt and would reach logs and the text encoder verbatim
        for char in value:
            if unicodedata.category(char) == "Cc" and char not in PROMPT_WHITESPACE:
                raise PydanticCustomError("invalid_prompt", "control character {char} is not allowed",
                                          {"char": f"U+{ord(char):04X}"})
        return value

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value:
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError("must be an http(s) URL")
        return value or None


def parse_create(fields: dict[str, Any], strict: bool = True, schema: type[VideoCreate] = VideoCreate):
    """``fields`` as a create body (or a body of ``schema``, a VideoCreate with more fields): JSON is held
    to its schema's types (``false`` is no seed); form fields are text, so a multipart body
    (``strict=False``) has its numbers parsed."""
    try:
        return schema.model_validate(fields, strict=strict)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        message = "unknown field (not an OpenAI or HSA parameter)" if first["type"] == "extra_forbidden" else first["msg"]
        code = first["type"] if first["type"] in OWN_ERROR_CODES else "invalid_value"
        raise APIError(422, code, f"{param}: {message}", param) from None


def _parse_size(size: str) -> tuple[int, int]:
    width, _, height = size.lower().partition("x")
    return int(width), int(height)


def resolve_request(request: VideoCreate, card: ModelCard, job_id: str, input_key: str | None = None,
                    last_frame_key: str | None = None) -> JobSpec:
    """Fill defaults from the model card and check every value against its limits (422 naming the field).

    ``input_key`` / ``last_frame_key``: where the request's first / last frame is stored, if it sent one."""
    limits = card.limits
    has_image = input_key is not None
    if card.image_input == "required" and not has_image:
        raise APIError(422, "input_reference_required",
                       f"model {card.id!r} is image-to-video only: send an input_reference image", "input_reference")
    if card.image_input == "unsupported" and has_image:
        raise APIError(422, "input_reference_unsupported",
                       f"model {card.id!r} is text-to-video only: it cannot use an input_reference", "input_reference")
    if last_frame_key is not None and card.last_frame_input == "unsupported":
        raise APIError(422, "last_frame_unsupported",
                       f"model {card.id!r} takes no last frame (first-last-frame models do)", "last_frame")
    if last_frame_key is None and card.last_frame_input == "required":
        raise APIError(422, "last_frame_required", f"model {card.id!r} is first-last-frame: send a last_frame "
                       "image besides the input_reference", "last_frame")
    if request.guidance_scale_2 is not None and limits.guidance_scale_2 is None:
        raise APIError(422, "invalid_value", f"guidance_scale_2: model {card.id!r} has one expert; "
                       "guidance_scale_2 is for two-expert models", "guidance_scale_2")
    if len(request.prompt) > limits.max_prompt_chars:
        raise APIError(422, "prompt_too_long", f"prompt: at most {limits.max_prompt_chars} characters", "prompt")
    if len(request.negative_prompt) > limits.max_prompt_chars:
        raise APIError(422, "prompt_too_long", f"negative_prompt: at most {limits.max_prompt_chars} characters",
                       "negative_prompt")

    size = (request.size or limits.default_size).lower()
    if size not in limits.sizes:
        raise APIError(422, "invalid_size", f"size: {size!r} is not offered by {card.id!r}; choose one of "
                       f"{', '.join(limits.sizes)}", "size")
    width, height = _parse_size(size)

    num_frames = request.num_frames
    if request.seconds is not None:
        from_seconds = frames_for_seconds(request.seconds, limits)
        if from_seconds is None:
            raise APIError(422, "invalid_seconds", f"seconds: {request.seconds!r} is not offered by {card.id!r}; "
                           f"choose one of {', '.join(limits.seconds)}", "seconds")
        if num_frames is not None and num_frames != from_seconds:
            raise APIError(422, "invalid_num_frames", f"num_frames: {num_frames} contradicts seconds="
                           f"{request.seconds} ({from_seconds} frames at {limits.fps} fps)", "num_frames")
        num_frames = from_seconds
    num_frames = num_frames or limits.num_frames[0]
    if num_frames not in limits.num_frames:
        raise APIError(422, "invalid_num_frames", f"num_frames: {card.id!r} generates "
                       f"{', '.join(map(str, limits.num_frames))} frames, not {num_frames}", "num_frames")

    steps = request.steps or limits.default_steps
    if steps > limits.max_steps:
        raise APIError(422, "invalid_steps", f"steps: at most {limits.max_steps} for {card.id!r}", "steps")

    shape = card.shape(width, height, num_frames)
    if shape is None:  # every size × frame count on the card has its shape; a card without is malformed
        raise APIError(422, "invalid_size", f"size: {card.id!r} does not serve {num_frames} frames of {size}", "size")
    table = shape.min_budget_i2v if has_image else shape.min_budget_t2v
    min_budget = table[steps] if steps < len(table) else 1.0
    if request.budget is not None and request.budget < 1 and shape.kv_cache_refusal:
        raise APIError(422, "insufficient_memory", f"budget: {shape.kv_cache_refusal}", "budget")
    if request.budget is not None and request.budget < 1 and request.budget < min_budget - 1e-9:
        raise APIError(422, "budget_infeasible", f"budget: {request.budget:g} is below the smallest budget "
                       f"{min_budget:.3f} that {steps} steps allow; raise budget or steps", "budget",
                       extra={"min_budget": round(min_budget, 4)})

    # latency SLA: an explicit deadline or tier is strict (429 when unreachable) unless best_effort;
    # a request with neither gets the default tier, best effort
    tier = TIERS[request.tier or DEFAULT_TIER]
    deadline_s = request.deadline_s or tier.deadline_s
    strict = request.deadline_s is not None or request.tier is not None
    best_effort = (not strict) if request.best_effort is None else request.best_effort
    return JobSpec(
        job_id=job_id, model=card.id, prompt=request.prompt, negative_prompt=request.negative_prompt,
        input_key=input_key, last_frame_key=last_frame_key, width=width, height=height, num_frames=num_frames,
        fps=limits.fps, steps=steps,
        budget=request.budget,
        seed=secrets.randbelow(MAX_SEED) if request.seed is None else request.seed,
        guidance_scale=limits.guidance_scale if request.guidance_scale is None else request.guidance_scale,
        guidance_scale_2=limits.guidance_scale_2 if request.guidance_scale_2 is None else request.guidance_scale_2,
        webhook_url=request.webhook_url, tier=tier.name, priority=tier.priority,
        deadline_at=time.time() + deadline_s, best_effort=best_effort,
        # rounded up: a floor a hair below the sampler's own minimum would be refused as infeasible
        min_budget=math.ceil(min_budget * 10_000) / 10_000,
    )
