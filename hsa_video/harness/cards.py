"""Model cards for a gateway that runs no worker (tests, the fuzz and load benchmarks): it validates
and plans against them exactly as against a live worker's."""

from jobs.records import ModelCard, ModelLimits, ShapeInfo, shape_key
from jobs.sla import TimingModel

STAND_IN_TIMING = TimingModel(step_seconds_fixed=0.01, step_seconds_per_budget=0.04, job_seconds_fixed=0.3)


def make_card(model="tiny", image_input="optional", seconds_per_step=0.05, timing: TimingModel | None = None,
              sizes=("32x32", "128x128"), num_frames=(16,), min_t2v=0.3, min_i2v=0.28, workers=1,
              kv_cache_refusals: dict[str, str] | None = None, **card_fields) -> ModelCard:
    """A card serving ``sizes`` × ``num_frames``, every shape with ``timing`` and flat minimum budgets."""
    shapes = {}
    for size in sizes:
        width, height = map(int, size.split("x"))
        for frames in num_frames:
            key = shape_key(width, height, frames)
            refusal = (kv_cache_refusals or {}).get(key)
            shapes[key] = ShapeInfo(tokens=width * height // 64 * frames, timing=timing,
                                    min_budget_t2v=[1.0] + [1.0 if refusal else min_t2v] * 100,
                                    min_budget_i2v=[1.0] + [1.0 if refusal else min_i2v] * 100,
                                    kv_cache_refusal=refusal)
    return ModelCard(
        id=model, family="wan", image_input=image_input, seconds_per_step=seconds_per_step, workers=workers,
        limits=ModelLimits(sizes=list(sizes), num_frames=list(num_frames), fps=8, max_steps=100, default_steps=40,
                           default_size="128x128" if "128x128" in sizes else sizes[0], guidance_scale=4.0),
        shapes=shapes, **card_fields,
    )


def stand_in_card(workers: int = 1) -> ModelCard:
    """The tiny model's card with a timing model."""
    return make_card(timing=STAND_IN_TIMING, sizes=("32x32", "64x64", "128x128", "256x256"), min_t2v=0.2,
                     min_i2v=0.2, workers=workers)
