"""ForecastKVCache: stale rows read along their last change, fresh rows as written, memory per layer."""

import torch

from hsa_core.kv_cache import TokenKVCache
from hsa_core.samplers.kv_forecast import ForecastKVCache


def test_stale_rows_are_read_along_their_last_change_and_fresh_rows_as_written():
    cache = ForecastKVCache(TokenKVCache(num_layers=2, batch=1, heads=2, num_tokens=5, head_dim=3,
                                         dtype=torch.float32), layers=1)
    generator = torch.Generator().manual_seed(0)
    first, second, third = (torch.randn(1, 2, 5, 3, generator=generator) for _ in range(3))
    for layer in (0, 1):
        cache.update(layer, first, first, None)
        cache.update(layer, second, second, None)
    cache.reach = torch.tensor([0.5, 0.0, 0.5, 0.0, 1.0])
    active = torch.tensor([1, 3])
    keys, values = cache.update(0, third[:, :, active], third[:, :, active], active)
    expected = second + cache.reach[None, None, :, None] * (second - first)
    expected[:, :, active] = third[:, :, active]
    assert torch.allclose(keys, expected) and torch.allclose(values, expected)
    # the second layer is not forecast: its stale rows read as cached
    keys, _ = cache.update(1, third[:, :, active], third[:, :, active], active)
    plain = second.clone()
    plain[:, :, active] = third[:, :, active]
    assert torch.equal(keys, plain)
    # the rows the fresh ones replaced are the next forecast's starting point
    assert torch.equal(cache.previous_keys[0][:, :, active], second[:, :, active])


def test_memory_is_the_cache_plus_its_forecast_layers():
    plain = TokenKVCache(num_layers=4, batch=1, heads=2, num_tokens=8, head_dim=4, dtype=torch.bfloat16)
    assert ForecastKVCache(plain, layers=1).nbytes == plain.nbytes * 5 // 4
    assert ForecastKVCache(plain, layers=10).nbytes == 2 * plain.nbytes
