"""A clean prefix (start image, video extension, resume): copied to the output, written into both caches at t = 0
as the anchor, chunking after it; every generated chunk equals a reference over the full-sequence forward in which
the prefix sits at t = 0 in front of the finished chunks (block-causal, or anchor + window)."""

import pytest
import torch
from core_helpers import context, rel_err, tiny_model, video_config
from vace_helpers import random_control, vace_model

from histream_core import ChunkSchedule, HiStreamPipeline, NoiseSource, PromptSchedule, StepPlan
from histream_core.config import ConfigError
from histream_core.masks import anchor_window_mask, block_causal_mask
from histream_core.resample import resize_latent
from histream_core.schedule import self_forcing_sigmas
from histream_core.vace import VaceInput

SEED = 11  # every random prefix below draws from this seed (printed on failure through the test ids' values)


def random_prefix(cfg, k, seed=SEED, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 16, k, *cfg.latent_size, generator=g)


def reference(cfg, seed, velocity, prefix):
    """DRC written over full-sequence forwards, with the pipeline's noise draws (renoise sampler): each step's
    input is [prefix, finished chunks] at t = 0 then the current noisy chunk; low-res steps see all of it shrunk
    (the low-res cache holds the downsampled frames). `velocity(seq, t, start, frames)` returns the velocity of
    the last `frames` frames of `seq` (its mask says what may be attended)."""
    noise = NoiseSource(seed, cfg.batch_size)
    done = prefix.expand(cfg.batch_size, -1, -1, -1, -1).clone()
    for k, (start, frames) in enumerate(cfg.chunks):
        sched = cfg.steps.for_chunk(k)
        x0 = None
        for i, s in enumerate(sched.sigmas):
            low = i < sched.n_low
            size = cfg.low_latent_size if low else cfg.latent_size
            eps = noise((16, frames, *size))
            if i == 0:
                x = s * eps
            elif i == sched.n_low:  # DRC hand-over
                x = (1 - s) * resize_latent(x0, size, cfg.upsample_method) + s * eps
            else:
                x = (1 - s) * x0 + s * eps
            past = resize_latent(done, size, cfg.downsample_method) if low else done
            seq = torch.cat([past, x], dim=2)
            t = torch.cat([torch.zeros(start), torch.full((frames,), 1000.0 * s)])[None].expand(x.shape[0], -1)
            x0 = x - s * velocity(seq, t, start, frames)
        if sched.n_high == 0:
            x0 = resize_latent(x0, cfg.latent_size, cfg.upsample_method)
        done = torch.cat([done, x0], dim=2)
    return done


def masked_velocity(model, ctx, mask_of):
    def velocity(seq, t, start, frames):
        return model(seq, t, ctx, frame_mask=mask_of(start + frames))[:, :, start:]
    return velocity


@pytest.mark.parametrize("k", [1, 3, 4])
@pytest.mark.parametrize("preset", ["self_forcing", "histream", "histream_plus"])
def test_prefix_is_copied_and_chunks_equal_block_causal_reference(k, preset):
    model = tiny_model()
    ctx = context(model)
    cfg = video_config(preset, num_frames=37, window_chunks=None, position_mode="absolute", prefix_frames=k)
    prefix = random_prefix(cfg, k)
    assert cfg.chunks[0][0] == k and cfg.anchor == k
    got = HiStreamPipeline(model, cfg).generate(ctx, seed=3, prefix_latent=prefix)
    want = reference(cfg, 3, masked_velocity(model, ctx, lambda n: block_causal_mask(n, cfg.chunk_frames, k)), prefix)
    assert got.shape == (1, 16, cfg.latent_frames, *cfg.latent_size)
    assert torch.equal(got[:, :, :k], prefix)  # the output starts with the prefix, as given
    assert rel_err(got, want) < 1e-5, rel_err(got, want)
    # the prefix matters: the same seed without it (its frames generated instead) gives other chunks
    plain = HiStreamPipeline(model, cfg.with_(prefix_frames=0)).generate(ctx, seed=3)
    assert rel_err(got[:, :, k:], plain[:, :, k:]) > 1e-2


@pytest.mark.parametrize("k, window", [(1, 1), (3, 1), (2, 2)])
def test_bounded_window_equals_anchor_window_mask_with_the_prefix_as_anchor(k, window):
    model = tiny_model()
    ctx = context(model)
    # 15 latent frames: chunks after the prefix evict from the window several times
    cfg = video_config("histream_plus", num_frames=57, window_chunks=window, anchor_frames=3,
                       position_mode="absolute", prefix_frames=k)
    prefix = random_prefix(cfg, k)
    got = HiStreamPipeline(model, cfg).generate(ctx, seed=5, prefix_latent=prefix)
    mask = lambda n: anchor_window_mask(n, cfg.chunk_frames, k, window, prefix_frames=k)
    want = reference(cfg, 5, masked_velocity(model, ctx, mask), prefix)
    assert torch.equal(got[:, :, :k], prefix)
    assert rel_err(got, want) < 1e-5, rel_err(got, want)
    # the anchor is the prefix, not the chunker's 3 frames: the mask with anchor 3 gives another video
    other = reference(cfg, 5, masked_velocity(
        model, ctx, lambda n: anchor_window_mask(n, cfg.chunk_frames, 3 + k, window, prefix_frames=k)), prefix)
    assert rel_err(got, other) > 1e-3


def test_both_caches_hold_the_prefix_at_positions_0_to_k_minus_1():
    model = tiny_model()
    ctx = context(model)
    k = 2
    cfg = video_config("histream", num_frames=21, window_chunks=1, prefix_frames=k)  # chunks (2, 3), (5, 1)
    prefix = random_prefix(cfg, k)
    p = HiStreamPipeline(model, cfg)
    seen, writes = [], []

    def spy(info):
        if info.kind == "cache" and info.chunk == -1:
            writes.append((info.stage, info.x))
        if info.kind == "denoise" and info.chunk == 0 and info.step == 0:
            seen.extend((c.name, c.anchor_filled, c.committed_positions()) for c in (p.low_cache, p.high_cache))

    out = list(p.stream(ctx, seed=1, callback=spy, prefix_latent=prefix))
    assert [c.index for c in out] == [-1, 0, 1] and out[0].is_prefix and torch.equal(out[0].latent, prefix)
    assert seen == [("low-res cache", k, [0, 1]), ("high-res cache", k, [0, 1])]
    assert [s for s, _ in writes] == ["low", "high"]
    down = torch.nn.functional.avg_pool2d(prefix[0].permute(1, 0, 2, 3), 2).permute(1, 0, 2, 3)[None]
    assert torch.allclose(writes[0][1], down, atol=1e-6) and torch.equal(writes[1][1], prefix)


def test_the_low_res_stage_reads_the_downsampled_prefix():
    """All steps at low res: the run equals Self-Forcing at half size whose prefix is the area-downsampled one."""
    model = tiny_model()
    ctx = context(model)
    k = 3
    low_only = video_config("histream", num_frames=33, window_chunks=1, prefix_frames=k,
                            steps=StepPlan.uniform(ChunkSchedule(self_forcing_sigmas(), n_low=4)))
    half = video_config("self_forcing", width=32, height=32, num_frames=33, window_chunks=1, prefix_frames=k)
    prefix = random_prefix(low_only, k)
    traj = {"a": [], "b": []}
    keep = lambda key: lambda i: traj[key].append(i.x0) if i.kind == "denoise" else None
    HiStreamPipeline(model, low_only).generate(ctx, seed=2, callback=keep("a"), prefix_latent=prefix)
    down = resize_latent(prefix, half.latent_size, "area")
    HiStreamPipeline(model, half).generate(ctx, seed=2, callback=keep("b"), prefix_latent=down)
    assert len(traj["a"]) == len(traj["b"]) == 8
    for xa, xb in zip(traj["a"], traj["b"]):
        assert torch.equal(xa, xb)


def test_cache_relative_positions_with_a_prefix_equal_absolute_until_the_first_eviction():
    model = tiny_model()
    ctx = context(model)
    rel = video_config("histream", num_frames=45, window_chunks=1, prefix_frames=3)  # chunks start at 3, 6, 9
    prefix = random_prefix(rel, 3)
    a = HiStreamPipeline(model, rel).generate(ctx, seed=1, prefix_latent=prefix)
    b = HiStreamPipeline(model, rel.with_(position_mode="absolute")).generate(ctx, seed=1, prefix_latent=prefix)
    assert torch.equal(a[:, :, :9], b[:, :, :9])  # chunk (6, 3) is the first to see an eviction
    assert not torch.allclose(a[:, :, 9:], b[:, :, 9:], atol=1e-4)


def test_guidance_with_a_prefix_equals_the_guided_reference():
    model = tiny_model()
    ctx, neg = context(model), context(model, seed=9)
    k = 1
    cfg = video_config("histream", num_frames=29, window_chunks=None, position_mode="absolute", prefix_frames=k,
                       guidance_scale=2.5)
    prefix = random_prefix(cfg, k)

    def velocity(seq, t, start, frames):
        mask = block_causal_mask(start + frames, cfg.chunk_frames, k)
        pos, neg_v = (model(seq, t, c, frame_mask=mask)[:, :, start:] for c in (ctx, neg))
        return neg_v + 2.5 * (pos - neg_v)

    got = HiStreamPipeline(model, cfg).generate(ctx, seed=4, negative=neg, prefix_latent=prefix)
    assert torch.equal(got[:, :, :k], prefix)
    assert rel_err(got, reference(cfg, 4, velocity, prefix)) < 1e-5


def test_vace_control_with_a_prefix_equals_the_reference():
    """The control video covers the whole output: the prefix's t = 0 pass sees the control of its own frames."""
    model = vace_model(seed=2)
    ctx = context(model)
    k = 2
    cfg = video_config("self_forcing", width=32, height=32, num_frames=29, prefix_frames=k)  # chunks 3, 3
    control = random_control(cfg.latent_frames, cfg.latent_size, entries=1, strengths=[0.8], seed=3)
    full = control.chunk_context(0, cfg.latent_frames, cfg.latent_size, batch=1)
    prefix = random_prefix(cfg, k)

    def velocity(seq, t, start, frames):
        n = start + frames
        vace = VaceInput(full[:, :, :n], control.strengths)
        return model(seq, t, ctx, frame_mask=block_causal_mask(n, cfg.chunk_frames, k), vace=vace)[:, :, start:]

    with torch.no_grad():
        got = HiStreamPipeline(model, cfg).generate(ctx, seed=4, control=control, prefix_latent=prefix)
        want = reference(cfg, 4, velocity, prefix)
        plain = HiStreamPipeline(model, cfg).generate(ctx, seed=4, prefix_latent=prefix)
    assert torch.equal(got[:, :, :k], prefix)
    assert rel_err(got, want) <= 1e-5
    assert rel_err(got[:, :, k:], plain[:, :, k:]) > 1e-2


def test_a_prompt_schedule_works_across_the_join_and_keeps_the_prefix_anchor():
    model = tiny_model()
    a, b = context(model, seed=1), context(model, seed=2)
    k = 1
    cfg = video_config("histream", num_frames=37, window_chunks=1, prefix_frames=k)  # 3 chunks after the prefix
    prefix = random_prefix(cfg, k)
    run = lambda c: HiStreamPipeline(model, cfg).generate(c, seed=6, prefix_latent=prefix)
    only_a, switched = run(a), run(PromptSchedule([(0, a), (1, b)]))
    same_prompt = run(PromptSchedule([(0, a), (1, a)]))  # re-encoding the window under the same prompt: no change
    assert torch.equal(switched[:, :, :k + 3], only_a[:, :, :k + 3])  # prefix and chunk 0: before the switch
    assert rel_err(switched[:, :, k + 3:], only_a[:, :, k + 3:]) > 1e-2
    assert rel_err(same_prompt, only_a) < 1e-5
    # the switch re-encodes the window only: the prefix's K/V in the anchor are untouched
    p, anchors = HiStreamPipeline(model, cfg), {}

    def spy(info):
        if info.kind in ("recache", "denoise") and info.chunk == 1 and info.stage == "high":
            anchors.setdefault(info.kind, p.high_cache.k[:, :, :p.high_cache.tokens_per_frame * k].clone())

    p.generate(PromptSchedule([(0, a), (1, b)]), seed=6, callback=spy, prefix_latent=prefix)
    assert set(anchors) == {"recache", "denoise"} and torch.equal(anchors["recache"], anchors["denoise"])


def test_extension_from_the_last_frames_of_a_run_is_not_the_long_run():
    """Extension from frames 0..8 of a run (prefix = its last 3) equals the long run only while the long run's
    chunks attended nothing older than those frames: here the anchor (frames 0..2) is gone, so later chunks differ."""
    model = tiny_model()
    ctx = context(model)
    long_cfg = video_config("histream", num_frames=45, window_chunks=1)  # 12 latent frames, 4 chunks
    long = HiStreamPipeline(model, long_cfg).generate(ctx, seed=8)
    ext_cfg = video_config("histream", num_frames=13, window_chunks=1, prefix_frames=3)  # 4 latent: prefix 3 + 1
    ext = HiStreamPipeline(model, ext_cfg).generate(ctx, seed=8, prefix_latent=long[:, :, 6:9])
    assert torch.equal(ext[:, :, :3], long[:, :, 6:9])
    assert rel_err(ext[:, :, 3:], long[:, :, 9:10]) > 1e-3


def test_cache_memory_plans_the_prefix_as_the_anchor():
    model = tiny_model()
    cfg = video_config("histream", num_frames=81, window_chunks=1, anchor_frames=3)
    for k in (1, 3, 6):
        with_prefix = HiStreamPipeline(model, cfg.with_(prefix_frames=k))
        low, high = with_prefix.plan_caches()
        assert low.capacity_frames == high.capacity_frames == k + 2 * cfg.chunk_frames
        assert low.anchor_frames == high.anchor_frames == k


def test_prefix_errors_name_the_fix():
    model = tiny_model()
    ctx = context(model)
    cfg = video_config("histream", num_frames=13, prefix_frames=1)
    ok = random_prefix(cfg, 1)
    p = HiStreamPipeline(model, cfg)
    cases = [
        (None, "pass prefix_latent"),
        (random_prefix(cfg, 2), "plan prefix_frames=2"),
        (ok[..., :4, :4], "set the chunker's width/height to 32x32"),
        (ok.expand(3, -1, -1, -1, -1), "one prefix for every video"),
        (ok[:, :8], "a video latent [batch, 16, frames, h, w]"),
        (ok.clone().index_fill_(2, torch.tensor([0]), float("nan")), "the prefix latent holds"),
    ]
    for prefix, message in cases:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            p.generate(ctx, prefix_latent=prefix)
        assert p.high_cache is None or p.high_cache.k is None  # refused before any cache is allocated
    with pytest.raises(ValueError, match="plan has prefix_frames 0"):
        HiStreamPipeline(model, cfg.with_(prefix_frames=0)).generate(ctx, prefix_latent=ok)
    with pytest.raises(ConfigError, match="make the video longer than the prefix"):
        video_config("histream", num_frames=9, prefix_frames=3)


def test_seconds_count_from_the_first_output_frame_and_chunks_from_the_first_generated_one():
    from histream_core.prompt_schedule import seconds_to_chunk

    # prefix of 1 latent frame (pixel frame 0): pixel frames 1..12 (latent 1..3) are chunk 0, 13..24 chunk 1
    assert [seconds_to_chunk(f / 16, 3, prefix_frames=1) for f in (0, 1, 12, 13, 24, 25)] == [0, 0, 0, 1, 1, 2]
    # without a prefix chunk 0 is latent 0..2 (pixel frames 0..8)
    assert [seconds_to_chunk(f / 16, 3) for f in (0, 8, 9, 20, 21)] == [0, 0, 1, 1, 2]
    assert seconds_to_chunk(4 / 16, 3, prefix_frames=3) == 0  # inside the prefix
