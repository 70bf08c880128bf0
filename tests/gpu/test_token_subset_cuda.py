"""A token subset against a filled K/V cache equals the full forward on those rows, on the GPU.

The subset's queries attend over every token's cached K/V, so with the cache filled at the same state
its rows must be the full forward's up to how differently shaped kernels round: nothing in float32, at
most bf16's own rounding in bf16. A float8 cache quantises the context it holds (three mantissa bits):
it may cost a few percent. A cache kept on the host (pinned CPU memory, one layer's rows copied to the device
as the layer attends) holds the same bytes as one on the device: its results are bit-identical, over one
forward and over a whole sampling run.
"""

import copy

import pytest
import torch

from hsa_core import Conditioning, FlowMatchSchedule, HSAConfig, HSASampler
from hsa_core.adapters.wan import WanAdapter

from .medium import build_wan, in_dtype, job, relative_error

pytestmark = pytest.mark.gpu

SIGMA = 0.6
CACHE_DTYPES = {"bfloat16": torch.bfloat16, "float8_e4m3fn": torch.float8_e4m3fn}


def quarter_of_the_tokens(num_tokens: int, device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randperm(num_tokens, generator=generator)[: num_tokens // 4].sort().values.to(device)


def subset_after_full(adapter, x, branch, active, cache):
    """(full forward that fills ``cache``, the subset's forward against it)."""
    sigma = torch.tensor([SIGMA], device=x.device)
    full = adapter.velocity(x, sigma, branch, kv_cache=cache).float()
    subset = adapter.velocity(x[:, active], sigma, branch, active=active, kv_cache=cache).float()
    return full, subset


def test_float32_subset_equals_the_full_forward_rows(device, no_tf32):
    adapter, inputs = WanAdapter(build_wan(device=device)), job(device=device)
    grid = adapter.token_grid(inputs["latents"].shape)
    branch = adapter.prepare_branch(grid, inputs["prompt"])
    active = quarter_of_the_tokens(grid.num_tokens, device)
    full, subset = subset_after_full(adapter, grid.patchify(inputs["latents"]), branch, active,
                                     adapter.new_kv_cache(grid))
    assert relative_error(subset, full[:, active]) <= 1e-4


@pytest.mark.parametrize("cache_dtype", list(CACHE_DTYPES))
def test_bfloat16_subset_with_a_device_or_host_cache(device, cache_dtype):
    model, inputs = build_wan(device=device), job(device=device)
    exact = WanAdapter(copy.deepcopy(model))
    adapter = WanAdapter(in_dtype(model, torch.bfloat16))
    grid = adapter.token_grid(inputs["latents"].shape)
    x = grid.patchify(inputs["latents"])
    active = quarter_of_the_tokens(grid.num_tokens, device)
    reference = exact.velocity(x, torch.tensor([SIGMA], device=device),
                               exact.prepare_branch(grid, inputs["prompt"]))[:, active]
    branch = adapter.prepare_branch(grid, inputs["prompt"])

    on_device = adapter.new_kv_cache(grid, CACHE_DTYPES[cache_dtype], "device")
    full, subset = subset_after_full(adapter, x, branch, active, on_device)
    rounding = relative_error(full[:, active], reference)  # what bf16 costs the full forward
    print(f"{cache_dtype} cache: bf16 rounding {rounding:.2e}, subset vs full {relative_error(subset, full[:, active]):.2e}"
          f", subset vs fp32 {relative_error(subset, reference):.2e}")
    assert 0 < rounding <= 0.05
    if cache_dtype == "bfloat16":
        assert relative_error(subset, full[:, active]) <= rounding
    else:  # 3 mantissa bits on the cached context: a few percent, not bf16's fraction of one
        assert on_device.nbytes * 2 == adapter.new_kv_cache(grid, torch.bfloat16).nbytes
        assert relative_error(subset, reference) <= max(3 * rounding, 0.05)

    on_host = adapter.new_kv_cache(grid, CACHE_DTYPES[cache_dtype], "host")
    assert on_host.keys[0].device.type == "cpu" and on_host.nbytes == on_device.nbytes
    if device.type == "cuda":
        assert on_host.keys[0].is_pinned()
    full_host, subset_host = subset_after_full(adapter, x, branch, active, on_host)
    assert torch.equal(full_host, full) and torch.equal(subset_host, subset)
    for layer in range(adapter.num_layers):
        assert torch.equal(on_host.keys[layer].view(torch.uint8), on_device.keys[layer].cpu().view(torch.uint8))
        assert torch.equal(on_host.values[layer].view(torch.uint8), on_device.values[layer].cpu().view(torch.uint8))


def test_the_check_can_fail_the_context_changes_the_rows(device):
    """The subset's rows depend on the other tokens' K/V: without them (the no-KV-sync ablation), or with
    the other tokens changed since the cache was filled, they are far from the full forward's."""
    adapter, inputs = WanAdapter(in_dtype(build_wan(device=device), torch.bfloat16)), job(device=device)
    grid = adapter.token_grid(inputs["latents"].shape)
    branch = adapter.prepare_branch(grid, inputs["prompt"])
    x = grid.patchify(inputs["latents"])
    active = quarter_of_the_tokens(grid.num_tokens, device)
    sigma = torch.tensor([SIGMA], device=device)
    cache = adapter.new_kv_cache(grid)
    full, subset = subset_after_full(adapter, x, branch, active, cache)
    alone = adapter.velocity(x[:, active], sigma, branch, active=active)  # no cache: the subset attends to itself
    moved = torch.zeros_like(x)
    moved[:, active] = x[:, active]  # the other tokens moved on, the cache still holds them at x
    fresh = adapter.velocity(moved, sigma, branch)[:, active]
    noise = max(relative_error(subset, full[:, active]), 5e-3)
    print(f"subset vs full {relative_error(subset, full[:, active]):.2e}; without context "
          f"{relative_error(alone, full[:, active]):.2e}; context moved {relative_error(subset, fresh):.2e}")
    assert relative_error(alone, full[:, active]) > 5 * noise
    assert relative_error(subset, fresh) > 5 * noise


@pytest.mark.parametrize("cache_dtype", list(CACHE_DTYPES))
def test_a_host_cache_samples_what_a_device_cache_does(device, cache_dtype):
    """Twelve steps at budget 0.5 with CFG: every layer's rows go to the host and back at every step."""
    adapter, inputs = WanAdapter(in_dtype(build_wan(device=device), torch.bfloat16)), job(device=device)
    grid = adapter.token_grid(inputs["latents"].shape)
    conditioning = Conditioning(inputs["prompt"], inputs["negative"], guidance_scale=5.0)
    results = {}
    for location in ("device", "host"):
        sampler = HSASampler(0.5, HSAConfig(kv_cache_dtype=cache_dtype, kv_cache_location=location))
        results[location] = sampler.sample(adapter, grid.patchify(inputs["latents"]), grid, conditioning,
                                           FlowMatchSchedule(12, 3.0))
    assert results["device"].extra["sparse"] and results["device"].kv_cache_bytes > 0
    assert results["host"].kv_cache_bytes == results["device"].kv_cache_bytes
    assert torch.isfinite(results["device"].tokens).all()
    assert torch.equal(results["host"].tokens, results["device"].tokens)
    assert [s.active_tokens for s in results["host"].steps] == [s.active_tokens for s in results["device"].steps]
