"""The Wan adapter against diffusers' own forward, and the token-subset forward against the full one."""

import pytest
import torch

from hsa_core import Conditioning, EulerSampler, FlowMatchSchedule, GridError, UnsupportedModelError
from hsa_core.adapters.wan import WanAdapter

from .tiny import TINY_WAN, build_tiny_wan


def diffusers_velocity(model, latents, sigma, text):
    with torch.no_grad():
        return model(
            hidden_states=latents, timestep=torch.tensor([sigma * 1000]), encoder_hidden_states=text, return_dict=False
        )[0]


def test_full_forward_equals_diffusers_forward(wan_adapter, tiny_wan_weights, job):
    grid = wan_adapter.token_grid(job["latents"].shape)
    branch = wan_adapter.prepare_branch(grid, job["prompt"])
    ours = wan_adapter.velocity(grid.patchify(job["latents"]), torch.tensor([0.7]), branch)
    reference = diffusers_velocity(tiny_wan_weights, job["latents"], 0.7, job["prompt"])
    assert (grid.unpatchify(ours) - reference).abs().max() <= 1e-5


def test_model_still_works_in_diffusers_after_processors_are_swapped(wan_adapter, tiny_wan_weights, job):
    swapped = diffusers_velocity(wan_adapter.transformer, job["latents"], 0.3, job["prompt"])
    stock = diffusers_velocity(tiny_wan_weights, job["latents"], 0.3, job["prompt"])
    assert (swapped - stock).abs().max() <= 1e-5


def test_per_token_timesteps_equal_the_broadcast_timestep(wan_adapter, job):
    grid = wan_adapter.token_grid(job["latents"].shape)
    branch = wan_adapter.prepare_branch(grid, job["prompt"])
    x = grid.patchify(job["latents"])
    broadcast = wan_adapter.velocity(x, torch.tensor([0.4]), branch)
    per_token = wan_adapter.velocity(x, torch.full((1, grid.num_tokens), 0.4), branch)
    assert (broadcast - per_token).abs().max() <= 1e-6


def test_per_token_timesteps_match_diffusers_ti2v_path(wan_adapter, tiny_wan_weights, job):
    """Wan 2.2 TI2V: first-frame tokens at timestep 0, the rest at t (diffusers' expand_timesteps)."""
    grid = wan_adapter.token_grid(job["latents"].shape)
    branch = wan_adapter.prepare_branch(grid, job["prompt"])
    first_frame = grid.frame_mask([0])
    sigma = torch.where(first_frame, 0.0, 0.6).unsqueeze(0)  # (1, N)
    ours = wan_adapter.velocity(grid.patchify(job["latents"]), sigma, branch)
    with torch.no_grad():
        reference = tiny_wan_weights(
            hidden_states=job["latents"], timestep=sigma * 1000, encoder_hidden_states=job["prompt"], return_dict=False
        )[0]
    assert (grid.unpatchify(ours) - reference).abs().max() <= 1e-5


@pytest.mark.parametrize("subset", [[0], [3, 17, 18, 40], list(range(0, 48, 3)), list(range(48))])
def test_subset_forward_with_fresh_cache_equals_full_forward_rows(wan_adapter, job, subset):
    grid = wan_adapter.token_grid(job["latents"].shape)
    branch = wan_adapter.prepare_branch(grid, job["prompt"])
    x = grid.patchify(job["latents"])
    sigma = torch.tensor([0.55])
    cache = wan_adapter.new_kv_cache(grid)
    full = wan_adapter.velocity(x, sigma, branch, kv_cache=cache)  # fills the cache at this state
    active = torch.tensor(subset)
    partial = wan_adapter.velocity(x[:, active], sigma, branch, active=active, kv_cache=cache)
    assert partial.shape == (1, len(subset), grid.token_dim)
    assert (partial - full[:, active]).abs().max() <= 1e-5


def test_subset_forward_sees_stale_context_through_the_cache(wan_adapter, job):
    """Active tokens attend to the *cached* K/V of inactive tokens, not to their current state."""
    grid = wan_adapter.token_grid(job["latents"].shape)
    branch = wan_adapter.prepare_branch(grid, job["prompt"])
    x = grid.patchify(job["latents"])
    sigma = torch.tensor([0.5])
    active = torch.arange(0, 48, 2)
    cache = wan_adapter.new_kv_cache(grid)
    wan_adapter.velocity(x, sigma, branch, kv_cache=cache)
    moved = x + 0.5  # inactive tokens moved on but were not recomputed
    stale = wan_adapter.velocity(moved[:, active], sigma, branch, active=active, kv_cache=cache)
    fresh = wan_adapter.velocity(moved, sigma, branch)[:, active]
    assert (stale - fresh).abs().max() > 1e-3


def test_inactive_tokens_are_not_computed(wan_adapter, job):
    """Every projection, norm and FFN in every block sees only the active rows."""
    grid = wan_adapter.token_grid(job["latents"].shape)
    branch = wan_adapter.prepare_branch(grid, job["prompt"])
    x = grid.patchify(job["latents"])
    cache = wan_adapter.new_kv_cache(grid)
    wan_adapter.velocity(x, torch.tensor([0.5]), branch, kv_cache=cache)

    rows_seen = []
    hooks = [
        module.register_forward_hook(lambda m, args, out: rows_seen.append(args[0].shape[1]))
        for block in wan_adapter.transformer.blocks
        for module in (block.attn1.to_q, block.attn1.to_k, block.attn1.to_v, block.attn2.to_q, block.ffn)
    ]
    active = torch.tensor([1, 7, 30])
    wan_adapter.velocity(x[:, active], torch.tensor([0.5]), branch, active=active, kv_cache=cache)
    for hook in hooks:
        hook.remove()
    assert rows_seen and set(rows_seen) == {3}
    assert len(rows_seen) == 5 * TINY_WAN["num_layers"]


def test_text_cross_attention_kv_are_projected_once_per_job_and_branch(wan_adapter, job):
    grid = wan_adapter.token_grid(job["latents"].shape)
    calls = []
    hooks = [b.attn2.to_k.register_forward_hook(lambda *a: calls.append(1)) for b in wan_adapter.transformer.blocks]
    conditioning = Conditioning(job["prompt"], job["negative"], guidance_scale=5.0)
    EulerSampler().sample(wan_adapter, grid.patchify(job["latents"]), grid, conditioning, FlowMatchSchedule(6))
    for hook in hooks:
        hook.remove()
    assert len(calls) == TINY_WAN["num_layers"] * 2  # layers × CFG branches, not × steps


def test_kv_cache_size_is_layers_tokens_width_two_bytes(wan_adapter, job):
    grid = wan_adapter.token_grid(job["latents"].shape)
    cache = wan_adapter.new_kv_cache(grid)
    assert cache.nbytes == TINY_WAN["num_layers"] * 48 * 24 * 2 * 4
    assert wan_adapter.new_kv_cache(grid, torch.bfloat16).nbytes == cache.nbytes // 2


def test_bfloat16_cache_stays_close_to_the_float32_cache(wan_adapter, job):
    grid = wan_adapter.token_grid(job["latents"].shape)
    branch = wan_adapter.prepare_branch(grid, job["prompt"])
    x = grid.patchify(job["latents"])
    sigma, active = torch.tensor([0.5]), torch.tensor([2, 9, 33])
    outputs = []
    for dtype in (torch.float32, torch.bfloat16):
        cache = wan_adapter.new_kv_cache(grid, dtype)
        wan_adapter.velocity(x, sigma, branch, kv_cache=cache)
        outputs.append(wan_adapter.velocity(x[:, active], sigma, branch, active=active, kv_cache=cache))
    assert (outputs[0] - outputs[1]).abs().max() <= 0.05


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 16, 3, 7, 8), "height 7 is not a positive multiple of the patch size 2"),
        ((1, 16, 3, 8, 9), "width 9"),
        ((1, 8, 3, 8, 8), "8 channels but the model expects 16"),
        ((1, 16, 3, 8), "must be 5-D"),
        ((1, 16, 40, 8, 8), "rope_max_seq_len"),
    ],
)
def test_grids_the_model_cannot_patchify_are_rejected(wan_adapter, shape, message):
    with pytest.raises(GridError, match=message):
        wan_adapter.token_grid(shape)


def test_an_image_embedder_without_image_projections_is_refused_clearly():
    # Wan 2.1 I2V has both (tests/models covers it); a checkpoint with only one cannot use its image context
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel(**{**TINY_WAN, "image_dim": 8})
    with pytest.raises(UnsupportedModelError, match="image_dim and added_kv_proj_dim"):
        WanAdapter(model)


def test_patchify_round_trips_and_orders_tokens_like_diffusers(job):
    model = build_tiny_wan()
    grid = WanAdapter(model).token_grid(job["latents"].shape)
    tokens = grid.patchify(job["latents"])
    assert torch.equal(grid.unpatchify(tokens), job["latents"])
    # token n's embedding equals the n-th output of diffusers' Conv3d patch embedding
    with torch.no_grad():
        conv = model.patch_embedding(job["latents"]).flatten(2).transpose(1, 2)
        linear = torch.nn.functional.linear(tokens, model.patch_embedding.weight.flatten(1), model.patch_embedding.bias)
    assert (conv - linear).abs().max() <= 1e-5


@pytest.mark.parametrize("per_token_sigma", [False, True])
def test_stacked_guidance_branches_equal_the_branches_run_one_by_one(wan_adapter, job, per_token_sigma):
    """GuidedDenoiser's batched guidance: one forward of every branch stacked along the batch gives each
    branch's own velocities (full and subset forwards, through one K/V cache over the stacked batch)."""
    from hsa_core.samplers import GuidedDenoiser

    grid = wan_adapter.token_grid(job["latents"].shape)
    conditioning = Conditioning(job["prompt"], job["negative"], guidance_scale=4.0)
    batched = GuidedDenoiser(wan_adapter, grid, conditioning, with_kv_cache=True)
    one_by_one = GuidedDenoiser(wan_adapter, grid, conditioning, with_kv_cache=True, batch_branches=False)
    assert batched.stacked is not None and one_by_one.stacked is None
    assert len(batched.caches) == 1 and batched.kv_cache_bytes == one_by_one.kv_cache_bytes
    x = grid.patchify(job["latents"])
    frozen = grid.frame_mask([0])
    sigma = torch.where(frozen, 0.0, torch.tensor(0.6))[None] if per_token_sigma else torch.tensor([0.6])
    calls = []
    hook = wan_adapter.transformer.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    for active in (None, torch.tensor([0, 5, 9, 30, 47])):
        subset_sigma = sigma if active is None or not per_token_sigma else sigma[:, active]
        inputs = x if active is None else x[:, active]
        calls.clear()
        stacked = batched.velocities(inputs, subset_sigma, active)
        assert len(calls) == 1
        separate = one_by_one.velocities(inputs, subset_sigma, active)
        assert len(calls) == 3
        for a, b in zip(stacked, separate, strict=True):
            assert (a - b).abs().max() <= 1e-5
    hook.remove()


def test_branches_of_different_text_lengths_run_one_by_one(wan_adapter, job):
    from hsa_core.samplers import GuidedDenoiser

    grid = wan_adapter.token_grid(job["latents"].shape)
    conditioning = Conditioning(job["prompt"], job["negative"][:, :3], guidance_scale=4.0)
    assert GuidedDenoiser(wan_adapter, grid, conditioning).stacked is None
