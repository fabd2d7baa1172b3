"""The deterministic "euler" sampler: each step is the flow-ODE Euler step x' = x + (σ'-σ)·v."""

import pytest
import torch
from core_helpers import context, tiny_model, video_config

from histream_core import ChunkSchedule, ConfigError, HiStreamPipeline, NoiseSource, StepPlan
from histream_core.schedule import uniform_sigmas


def test_single_chunk_equals_hand_integrated_flow_ode():
    model = tiny_model()
    ctx = context(model)
    sig = uniform_sigmas(6, shift=3.0)
    cfg = video_config("self_forcing", num_frames=1, chunk_frames=1, sampler="euler",
                       steps=StepPlan.uniform(ChunkSchedule(sig, n_low=0)))
    out = HiStreamPipeline(model, cfg).generate(ctx, seed=4)
    # independent: the uncached full forward, Euler in v, from the same first draw
    x = sig[0] * NoiseSource(4)((16, 1, 8, 8))
    for s, s_next in zip(sig, [*sig[1:], 0.0]):
        v = model(x, torch.full((1,), 1000.0 * s), ctx)
        x = x + (s_next - s) * v
    assert torch.allclose(out, x, atol=2e-5, rtol=1e-5)


def test_draws_noise_only_for_chunk_starts_and_the_drc_hand_over():
    model = tiny_model()
    draws = []

    def noise(shape):
        draws.append(tuple(shape))
        return torch.randn((1, *shape), generator=torch.Generator().manual_seed(len(draws)))

    cfg = video_config("histream", num_frames=9, chunk_frames=1, sampler="euler")  # 3 chunks, 2 low + 2 high
    HiStreamPipeline(model, cfg).generate(context(model), noise=noise)
    assert draws == [(16, 1, 4, 4), (16, 1, 8, 8)] * 3


def test_euler_differs_from_renoise_and_is_seed_deterministic():
    model = tiny_model()
    ctx = context(model)
    a = HiStreamPipeline(model, video_config("histream", num_frames=9, sampler="euler")).generate(ctx, seed=1)
    b = HiStreamPipeline(model, video_config("histream", num_frames=9, sampler="euler")).generate(ctx, seed=1)
    c = HiStreamPipeline(model, video_config("histream", num_frames=9)).generate(ctx, seed=1)
    assert torch.equal(a, b) and not torch.allclose(a, c, atol=1e-3)


def test_unknown_sampler_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="sampler 'ddpm' is unknown; choose one of"):
        video_config(sampler="ddpm")
