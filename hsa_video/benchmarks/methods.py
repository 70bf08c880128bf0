"""The accelerators the Pareto benchmark compares, each with the one knob that sets its speed.

A method turns a knob value into a sampler. The benchmark sweeps the knob on calibration prompts
and picks the value whose measured time fraction lands on each target, so every method is compared
at (nearly) the same wall time, whatever its knob means:

    budget     HSA, its ablations, RAS      compute budget b ∈ (0, 1]
    fraction   fewer uniform steps           share of the reference's steps
    threshold  EasyCache, FirstBlockCache,   skip criterion (larger = faster)
               MagCache
    interval   TaylorSeer                    full pass every n steps (integer)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Method:
    name: str
    knob: str  # budget | fraction | threshold | interval
    build: Callable  # (knob value, context) -> sampler
    sweep: tuple[float, ...] = ()  # knob values measured to map knob → time fraction
    description: str = ""
    knob_from: str | None = None  # not calibrated: runs at this method's knob (an oracle at equal compute)


@dataclass
class MethodContext:
    """What some methods need besides their knob: the HSA config in force, MagCache's ratios."""

    hsa_config: object = None
    mag_ratios: list[float] | None = None


def _hsa(**overrides):
    def build(budget, context: MethodContext):
        from dataclasses import replace

        from hsa_core import HSAConfig, HSASampler

        config = replace(context.hsa_config or HSAConfig(), **overrides)
        return HSASampler(float(budget), config)

    return build


def _fewer(fraction, context):
    from hsa_core.samplers.fewer_steps import FewerStepsSampler

    return FewerStepsSampler(float(fraction))


def _ras(budget, context: MethodContext):
    from hsa_core.samplers.ras import RASSampler

    return RASSampler(float(budget), context.hsa_config)


def _easycache(threshold, context):
    from hsa_core.samplers.easycache import EasyCacheSampler

    return EasyCacheSampler(float(threshold))


def _diffusers(method: str, knob_name: str):
    def build(value, context: MethodContext):
        from hsa_core.samplers.diffusers_cache import DiffusersCacheSampler

        params = {knob_name: int(value) if knob_name == "cache_interval" else float(value)}
        if method == "mag_cache":
            params["mag_ratios"] = context.mag_ratios
        return DiffusersCacheSampler(method, **params)

    return build


BUDGETS = (0.2, 0.3, 0.45, 0.6, 0.8)
THRESHOLDS_EASYCACHE = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
THRESHOLDS_FBC = (0.02, 0.05, 0.1, 0.2, 0.35, 0.6, 1.0)
THRESHOLDS_MAG = (0.02, 0.06, 0.15, 0.3, 0.6, 1.2, 2.4)

METHODS: dict[str, Method] = {m.name: m for m in [
    Method("fewer_steps", "fraction", _fewer, (), "plain Euler with round(f·40) steps, same shift"),
    Method("hsa", "budget", _hsa(), BUDGETS, "HSA, library defaults"),
    Method("hsa_no_kv_sync", "budget", _hsa(kv_sync=False), BUDGETS,
           "ablation: inactive tokens dropped from attention"),
    Method("hsa_frozen_skips", "budget", _hsa(skipped_update="frozen"), BUDGETS,
           "ablation: skipped tokens frozen instead of the cached Euler update"),
    Method("hsa_random_scores", "budget", _hsa(score="random"), BUDGETS,
           "ablation: random scores instead of velocity dynamics"),
    Method("hsa_staggered", "budget", _hsa(stagger_phases=True), BUDGETS,
           "ablation: staggered phases (steady per-step load) instead of aligned"),
    Method("hsa_fresh_context", "budget", _hsa(context="fresh"), BUDGETS,
           "oracle at HSA's budget: every token computed each step for fresh K/V, only active velocities used",
           knob_from="hsa"),
    Method("ras", "budget", _ras, BUDGETS, "RAS-style per-step top-k tokens (arXiv 2502.10389)"),
    Method("easycache", "threshold", _easycache, THRESHOLDS_EASYCACHE,
           "EasyCache-style step reuse (arXiv 2507.02860)"),
    Method("first_block_cache", "threshold", _diffusers("first_block_cache", "threshold"), THRESHOLDS_FBC,
           "diffusers FirstBlockCache hook"),
    Method("mag_cache", "threshold", _diffusers("mag_cache", "threshold"), THRESHOLDS_MAG,
           "diffusers MagCache hook, ratios calibrated on this model"),
    Method("taylorseer", "interval", _diffusers("taylorseer", "cache_interval"), (2, 3, 4, 5, 6, 8, 10),
           "diffusers TaylorSeer hook (order 1)"),
]}


def knob_for_target(method: Method, measured: dict[float, float], target: float) -> float:
    """The knob value whose time fraction (``measured``: knob → time fraction) is closest to ``target``.

    Budgets and thresholds are interpolated piecewise-linearly between measured points (time
    fraction is monotone in them); intervals are integers, so the nearest measured one is taken.
    Targets outside the measured range clamp to the nearest end: the row's measured time fraction
    then shows the miss.
    """
    if method.knob == "fraction":
        return target
    knobs = np.array(sorted(measured))
    fractions = np.array([measured[k] for k in knobs])
    if method.knob == "interval":
        return float(knobs[np.argmin(np.abs(fractions - target))])
    # make time fraction monotone in the knob (timing noise can wiggle it), then invert
    if method.knob == "budget":
        fractions = np.maximum.accumulate(fractions)
    else:  # threshold: time fraction falls as the threshold rises
        fractions = np.minimum.accumulate(fractions)
    order = np.argsort(fractions)
    value = np.interp(target, fractions[order], np.log(knobs)[order])
    return float(np.exp(value))
