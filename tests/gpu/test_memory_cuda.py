"""Device memory on a real GPU: what ``free_device_bytes`` reports, the K/V cache fit check's refusal
listing only ways out that fit (one of them allocated to prove it), and the estimate against what
sampling allocates."""

import re

import pytest
import torch

from hsa_core import Conditioning, FlowMatchSchedule, HSASampler, TokenKVCache
from hsa_core.adapters.wan import WanAdapter
from hsa_core.errors import InsufficientMemoryError
from hsa_core.memory import GIB, KVCacheEstimate, check_kv_cache_fits, free_device_bytes, free_host_bytes

from .medium import MEDIUM_WAN, build_wan, in_dtype, job

pytestmark = pytest.mark.gpu

MIB = 2**20
WORKING = 512 * MIB
# Wan 14B's cache geometry: 40 layers, width 5 120 (40 heads of 128), CFG's two branches
LAYERS, HEADS, HEAD_DIM, BRANCHES = 40, 40, 128, 2


def estimate_of(cache_bytes: float, dtype=torch.bfloat16) -> KVCacheEstimate:
    """The 14B-shaped estimate with about ``cache_bytes`` in ``dtype``."""
    per_token = KVCacheEstimate(LAYERS, 1, HEADS * HEAD_DIM, dtype, BRANCHES).total_bytes
    return KVCacheEstimate(LAYERS, int(cache_bytes // per_token), HEADS * HEAD_DIM, dtype, BRANCHES)


@pytest.fixture
def released(cuda_only, device):
    """No tensor of an earlier test left holding memory: the numbers below are this test's own."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    yield
    torch.cuda.empty_cache()


def test_free_bytes_follow_allocations_and_count_the_allocators_unused_blocks(device, released):
    total = torch.cuda.get_device_properties(device).total_memory
    before = free_device_bytes(device)
    assert 0 < before <= total
    block = torch.empty(GIB, dtype=torch.uint8, device=device)
    assert abs(before - free_device_bytes(device) - GIB) <= 64 * MIB
    del block  # back to the caching allocator, still reserved: free for this process's next job
    assert torch.cuda.memory_reserved(device) >= GIB
    assert abs(free_device_bytes(device) - before) <= 64 * MIB


def test_a_cache_three_times_the_free_memory_lists_only_what_fits(device, released):
    free = free_device_bytes(device)
    estimate = estimate_of(3 * free)  # a float8 cache is still 1.5× the free memory
    with pytest.raises(InsufficientMemoryError) as refused:
        check_kv_cache_fits(estimate, WORKING, device)
    message = str(refused.value)
    print(message)
    assert "float8_e4m3fn K/V cache" not in message
    host = free_host_bytes()
    if host is not None and host < estimate.total_bytes:
        assert "host memory (" not in message
    assert "budget 1.0 (no K/V cache)" in message
    fewer = re.search(r"at most (\d+) tokens; this request has (\d+)", message)
    assert fewer and int(fewer.group(2)) == estimate.tokens
    tokens = int(fewer.group(1))
    smaller = KVCacheEstimate(LAYERS, tokens, HEADS * HEAD_DIM, torch.bfloat16, BRANCHES)
    # the cache and a forward's working memory both shrink with the tokens
    assert smaller.total_bytes + WORKING * tokens / estimate.tokens <= free_device_bytes(device) + MIB


def test_the_float8_cache_it_offers_fits_on_the_device(device, released):
    """bf16 at 1.5× the free memory is refused with a float8 cache among the options; that cache allocates."""
    free = free_device_bytes(device)
    estimate = estimate_of(1.5 * free)
    with pytest.raises(InsufficientMemoryError, match="a float8_e4m3fn K/V cache"):
        check_kv_cache_fits(estimate, WORKING, device)
    offered = KVCacheEstimate(LAYERS, estimate.tokens, HEADS * HEAD_DIM, torch.float8_e4m3fn, BRANCHES)
    check_kv_cache_fits(offered, WORKING, device)  # no refusal
    caches = [TokenKVCache(LAYERS, 1, HEADS, offered.tokens, HEAD_DIM, torch.float8_e4m3fn, device)
              for _ in range(BRANCHES)]
    assert sum(cache.nbytes for cache in caches) == offered.total_bytes
    assert torch.cuda.memory_allocated(device) >= offered.total_bytes
    del caches


def test_the_estimate_is_what_sampling_allocates(device):
    adapter, inputs = WanAdapter(in_dtype(build_wan(device=device), torch.bfloat16)), job(device=device)
    grid = adapter.token_grid(inputs["latents"].shape)
    conditioning = Conditioning(inputs["prompt"], inputs["negative"], guidance_scale=5.0)
    estimate = KVCacheEstimate(MEDIUM_WAN["num_layers"], grid.num_tokens, adapter.width, torch.bfloat16, BRANCHES)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
    result = HSASampler(0.5).sample(adapter, grid.patchify(inputs["latents"]), grid, conditioning,
                                    FlowMatchSchedule(12, 3.0))
    assert result.kv_cache_bytes == estimate.total_bytes
    if device.type == "cuda":
        assert torch.cuda.max_memory_allocated(device) - start >= estimate.total_bytes
