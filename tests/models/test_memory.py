"""The K/V cache estimate, the lower-precision caches, the fit check and the OOM-safe decode."""

import pytest
import torch

from hsa_core import HSAConfig, HSASampler
from hsa_core.errors import InsufficientMemoryError
from hsa_core.memory import GIB, KVCacheEstimate, KVCacheFit, check_kv_cache_fits, decode_without_losing_latents
from hsa_core.models import get_model_spec
from hsa_core.models.wan import WanVideoModel

from .tiny import HEIGHT, NUM_FRAMES, WIDTH, build_pipeline, text_embeddings

REQUEST = dict(height=HEIGHT, width=WIDTH, num_frames=NUM_FRAMES, steps=20, seed=5)


def prepared(name="wan2.1-t2v-1.3b"):
    model = WanVideoModel(build_pipeline(name), get_model_spec(name))
    prompt, negative = text_embeddings()
    return model, model.prepare(prompt_embeds=prompt, negative_prompt_embeds=negative, **REQUEST)


def test_the_estimate_is_what_sampling_allocates():
    model, job = prepared()
    sampler = HSASampler(0.5)
    estimate = model.kv_cache_estimate(job, sampler)
    # 2 layers × 48 tokens × width 24 × 2 (K, V) × 4 bytes × 2 guidance branches (CFG)
    assert estimate.total_bytes == 2 * 48 * 24 * 2 * 4 * 2
    assert estimate.describe() == \
        "2 layers × 48 tokens × 24 × 2 (K, V) × 4 B (float32) × 2 guidance branches = 0.00 GiB"
    assert model.denoise(job, sampler).kv_cache_bytes == estimate.total_bytes
    assert model.kv_cache_estimate(job, HSASampler(1.0)) is None  # budget 1 allocates no cache


def test_the_wan_14b_cache_is_the_documented_27_gb():
    estimate = KVCacheEstimate(layers=40, tokens=32760, width=5120, dtype=torch.bfloat16, branches=1)
    assert round(estimate.total_bytes / 1e9, 1) == 26.8


@pytest.mark.parametrize("dtype, bytes_per_value", [("bfloat16", 2), ("float8_e4m3fn", 1)])
def test_lower_precision_caches_shrink_memory_and_stay_close(dtype, bytes_per_value):
    model, job = prepared()
    exact = model.denoise(job, HSASampler(0.5))
    small = model.denoise(job, HSASampler(0.5, HSAConfig(kv_cache_dtype=dtype)))
    assert small.kv_cache_bytes == exact.kv_cache_bytes * bytes_per_value // 4
    assert model.kv_cache_estimate(job, HSASampler(0.5, HSAConfig(kv_cache_dtype=dtype))).total_bytes == \
        small.kv_cache_bytes
    difference = (small.tokens - exact.tokens).abs().max()
    assert 0 < difference < 0.05 * exact.tokens.abs().max()  # the cache was used, and only rounded


def test_float8_cache_saturates_instead_of_overflowing():
    from hsa_core.kv_cache import TokenKVCache

    cache = TokenKVCache(1, 1, 1, 3, 2, torch.float8_e4m3fn)
    key = torch.tensor([[[[1000.0, -1000.0]]]])
    keys, _ = cache.update(0, key, key, torch.tensor([1]))
    assert keys[0, 0, 1].tolist() == [448.0, -448.0] and keys[0, 0, 0].tolist() == [0.0, 0.0]


def test_a_cache_that_cannot_fit_is_refused_with_the_numbers_and_the_ways_out():
    model, job = prepared()
    sampler = HSASampler(0.5)
    # the fp32 cache is 36 864 B and a forward's working memory 12 288 B: with 25 000 B free only a float8
    # cache (9 216 B) fits, so it is the only cache dtype offered (bf16 would need 18 432 + 12 288 B)
    with pytest.raises(InsufficientMemoryError) as error:
        model.denoise(job, sampler, free_bytes=25_000)
    message = str(error.value)
    assert "K/V cache needs 2 layers × 48 tokens × 24 × 2 (K, V) × 4 B (float32) × 2 guidance branches" in message
    assert "options that fit: a float8_e4m3fn K/V cache" in message and "bfloat16" not in message
    assert "host memory" not in message  # a layer's rows on the device plus the forward: 30 720 B
    assert "at most 24 tokens; this request has 48" in message and "budget 1.0 (no K/V cache)" in message
    assert error.value.code == "insufficient_memory"
    with pytest.raises(InsufficientMemoryError, match="nothing smaller fits either"):
        model.denoise(job, sampler, free_bytes=1000)  # not even budget 1.0's forward
    check_kv_cache_fits(model.kv_cache_estimate(job, sampler), 0, torch.device("cpu"), free_bytes=10**6)


def test_the_k_v_forecast_is_counted_and_running_without_it_is_offered():
    model, job = prepared()
    plain = 2 * 48 * 24 * 2 * 4 * 2  # 2 layers × 48 tokens × 24 × (K, V) × 4 B × 2 branches
    one_layer = HSASampler(0.5, HSAConfig(kv_forecast_layers=1))
    estimate = model.kv_cache_estimate(job, one_layer)
    assert estimate.total_bytes == plain * 3 // 2  # the forecast layer's previous rows: one layer more
    assert estimate.describe().startswith("(2 + 1 forecast) layers × 48 tokens")
    assert model.denoise(job, one_layer).kv_cache_bytes == estimate.total_bytes
    every_layer = HSASampler(0.5, HSAConfig(kv_forecast_layers=99))  # more than the model has: all of them
    assert model.kv_cache_estimate(job, every_layer).total_bytes == 2 * plain
    # 50 000 B free: the plain cache and a forward (36 864 + 12 288 B) fit, the forecast (73 728 B) does not
    with pytest.raises(InsufficientMemoryError) as error:
        model.denoise(job, every_layer, free_bytes=50_000)
    assert "no K/V forecast (kv_forecast_layers=0: 0.00 GiB)" in str(error.value)


def test_the_14b_cache_at_720p_suggests_only_what_fits():
    """Wan 14B at 1280×720×81 with CFG: 115.4 GiB in bf16, 57.7 GiB in float8 — on a GPU with 60 GiB free
    after loading, float8 does not fit either and must not be suggested."""
    estimate = KVCacheEstimate(layers=40, tokens=75600, width=5120, dtype=torch.bfloat16, branches=2)
    assert round(estimate.total_bytes / GIB, 1) == 115.4
    working = 4 * GIB
    tight = KVCacheFit(estimate, working, free_bytes=60 * GIB, host_free_bytes=200 * GIB)
    assert not tight.fits
    options = tight.alternatives()
    assert not any("float8" in option for option in options)
    assert any("host memory" in option for option in options)
    assert any("at most 38003 tokens" in option for option in options)
    assert options[-1] == "budget 1.0 (no K/V cache)"
    roomy = KVCacheFit(estimate, working, free_bytes=62 * GIB, host_free_bytes=64 * GIB)
    assert any(option.startswith("a float8_e4m3fn K/V cache (57.68 GiB)") for option in roomy.alternatives())
    assert not any("host memory" in option for option in roomy.alternatives())  # 115 GiB > 64 GiB of host
    on_host = KVCacheFit(estimate, working, free_bytes=60 * GIB, location="host", host_free_bytes=200 * GIB)
    assert on_host.fits  # one layer's rows (2.9 GiB) and the forward on the device, the rest on the host


def test_a_host_cache_computes_what_a_device_cache_does():
    model, job = prepared()
    on_device = model.denoise(job, HSASampler(0.5))
    on_host = model.denoise(job, HSASampler(0.5, HSAConfig(kv_cache_location="host")))
    assert on_host.kv_cache_bytes == on_device.kv_cache_bytes
    assert torch.equal(on_host.tokens, on_device.tokens)


class FlakyVAE(torch.nn.Module):
    """Runs out of memory untiled on its first device; records how each decode ran."""

    def __init__(self, fails_tiled: bool):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.use_tiling, self.fails_tiled, self.calls = False, fails_tiled, []

    def enable_tiling(self):
        self.use_tiling = True

    def disable_tiling(self):
        self.use_tiling = False

    def decode_latents(self, latents, device_has_room: bool):
        self.calls.append(("tiled" if self.use_tiling else "untiled", self.weight.device.type))
        if not device_has_room and not (self.use_tiling and not self.fails_tiled):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return latents * 2


@pytest.mark.parametrize("fails_tiled, expected_path", [(False, "tiled"), (True, "cpu")])
def test_decode_retries_tiled_then_on_cpu_without_losing_the_latents(fails_tiled, expected_path, monkeypatch):
    vae = FlakyVAE(fails_tiled)
    latents = torch.ones(2)
    moved = []
    monkeypatch.setattr(vae, "to", lambda device: moved.append(str(device)) or vae)
    fallbacks = []
    decode = lambda: vae.decode_latents(latents, device_has_room=bool(moved) and moved[-1] == "cpu")  # noqa: E731
    frames, path = decode_without_losing_latents(vae, decode, fallbacks.append)
    assert path == expected_path and torch.equal(frames, latents * 2)
    assert fallbacks == (["tiled"] if expected_path == "tiled" else ["tiled", "cpu"])
    assert not vae.use_tiling  # tiling is switched back off for the next job
    if expected_path == "cpu":
        assert moved == ["cpu", "cpu"]  # to the CPU, and back to where it was (the test VAE lives on the CPU)


def test_decode_errors_other_than_out_of_memory_propagate():
    vae = FlakyVAE(False)

    def broken():
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        decode_without_losing_latents(vae, broken)
