"""Config validation (errors name the fix) and flow-matching schedules."""

import math

import pytest
import torch

from histream_core import ChunkSchedule, ConfigError, HiStreamConfig, ScheduleError, StepPlan, WanConfig
from histream_core.schedule import self_forcing_sigmas, shift_sigma, sigmas_from_list, uniform_sigmas


def test_wan_presets():
    c = WanConfig.preset("1.3B")
    assert (c.dim, c.num_layers, c.num_heads, c.head_dim, c.ffn_dim) == (1536, 30, 12, 128, 8960)
    assert c.rope_axes == (44, 42, 42)
    b = WanConfig.preset("14B")
    assert (b.dim, b.num_layers, b.num_heads, b.ffn_dim) == (5120, 40, 40, 13824)
    assert WanConfig.preset("tiny").dim % 128 == 0 and WanConfig.preset("tiny").text_dim == 4096
    with pytest.raises(ConfigError, match="choose one of"):
        WanConfig.preset("7B")


def test_1080p_sizes():
    cfg = HiStreamConfig.preset("histream")
    assert (cfg.width, cfg.height, cfg.latent_frames) == (1920, 1088, 21)
    assert cfg.latent_size == (136, 240) and cfg.low_latent_size == (68, 120)
    assert (cfg.latent_size[0] // 2) * (cfg.latent_size[1] // 2) == 8160  # tokens per latent frame
    assert (cfg.low_latent_size[0] // 2) * (cfg.low_latent_size[1] // 2) == 2040
    assert cfg.num_chunks == 7 and cfg.anchor == 3


def test_sides_error_names_nearest_valid_values():
    with pytest.raises(ConfigError, match=r"height 720 .*multiples of 32.*use 704 or 736"):
        HiStreamConfig.preset("histream", width=1280, height=720)
    # without a low-res stage only the 16-pixel rule applies
    assert HiStreamConfig.preset("self_forcing", width=1280, height=720).latent_size == (90, 160)
    with pytest.raises(ConfigError, match=r"width 1000 .*use 992 or 1008"):
        HiStreamConfig.preset("self_forcing", width=1000, height=720)
    with pytest.raises(ConfigError, match=r"width 16 .*; use 32$"):  # never "use 0"
        HiStreamConfig.preset("histream", width=16, height=64)


def test_frames_must_be_1_plus_4k():
    with pytest.raises(ConfigError, match=r"1 \+ 4k.*use 81 or 85"):
        HiStreamConfig(num_frames=83)


@pytest.mark.parametrize("field,value,msg", [
    ("width", 0, "positive"), ("batch_size", -1, "positive"), ("chunk_frames", 0, "positive"),
    ("window_chunks", -1, ">= 0"), ("anchor_frames", -2, ">= 0"), ("low_res_scale", 0.0, r"\(0, 1\]"),
    ("upsample_method", "lanczos", "choose one of"), ("position_mode", "relative", "choose one of"),
    ("rope_ntk_scale", 0.5, ">= 1"),
])
def test_bad_values(field, value, msg):
    with pytest.raises(ConfigError, match=msg):
        HiStreamConfig(**{field: value})


def test_absolute_positions_limited_to_table():
    HiStreamConfig(num_frames=1 + 4 * 1023, position_mode="absolute")
    with pytest.raises(ConfigError, match="cache_relative"):
        HiStreamConfig(num_frames=1 + 4 * 1024, position_mode="absolute")
    assert HiStreamConfig(num_frames=1 + 4 * 1024).latent_frames == 1025


def test_self_forcing_sigmas():
    assert [round(s, 4) for s in self_forcing_sigmas()] == [1.0, 0.9375, 0.8333, 0.625]
    assert uniform_sigmas(4) == self_forcing_sigmas()
    assert shift_sigma(0.5, 1.0) == 0.5
    assert math.isclose(shift_sigma(0.25, 3.0), 0.75 / 1.5)


def test_presets_step_plans():
    sf = HiStreamConfig.preset("self_forcing")
    assert sf.window_chunks is None and not sf.uses_low_res and sf.steps.first.steps == 4
    hs = HiStreamConfig.preset("histream")
    assert (hs.steps.first.n_low, hs.steps.first.n_high, hs.steps.later.n_low, hs.steps.later.n_high) == (2, 2, 2, 2)
    hp = HiStreamConfig.preset("histream_plus")
    assert (hp.steps.first.n_low, hp.steps.first.n_high) == (2, 2)
    assert (hp.steps.later.n_low, hp.steps.later.n_high) == (1, 1)
    assert [round(s, 4) for s in hp.steps.later.sigmas] == [1.0, 0.8333]
    assert hp.steps.total_steps(7) == 4 + 6 * 2


def test_custom_schedules():
    assert sigmas_from_list([1.0, 0.7, 0.3, 0.0]) == (1.0, 0.7, 0.3)
    with pytest.raises(ScheduleError, match="no steps"):
        sigmas_from_list([0.0])
    with pytest.raises(ScheduleError, match="decrease"):
        sigmas_from_list([1.0, 1.0])
    with pytest.raises(ScheduleError, match=r"\(0, 1\]"):
        sigmas_from_list([2.0, 1.0])
    with pytest.raises(ScheduleError, match="0 steps"):
        ChunkSchedule(())
    with pytest.raises(ScheduleError, match="between 0 and"):
        ChunkSchedule((1.0, 0.5), n_low=3)
    plan = StepPlan(ChunkSchedule.split(6, 3), ChunkSchedule((0.9, 0.4), 1))
    assert plan.for_chunk(0).steps == 6 and plan.for_chunk(5).timesteps == (900.0, 400.0)


def test_low_res_scale_must_be_sixteenths_and_never_hangs():
    with pytest.raises(ConfigError, match="multiple of 1/16"):
        HiStreamConfig(low_res_scale=0.5123456789)
    with pytest.raises(ConfigError, match="multiple of 1/16"):
        HiStreamConfig(low_res_scale=0.333)
    cfg = HiStreamConfig(width=1920, height=1024, low_res_scale=0.75)
    assert cfg.low_latent_size == (96, 180)
    with pytest.raises(ConfigError, match="multiples of 64.*use 1024 or 1088"):
        HiStreamConfig(width=1920, height=1040, low_res_scale=0.75)


def test_huge_seed_with_batch():
    from histream_core import NoiseSource

    n = NoiseSource(2**64 - 1, batch=2)((1, 2))
    assert n.shape == (2, 1, 2) and not torch.equal(n[0], n[1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_sigmas_and_shift_are_refused(bad):
    """NaN compares false with everything, so the order and range checks alone would let it through."""
    from histream_core.schedule import build_step_plan

    for sigmas in ([1.0, bad, 0.3, 0.0], [bad, 0.5, 0.0], [1.0, 0.5, bad]):
        with pytest.raises(ScheduleError, match=r"must be a finite number in \(0, 1\]"):
            sigmas_from_list(sigmas)
    with pytest.raises(ScheduleError, match="shift must be a finite number > 0"):
        build_step_plan(4, 2, 2, 1, shift=bad)
