"""What a job is, on the wire and at rest: the queue message, the stored record, the model card.

Everything here is plain pydantic (no torch), shared by the gateway and the workers:

- ``JobSpec``   what to generate, resolved and validated by the gateway (JSON only, never pickle).
- ``JobRecord`` the job's state in the job store: status, progress, timings, stats, error.
- ``ModelCard`` what a live worker serves and the limits the gateway validates requests against.
"""

from __future__ import annotations

import re
import secrets
import time
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .sla import JobPlan, TimingModel

JOB_SPEC_VERSION = 1
MAX_STEPS = 100  # denoising steps a request may ask for; every model card's max_steps


class JobStatus(str, Enum):
    queued = "queued"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.completed, JobStatus.failed, JobStatus.cancelled)


JOB_ID_PATTERN = re.compile(r"video_[0-9a-f]{8,40}")


def new_job_id() -> str:
    # OpenAI-style prefix; time-ordered so ids sort like creation times within a second
    return f"video_{int(time.time() * 1000):x}{secrets.token_hex(8)}"


def is_job_id(value: str) -> bool:
    """Whether ``value`` has the shape of our ids: anything else names no job (and never reaches a
    store key or an object key)."""
    return JOB_ID_PATTERN.fullmatch(value) is not None


def output_key(job_id: str) -> str:
    """Deterministic object key: a re-delivered job overwrites the same object (idempotent)."""
    return f"videos/{job_id}/video.mp4"


def input_key(job_id: str) -> str:
    return f"videos/{job_id}/input.png"


def latents_key(job_id: str) -> str:
    """Where a job whose decoding failed keeps its sampled latents (``torch.save``)."""
    return f"videos/{job_id}/latents.pt"


def last_frame_key(job_id: str) -> str:
    return f"videos/{job_id}/last_frame.png"


def shape_key(width: int, height: int, num_frames: int) -> str:
    """How a served clip shape is named in a model card: ``WIDTHxHEIGHTxFRAMES``."""
    return f"{width}x{height}x{num_frames}"


class JobSpec(BaseModel):
    """The request, resolved and validated by the gateway: everything a worker needs to know of what to
    generate. It never changes; how the job runs (its budget, its time limit) is its ``JobPlan``."""

    model_config = ConfigDict(frozen=True)

    version: int = JOB_SPEC_VERSION
    job_id: str
    model: str
    prompt: str
    negative_prompt: str = ""
    input_key: str | None = None  # object key of the first frame (I2V)
    last_frame_key: str | None = None  # object key of the last frame (first-last-frame models)
    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    budget: float | None = None  # the request's own budget; None: chosen for the deadline (the plan's)
    seed: int
    guidance_scale: float | None = None  # None: the model's default
    guidance_scale_2: float | None = None  # two-expert models: the low-noise expert's; None: the model's default
    webhook_url: str | None = None
    # latency SLA (jobs/sla.py)
    tier: str | None = None
    priority: int = 3  # queue priority, lower first
    deadline_at: float | None = None  # unix time the video should be downloadable by
    min_budget: float = 0.0  # floor for re-planning (the smallest feasible budget)
    best_effort: bool = True  # accepted even when the deadline looked unreachable

    @property
    def budget_source(self) -> str:
        """"explicit" (the request set the budget) or "sla" (the planner chooses it for the deadline)."""
        return "sla" if self.budget is None else "explicit"


class ErrorInfo(BaseModel):
    code: str
    message: str


class JobRecord(BaseModel):
    """A job's state in the job store. ``status`` only moves forward (queued → in_progress → terminal)."""

    spec: JobSpec
    plan: JobPlan = None  # how it runs; a record made without one runs at the request's budget (or 1.0)
    owner: str = ""  # digest of the API key that created the job ("" while the API is open); not shown
    status: JobStatus = JobStatus.queued
    progress: float = 0.0  # 0..100, from the sampler's steps
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    attempts: int = 0
    # the queue entry: a job published again (its message was lost) gets a new generation, and a worker
    # runs only a message of the job's current one
    generation: int = 1
    published_at: float | None = None
    error: ErrorInfo | None = None
    output_key: str | None = None
    output_bytes: int | None = None
    timings: dict[str, float] = Field(default_factory=dict)  # seconds per stage
    stats: dict[str, Any] = Field(default_factory=dict)  # sampler figures: achieved compute fraction, …
    webhook: dict[str, Any] | None = None  # delivery outcome

    @model_validator(mode="after")
    def _plan_of_its_own(self) -> "JobRecord":
        if self.plan is None:
            self.plan = JobPlan(budget=1.0 if self.spec.budget is None else self.spec.budget)
        return self

    @property
    def id(self) -> str:
        return self.spec.job_id


class ModelLimits(BaseModel):
    sizes: list[str]  # "WIDTHxHEIGHT"
    num_frames: list[int]
    fps: int
    max_steps: int
    default_steps: int
    default_size: str
    guidance_scale: float
    guidance_scale_2: float | None = None  # two-expert models: the low-noise expert's default
    max_prompt_chars: int = 2000
    max_prompt_tokens: int | None = None  # the text encoder's window: longer prompts are cut there

    @property
    def seconds(self) -> list[str]:
        return [_seconds_label(frames, self.fps) for frames in self.num_frames]


class ShapeInfo(BaseModel):
    """What a worker knows of one clip shape it serves (``shape_key``): its cost and its memory."""

    tokens: int  # latent tokens the transformer denoises
    timing: TimingModel | None = None  # service-time model for SLA budgets (jobs/sla.py)
    # smallest feasible budget per step count (index = steps), for T2V and I2V; the gateway rejects
    # budgets below it with a 422 instead of queueing a job that must fail (not shown by /v1/models)
    min_budget_t2v: list[float] = Field(default_factory=list)
    min_budget_i2v: list[float] = Field(default_factory=list)
    # why a budget below 1 cannot run at this shape (HSA's K/V cache does not fit the worker's free
    # memory), with the options that would fit; None: it can. Such a shape's minimum budget is 1.
    kv_cache_refusal: str | None = None


class ModelCard(BaseModel):
    """What one live worker pool serves; registered with a heartbeat, listed by ``GET /v1/models``."""

    id: str
    family: str  # adapter family: "wan", "ltx2"
    description: str = ""
    image_input: str  # "optional" (T2V + I2V), "required" (I2V only) or "unsupported" (T2V only)
    last_frame_input: str = "unsupported"  # "required" (first-last-frame models) or "unsupported"
    audio: bool = False  # the clip carries a generated soundtrack
    limits: ModelLimits
    shapes: dict[str, ShapeInfo] = Field(default_factory=dict)  # by shape_key: every size × frame count served
    runtime: dict[str, str] = Field(default_factory=dict)  # device, dtypes, placements: what the operator chose
    seconds_per_step: float | None = None  # full budget, at the default size and frame count
    # jobs/s recently submitted for this model (the last minute's, at the worker's last heartbeat):
    # the gateway caps SLA budgets with it as the workers do at job start, so its predictions match
    arrival_rate: float | None = None
    workers: int = 1

    def shape(self, width: int, height: int, num_frames: int) -> ShapeInfo | None:
        return self.shapes.get(shape_key(width, height, num_frames))

    @property
    def timed(self) -> bool:
        """Whether the SLA planner can plan this model's jobs (its shapes carry timing models)."""
        return any(shape.timing is not None for shape in self.shapes.values())


def _seconds_label(frames: int, fps: int) -> str:
    seconds = frames / fps
    return f"{seconds:g}"


def frames_for_seconds(seconds: str, limits: ModelLimits) -> int | None:
    for frames in limits.num_frames:
        if _seconds_label(frames, limits.fps) == str(seconds).strip():
            return frames
    return None
