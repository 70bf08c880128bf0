"""What clients see of a job and of a model: the OpenAI video and model objects, with HSA's fields.

The gateway answers with these (its response models, so ``/openapi.json`` describes them) and the
workers send the video object in webhook events; one definition serves both.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from .records import JobRecord, JobStatus, ModelCard


class VideoError(BaseModel):
    code: str
    message: str


class VideoObject(BaseModel):
    """The OpenAI video object; the fields after ``remixed_from_video_id`` are HSA's extensions."""

    id: str
    object: Literal["video"] = "video"
    model: str
    status: Literal["queued", "in_progress", "completed", "failed", "cancelled"]
    progress: int = Field(ge=0, le=100)
    created_at: int
    completed_at: int | None
    expires_at: int | None
    error: VideoError | None
    prompt: str
    seconds: str
    size: str
    remixed_from_video_id: str | None = None
    num_frames: int
    fps: int
    steps: int
    seed: int
    guidance_scale: float | None
    guidance_scale_2: float | None
    image_to_video: bool
    last_frame: bool
    budget: float = Field(description="the compute budget the job runs (or ran) with")
    budget_source: Literal["explicit", "sla"]
    achieved_compute_fraction: float | None
    tier: str | None
    started_at: float | None = Field(description="unix seconds, millisecond precision")
    deadline_at: int | None
    predicted_start_at: int | None = Field(description="while queued: when the planner expects a worker to start it")
    predicted_completion_at: int | None
    sla_met: bool | None
    token_fraction: float | None
    shadow_reference: dict[str, float] | None = Field(
        description="PSNR / SSIM against the same job at budget 1.0, for sampled jobs (HSA_SHADOW_SAMPLE_RATE)")
    timings: dict[str, float] = Field(description="seconds per stage")
    attempts: int
    webhook: dict[str, Any] | None

    @classmethod
    def of(cls, record: JobRecord) -> "VideoObject":
        spec, completed = record.spec, record.status == JobStatus.completed
        return cls(
            id=spec.job_id,
            model=spec.model,
            status=record.status.value,
            progress=100 if completed else min(99, int(record.progress)),
            created_at=int(record.created_at),
            completed_at=_timestamp(record.completed_at),
            expires_at=_timestamp(record.expires_at),
            error=record.error.model_dump() if record.error else None,
            prompt=spec.prompt,
            seconds=f"{spec.num_frames / spec.fps:g}",
            size=f"{spec.width}x{spec.height}",
            num_frames=spec.num_frames,
            fps=spec.fps,
            steps=spec.steps,
            seed=spec.seed,
            guidance_scale=spec.guidance_scale,
            guidance_scale_2=spec.guidance_scale_2,
            image_to_video=spec.input_key is not None,
            last_frame=spec.last_frame_key is not None,
            budget=record.stats.get("budget", record.plan.budget),
            budget_source=spec.budget_source,
            achieved_compute_fraction=record.stats.get("achieved_compute_fraction"),
            tier=spec.tier,
            started_at=None if record.started_at is None else round(record.started_at, 3),
            deadline_at=_timestamp(spec.deadline_at),
            predicted_start_at=_predicted_start(record),
            predicted_completion_at=_timestamp(record.plan.predicted_completion_at),
            sla_met=(record.completed_at <= spec.deadline_at) if completed and spec.deadline_at is not None else None,
            token_fraction=record.stats.get("token_fraction"),
            shadow_reference=record.stats.get("shadow_reference"),
            timings=record.timings,
            attempts=record.attempts,
            webhook=record.webhook,
        )


def video_object(record: JobRecord) -> dict[str, Any]:
    """The video object as JSON-ready data (webhook events)."""
    return VideoObject.of(record).model_dump(mode="json")


def _predicted_start(record: JobRecord) -> int | None:
    plan = record.plan
    if record.status != JobStatus.queued or plan.predicted_completion_at is None or plan.predicted_service_seconds is None:
        return None
    return int(plan.predicted_completion_at - plan.predicted_service_seconds)


def _timestamp(value: float | None) -> int | None:
    return None if value is None else int(value)


class ModelLimitsObject(BaseModel):
    sizes: list[str]
    default_size: str
    seconds: list[str]
    num_frames: list[int]
    fps: int
    max_steps: int
    default_steps: int
    guidance_scale: float
    guidance_scale_2: float | None
    max_prompt_chars: int
    max_prompt_tokens: int | None
    full_budget_only: dict[str, str] = Field(
        description="sizes × frame counts (WIDTHxHEIGHTxFRAMES) where a budget below 1 is refused, and why")


class ModelObject(BaseModel):
    """The OpenAI model object, with what the model's live workers serve."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "hsa-video"
    family: str
    description: str
    image_input: Literal["optional", "required", "unsupported"]
    last_frame_input: Literal["required", "unsupported"]
    audio: bool
    workers: int
    seconds_per_step: float | None
    runtime: dict[str, str]
    limits: ModelLimitsObject

    @classmethod
    def of(cls, card: ModelCard) -> "ModelObject":
        limits = card.limits
        return cls(
            id=card.id, family=card.family, description=card.description, image_input=card.image_input,
            last_frame_input=card.last_frame_input, audio=card.audio, workers=card.workers,
            seconds_per_step=card.seconds_per_step, runtime=card.runtime,
            limits=ModelLimitsObject(
                sizes=limits.sizes, default_size=limits.default_size, seconds=limits.seconds,
                num_frames=limits.num_frames, fps=limits.fps, max_steps=limits.max_steps,
                default_steps=limits.default_steps, guidance_scale=limits.guidance_scale,
                guidance_scale_2=limits.guidance_scale_2, max_prompt_chars=limits.max_prompt_chars,
                max_prompt_tokens=limits.max_prompt_tokens,
                full_budget_only={key: shape.kv_cache_refusal for key, shape in card.shapes.items()
                                  if shape.kv_cache_refusal}),
        )
