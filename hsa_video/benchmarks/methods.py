"""The accelerators the Pareto benchmark compares, each with the one knob that sets its speed.

A method turns a knob value into a sampler. The benchmark sweeps the knob on calibration prompts,
measures each value's time fraction and compute fraction, and picks the value that lands on each
target, so every method is compared at (nearly) the same wall time and at the same compute,
whatever its knob means:

    budget     HSA, its variants, RAS        compute budget b ∈ (0, 1] (its compute fraction)
    fraction   fewer uniform steps           share of the reference's steps (its compute fraction)
    threshold  EasyCache, FirstBlockCache,   skip criterion (larger = faster)
               MagCache
    interval   TaylorSeer                    full pass every n steps (integer)

``DEFAULT_METHODS`` is what a plain ``hsa-video bench pareto`` runs; the ablations are there to be
named with ``--methods``.
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


def _hsa(paper: bool = False, **overrides):
    """HSA with ``overrides`` on the config in force (the defaults, or the tuned config for ``hsa_tuned``);
    ``paper`` starts from ``HSAConfig.paper()`` instead."""
    def build(budget, context: MethodContext):
        from dataclasses import replace

        from hsa_core import HSAConfig, HSASampler

        config = HSAConfig.paper() if paper else context.hsa_config or HSAConfig()
        return HSASampler(float(budget), replace(config, **overrides))

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


BUDGETS = (0.15, 0.2, 0.3, 0.45, 0.6, 0.8)
THRESHOLDS_EASYCACHE = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
THRESHOLDS_FBC = (0.02, 0.05, 0.1, 0.2, 0.35, 0.6, 1.0)
THRESHOLDS_MAG = (0.02, 0.06, 0.15, 0.3, 0.6, 1.2, 2.4)
EVERY_LAYER = 1 << 16  # kv_forecast_layers above any model's depth: every layer

METHODS: dict[str, Method] = {m.name: m for m in [
    Method("fewer_steps", "fraction", _fewer, (), "plain Euler with round(f·40) steps, same shift"),
    Method("hsa", "budget", _hsa(), BUDGETS,
           "HSA, library defaults (extrapolated skipped tokens, log-signal step split)"),
    Method("hsa_paper", "budget", _hsa(paper=True), BUDGETS,
           "HSA as the paper describes it: zero-order cached Euler, budget spread evenly, 10%/5% windows"),
    Method("hsa_uniform_rates", "budget", _hsa(rate_exponent=0.0), BUDGETS,
           "score-free control: the defaults with rate exponent 0 (every token the plan's rate)"),
    Method("hsa_kv_forecast", "budget", _hsa(kv_forecast_layers=EVERY_LAYER), BUDGETS,
           "the defaults plus every layer's K/V forecast for skipped tokens (twice the K/V cache)"),
    Method("hsa_fresh_context", "budget", _hsa(context="fresh"), BUDGETS,
           "oracle at HSA's budget: every token computed each step for fresh K/V, only active velocities used",
           knob_from="hsa"),
    Method("hsa_cached_euler", "budget", _hsa(skipped_update="cached_euler"), BUDGETS,
           "ablation: the defaults with the zero-order hold instead of the extrapolation"),
    Method("hsa_even_split", "budget", _hsa(step_budget="even"), BUDGETS,
           "ablation: the defaults with the budget spread evenly over the window"),
    Method("hsa_no_kv_sync", "budget", _hsa(kv_sync=False), BUDGETS,
           "ablation: inactive tokens dropped from attention"),
    Method("hsa_frozen_skips", "budget", _hsa(skipped_update="frozen"), BUDGETS,
           "ablation: skipped tokens frozen instead of moved"),
    Method("hsa_random_scores", "budget", _hsa(score="random"), BUDGETS,
           "ablation: random scores instead of velocity dynamics (not a fair control: random rates lose "
           "to uniform ones by Jensen; see hsa_uniform_rates)"),
    Method("hsa_staggered", "budget", _hsa(stagger_phases=True), BUDGETS,
           "ablation: staggered phases (steady per-step load) instead of aligned"),
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

DEFAULT_METHODS = ("fewer_steps", "hsa", "hsa_paper", "hsa_uniform_rates", "hsa_kv_forecast", "hsa_fresh_context",
                   "ras", "easycache", "first_block_cache", "mag_cache", "taylorseer")


def knob_for_target(method: Method, measured: dict[float, float], target: float) -> float:
    """The knob value whose measured fraction (``measured``: knob → time or compute fraction) is closest to
    ``target``.

    Budgets and thresholds are interpolated piecewise-linearly between measured points (the fraction
    is monotone in them); intervals are integers, so the nearest measured one is taken. Targets
    outside the measured range clamp to the nearest end: the row's measured fraction then shows the
    miss.
    """
    if method.knob == "fraction":
        return target
    knobs = np.array(sorted(measured))
    fractions = np.array([measured[k] for k in knobs])
    if method.knob == "interval":
        return float(knobs[np.argmin(np.abs(fractions - target))])
    if len(knobs) == 1:
        return float(knobs[0])
    # make time fraction monotone in the knob (timing noise can wiggle it), then invert
    if method.knob == "budget":
        fractions = np.maximum.accumulate(fractions)
    else:  # threshold: time fraction falls as the threshold rises
        fractions = np.minimum.accumulate(fractions)
    order = np.argsort(fractions)
    value = np.interp(target, fractions[order], np.log(knobs)[order])
    return float(np.exp(value))
