"""Classifier-free guidance: positive and negative rows in one batched forward, each with its own cached K/V."""

import pytest
import torch
from core_helpers import context, reference_self_forcing, rel_err, tiny_model, video_config
from test_vace_core import random_control, vace_model

from histream_core import ConfigError, HiStreamPipeline
from histream_core.guidance import paired_context
from histream_core.masks import block_causal_mask
from histream_core.memory import cache_bytes, run_bytes
from histream_core.prompt_schedule import PromptSchedule


def reference_guided(model, cfg, pos, neg, seed):
    """Self-Forcing sampling over the block-causal full-sequence forward, guided: at every step one forward under
    each prompt over [finished chunks | current noisy chunk], v = v_neg + g (v_pos - v_neg)."""
    g = cfg.guidance_scale

    def velocity(seq, t, start, frames):
        mask = block_causal_mask(start + frames, cfg.chunk_frames)
        v_pos = model(seq, t, pos, frame_mask=mask)[:, :, start:]
        v_neg = model(seq, t, neg, frame_mask=mask)[:, :, start:]
        return v_neg + g * (v_pos - v_neg)

    return reference_self_forcing(cfg, seed, velocity)


@pytest.mark.parametrize("scale,batch", [(3.0, 1), (0.5, 2)])
def test_guided_pipeline_equals_reference_with_two_prompts(scale, batch):
    model = tiny_model(seed=3)
    pos, neg = context(model, batch=batch, seed=1), context(model, batch=batch, seed=2)
    cfg = video_config("self_forcing", width=32, height=32, num_frames=29, batch_size=batch, guidance_scale=scale)
    with torch.no_grad():
        got = HiStreamPipeline(model, cfg).generate(pos, seed=5, negative=neg)
        want = reference_guided(model, cfg, pos, neg, seed=5)
        unguided = HiStreamPipeline(model, cfg.with_(guidance_scale=1.0)).generate(pos, seed=5)
    assert rel_err(got, want) <= 1e-5
    assert rel_err(got, unguided) > 1e-2  # guidance changed the video


def test_scale_one_ignores_the_negative_bitwise():
    model = tiny_model()
    cfg = video_config("histream", num_frames=13)
    with torch.no_grad():
        a = HiStreamPipeline(model, cfg).generate(context(model), seed=2)
        b = HiStreamPipeline(model, cfg).generate(context(model), seed=2, negative=context(model, seed=9))
    assert torch.equal(a, b)


@pytest.mark.parametrize("preset", ["histream", "histream_plus"])
def test_negative_equal_to_positive_is_the_unguided_run(preset):
    """Same prompt in both halves: both caches hold the same K/V and the guided step is the plain one, through the
    DRC hand-over, both caches and window eviction (a wrong half or a mixed-up cache row would break this)."""
    model = tiny_model(seed=4)
    ctx = context(model, batch=2)
    cfg = video_config(preset, num_frames=33, batch_size=2, window_chunks=1, sampler="euler")
    with torch.no_grad():
        plain = HiStreamPipeline(model, cfg).generate(ctx, seed=3)
        guided = HiStreamPipeline(model, cfg.with_(guidance_scale=4.0)).generate(ctx, seed=3, negative=ctx)
        other = HiStreamPipeline(model, cfg.with_(guidance_scale=4.0)).generate(ctx, seed=3,
                                                                                negative=context(model, seed=7))
    assert rel_err(guided, plain) <= 1e-5
    assert rel_err(other, plain) > 1e-2


def test_guidance_with_vace_control_keeps_each_entry_with_its_rows():
    model = vace_model(seed=2)
    ctx = context(model, batch=2)
    cfg = video_config("histream", num_frames=21, batch_size=2)
    control = random_control(cfg.latent_frames, cfg.latent_size, entries=2, strengths=[0.7, 1.3], seed=1)
    with torch.no_grad():
        plain = HiStreamPipeline(model, cfg).generate(ctx, seed=1, control=control)
        guided = HiStreamPipeline(model, cfg.with_(guidance_scale=2.5)).generate(ctx, seed=1, control=control,
                                                                                 negative=ctx)
    assert rel_err(guided, plain) <= 1e-5


def test_guidance_with_a_prompt_schedule_switches_both_halves():
    model = tiny_model(seed=5)
    a, b, neg = context(model, seed=1), context(model, seed=2), context(model, seed=3)
    cfg = video_config("histream", num_frames=33, chunk_frames=2, guidance_scale=2.0)  # 5 chunks
    with torch.no_grad():
        one = HiStreamPipeline(model, cfg).generate(a, seed=4, negative=neg)
        switched = HiStreamPipeline(model, cfg).generate(PromptSchedule(((0, a), (2, b))), seed=4, negative=neg)
        same = HiStreamPipeline(model, cfg).generate(PromptSchedule(((0, a), (2, a))), seed=4, negative=neg)
    assert torch.equal(switched[:, :, :4], one[:, :, :4])  # chunks before the switch untouched
    assert rel_err(switched[:, :, 4:], one[:, :, 4:]) > 1e-2
    assert rel_err(same, one) <= 1e-5  # re-encoding the window under the same prompts changes nothing


def test_prompts_of_different_token_counts_are_tiled_exactly():
    """Repeating every text token k times leaves cross-attention unchanged, so a 7-token positive can share a
    batch with a 14-token negative."""
    model = tiny_model()
    pos, neg = context(model, tokens=7, seed=1), context(model, tokens=14, seed=2)
    paired = paired_context(pos, neg, batch=1)
    assert paired.shape == (2, 14, pos.shape[2])
    x, t = torch.randn(2, 16, 3, 8, 8), torch.tensor([300.0, 300.0])
    with torch.no_grad():
        got = model(x, t, paired)
        want = torch.cat([model(x[:1], t[:1], pos), model(x[1:], t[1:], neg)])
    assert rel_err(got, want) <= 1e-5


def test_guidance_errors_name_the_fix():
    model = tiny_model()
    cfg = video_config("histream", num_frames=5, guidance_scale=3.0)
    with pytest.raises(ValueError, match="needs a negative prompt .*set the guidance scale to 1"):
        HiStreamPipeline(model, cfg).generate(context(model))
    with pytest.raises(ValueError, match="7 text tokens and the negative 512"):
        HiStreamPipeline(model, cfg).generate(context(model), negative=context(model, tokens=512))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="guidance_scale must be a positive number"):
            video_config(guidance_scale=bad)


def test_guidance_doubles_the_planned_cache_and_run_memory():
    from histream_core.config import WanConfig

    wan = WanConfig()
    plain = video_config("histream", width=1920, height=1088, num_frames=81)
    guided = plain.with_(guidance_scale=5.0)
    assert {k: 2 * v for k, v in cache_bytes(wan, plain).items()} == cache_bytes(wan, guided)
    assert run_bytes(wan, guided) > 1.9 * run_bytes(wan, plain)
    model = tiny_model()
    small = video_config("histream", num_frames=21)
    assert HiStreamPipeline(model, small.with_(guidance_scale=2.0)).cache_nbytes() == \
        2 * HiStreamPipeline(model, small).cache_nbytes()
