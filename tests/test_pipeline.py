"""The HiStream chunk loop: exactness anchors, causality, window, DRC hand-over."""

import pytest
import torch
import torch.nn.functional as F
from core_helpers import context, tiny_model, video_config

from histream_core import ChunkSchedule, HiStreamPipeline, NoiseSource, StepPlan
from histream_core.schedule import self_forcing_sigmas


def run(model, cfg, ctx, seed=3, **kw):
    return HiStreamPipeline(model, cfg).generate(ctx, seed=seed, **kw)


def test_self_forcing_bounded_window_covering_video_equals_unbounded():
    model, ctx = tiny_model(), None
    ctx = context(model)
    unbounded = video_config("self_forcing", num_frames=45)  # 12 latent frames, 4 chunks
    assert unbounded.window_chunks is None
    covering = unbounded.with_(window_chunks=unbounded.num_chunks)
    assert torch.equal(run(model, unbounded, ctx), run(model, covering, ctx))


def test_histream_without_low_res_steps_equals_self_forcing():
    model = tiny_model()
    ctx = context(model)
    sf = video_config("self_forcing", num_frames=45, window_chunks=1)
    no_low = video_config("histream", num_frames=45, window_chunks=1,
                          steps=StepPlan.uniform(ChunkSchedule(self_forcing_sigmas(), n_low=0)))
    a, b = run(model, sf, ctx), run(model, no_low, ctx)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(model, video_config("histream", num_frames=45, window_chunks=1), ctx))


def test_causality_prefix_of_longer_video_equals_shorter_video():
    model = tiny_model()
    ctx = context(model)
    for preset in ("histream", "histream_plus", "self_forcing"):
        short = run(model, video_config(preset, num_frames=21), ctx)  # 6 latent frames
        long = run(model, video_config(preset, num_frames=57), ctx)  # 15 latent frames
        assert long.shape[2] == 15 and short.shape[2] == 6
        assert torch.allclose(long[:, :, :6], short, atol=1e-6, rtol=0), preset


def test_shorter_last_chunk():
    model = tiny_model()
    ctx = context(model)
    cfg = video_config("histream", num_frames=29)  # 8 latent frames → chunks 3, 3, 2
    assert cfg.chunks == [(0, 3), (3, 3), (6, 2)]
    chunks = list(HiStreamPipeline(model, cfg).stream(ctx, seed=0))
    assert [c.latent.shape[2] for c in chunks] == [3, 3, 2]
    longer = run(model, video_config("histream", num_frames=33), ctx, seed=0)
    assert torch.allclose(torch.cat([c.latent for c in chunks[:2]], 2), longer[:, :, :6], atol=1e-6)


def test_window_buffers_fixed_over_40_chunks():
    model = tiny_model()
    ctx = context(model)
    cfg4 = video_config("histream_plus", width=32, height=32, num_frames=1 + 4 * 11)  # 12 latent frames, 4 chunks
    cfg40 = cfg4.with_(num_frames=1 + 4 * 119)  # 120 latent frames, 40 chunks
    assert cfg40.num_chunks == 40
    p4, p40 = HiStreamPipeline(model, cfg4), HiStreamPipeline(model, cfg40)
    assert p4.cache_nbytes() == p40.cache_nbytes() > 0
    seen = set()

    def spy(info):
        seen.add(tuple((c.k.data_ptr(), c.v.data_ptr(), c.nbytes) for c in (p40.low_cache, p40.high_cache)))

    out = p40.generate(ctx, seed=0, callback=spy)
    assert out.shape[2] == 120 and torch.isfinite(out).all()
    assert len(seen) == 1  # the same buffers, the same size, for every step of every chunk
    assert sum(n for _, _, n in next(iter(seen))) == p4.cache_nbytes()
    assert p40.low_cache.k is None and p40.high_cache.k is None  # released at the end


def test_cache_relative_equals_absolute_until_first_eviction():
    model = tiny_model()
    ctx = context(model)
    # anchor 3 + window 1: nothing is evicted during chunks 0..2, chunk 3 is the first to see an eviction
    rel = video_config("histream", num_frames=57, window_chunks=1, position_mode="cache_relative")
    ab = rel.with_(position_mode="absolute")
    a, b = run(model, rel, ctx), run(model, ab, ctx)
    assert torch.equal(a[:, :, :9], b[:, :, :9])
    assert not torch.allclose(a[:, :, 9:], b[:, :, 9:], atol=1e-4)


def test_all_steps_low_res_equals_self_forcing_at_low_resolution():
    model = tiny_model()
    ctx = context(model)
    all_low = video_config("histream", num_frames=33, window_chunks=1,
                           steps=StepPlan.uniform(ChunkSchedule(self_forcing_sigmas(), n_low=4)))
    sf_low = video_config("self_forcing", width=32, height=32, num_frames=33, window_chunks=1)
    traj = {"a": [], "b": []}
    out_a = run(model, all_low, ctx, callback=lambda i: traj["a"].append(i.x0) if i.kind == "denoise" else None)
    out_b = run(model, sf_low, ctx, callback=lambda i: traj["b"].append(i.x0) if i.kind == "denoise" else None)
    assert len(traj["a"]) == len(traj["b"]) == 12
    for xa, xb in zip(traj["a"], traj["b"]):
        assert xa.shape == (1, 16, 3, 4, 4) and torch.equal(xa, xb)
    assert out_a.shape[-2:] == (8, 8)
    want = F.interpolate(out_b[0].permute(1, 0, 2, 3), size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(out_a[0], want.permute(1, 0, 2, 3), atol=1e-6)


class RecordingNoise(NoiseSource):
    def __init__(self, seed):
        super().__init__(seed)
        self.draws = []

    def __call__(self, shape):
        n = super().__call__(shape)
        self.draws.append(n)
        return n


def test_high_res_stage_starts_from_upsampled_low_res_x0_renoised():
    model = tiny_model()
    ctx = context(model)
    cfg = video_config("histream", num_frames=21, upsample_method="bicubic")
    steps, noise = [], RecordingNoise(5)
    HiStreamPipeline(model, cfg).generate(ctx, callback=lambda i: steps.append(i) if i.kind == "denoise" else None,
                                          noise=noise)
    s = cfg.steps.first.sigmas
    assert [i.stage for i in steps[:4]] == ["low", "low", "high", "high"]
    assert steps[1].x.shape[-2:] == (4, 4) and steps[2].x.shape[-2:] == (8, 8)
    # draws of chunk 0: low init, low re-noise, high re-noise (hand-over), high re-noise
    assert [d.shape[-1] for d in noise.draws[:4]] == [4, 4, 8, 8]
    x0_low = steps[1].x0[0].permute(1, 0, 2, 3)
    up = F.interpolate(x0_low, size=(8, 8), mode="bicubic", align_corners=False).permute(1, 0, 2, 3)[None]
    assert torch.allclose(steps[2].x, (1 - s[2]) * up + s[2] * noise.draws[2], atol=1e-6)
    assert steps[0].sigma == s[0] and torch.allclose(steps[0].x, s[0] * noise.draws[0])


def test_both_caches_written_by_clean_passes():
    model = tiny_model()
    ctx = context(model)
    cfg = video_config("histream", num_frames=33)
    events, chunks = [], []
    p = HiStreamPipeline(model, cfg)
    for c in p.stream(ctx, seed=2, callback=lambda i: events.append(i) if i.kind == "cache" else None):
        chunks.append(c.latent)
    assert [(e.chunk, e.stage) for e in events] == [(0, "low"), (0, "high"), (1, "low"), (1, "high")]
    for e in events:
        final = chunks[e.chunk]
        if e.stage == "high":
            assert torch.equal(e.x, final)
        else:
            want = F.avg_pool2d(final[0].permute(1, 0, 2, 3), 2).permute(1, 0, 2, 3)[None]
            assert torch.allclose(e.x, want, atol=1e-6)


def test_batch_of_two_equals_two_single_runs():
    model = tiny_model()
    ctx = context(model, batch=2)
    both = run(model, video_config("histream_plus", batch_size=2), ctx, seed=10)
    one = run(model, video_config("histream_plus"), ctx[:1], seed=10)
    two = run(model, video_config("histream_plus"), ctx[1:], seed=11)
    assert torch.allclose(both, torch.cat([one, two]), atol=1e-5)


def test_interrupt_releases_caches():
    model = tiny_model()
    ctx = context(model)
    p = HiStreamPipeline(model, video_config("histream", num_frames=33))

    def stop(info):
        if info.global_step == 5:
            raise KeyboardInterrupt

    try:
        p.generate(ctx, callback=stop)
    except KeyboardInterrupt:
        pass
    assert p.low_cache.k is None and p.high_cache.k is None
    assert p.generate(ctx).shape[2] == 9  # and the next run works


def test_progress_counts_every_denoising_step():
    model = tiny_model()
    ctx = context(model)
    cfg = video_config("histream_plus", num_frames=45)  # 4 chunks: 4 + 3×2 steps
    seen = []
    run(model, cfg, ctx, callback=lambda i: seen.append((i.global_step, i.total_steps)) if i.kind == "denoise" else 0)
    assert seen == [(n, 10) for n in range(1, 11)]


def test_cache_relative_fast_path_equals_rotate_on_read_reference():
    """Keys stored rotated and re-rotated once per eviction == the whole cache rotated at every read."""
    model = tiny_model()
    ctx = context(model)
    for kw in (dict(window_chunks=1), dict(window_chunks=2, anchor_frames=1), dict(window_chunks=0)):
        cfg = video_config("histream_plus", num_frames=1 + 4 * 23, **kw)  # 24 latent frames, 8 chunks
        fast = HiStreamPipeline(model, cfg).generate(ctx, seed=1)
        ref = HiStreamPipeline(model, cfg, rotate_on_read=True).generate(ctx, seed=1)
        assert torch.allclose(fast, ref, rtol=1e-5, atol=1e-5), (kw, (fast - ref).abs().max())


def test_low_res_cache_uses_proportionally_smaller_ntk_scale():
    model = tiny_model()
    p = HiStreamPipeline(model, video_config("histream", rope_ntk_scale=3.0))
    low, high = p.plan_caches()
    assert high.rope.ntk_scale == 3.0 and low.rope.ntk_scale == 1.5
    p = HiStreamPipeline(model, video_config("histream", rope_ntk_scale=1.5))
    assert p.plan_caches()[0].rope.ntk_scale == 1.0


def test_failed_allocation_releases_what_was_allocated(monkeypatch):
    model = tiny_model()
    p = HiStreamPipeline(model, video_config("histream"))
    low, high = p.plan_caches()

    def boom():
        raise MemoryError("simulated OOM on the high-res cache")

    monkeypatch.setattr(high, "allocate", boom)
    with pytest.raises(MemoryError):
        p.generate(context(model))
    assert low.k is None and low.v is None


def test_last_step_cache_update_skips_only_the_full_res_clean_pass():
    model = tiny_model()
    ctx = context(model)
    clean = video_config("histream", num_frames=33)
    reuse = clean.with_(cache_update="last_step")
    ev_clean, ev_reuse = [], []
    a = run(model, clean, ctx, callback=lambda i: ev_clean.append((i.chunk, i.stage)) if i.kind == "cache" else 0)
    b = run(model, reuse, ctx, callback=lambda i: ev_reuse.append((i.chunk, i.stage)) if i.kind == "cache" else 0)
    assert ev_clean == [(0, "low"), (0, "high"), (1, "low"), (1, "high")]
    assert ev_reuse == [(0, "low"), (1, "low")]  # the low-res cache still gets clean K/V (its last step was noisy)
    assert torch.equal(a[:, :, :3], b[:, :, :3])  # chunk 0 reads no cache
    assert not torch.allclose(a[:, :, 3:], b[:, :, 3:], atol=1e-4)
