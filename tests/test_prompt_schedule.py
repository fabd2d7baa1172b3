"""Per-chunk prompt schedules: causality of a switch, window-only re-cache, flat memory, the in-place re-cache
against an independent rebuild of the caches, validation and the seconds → chunk conversion."""

import pytest
import torch
from core_helpers import context, tiny_model, video_config

from histream_core import HiStreamPipeline, PromptSchedule, PromptScheduleError
from histream_core.prompt_schedule import build_prompt_schedule, latent_frame_of_pixel_frame, seconds_to_chunk
from histream_core.resample import resize_latent

FRAMES_5_CHUNKS = 1 + 4 * 14  # 15 latent frames = 5 chunks of 3
MODES = [("cache_relative", False), ("cache_relative", True), ("absolute", False)]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def prompts(model):
    return [context(model, seed=s, tokens=t) for s, t in ((1, 7), (2, 5), (3, 9), (4, 6))]


def chunk_of(x, k, chunk_frames=3):
    return x[:, :, k * chunk_frames:(k + 1) * chunk_frames]


@pytest.mark.parametrize("preset", ["histream", "histream_plus", "self_forcing"])
def test_one_entry_schedule_equals_plain_tensor_bitwise(model, prompts, preset):
    cfg = video_config(preset, num_frames=FRAMES_5_CHUNKS, window_chunks=1)
    p = HiStreamPipeline(model, cfg)
    assert torch.equal(p.generate(prompts[0], seed=3), p.generate(PromptSchedule(((0, prompts[0]),)), seed=3))


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("cache_update", ["clean_pass", "last_step"])
def test_switch_keeps_earlier_chunks_and_changes_later_ones(model, prompts, k, cache_update):
    cfg = video_config("histream", num_frames=FRAMES_5_CHUNKS, window_chunks=1, cache_update=cache_update)
    p = HiStreamPipeline(model, cfg)
    plain = p.generate(prompts[0], seed=3)
    switched = p.generate(PromptSchedule(((0, prompts[0]), (k, prompts[1]))), seed=3)
    assert torch.equal(switched[:, :, :3 * k], plain[:, :, :3 * k])
    for j in range(k, cfg.num_chunks):
        assert (chunk_of(switched, j) - chunk_of(plain, j)).abs().max() > 1e-3, j


def same_bits(a, b):
    """Bitwise equality that also holds for never-written (torch.empty) memory, which may contain NaN patterns."""
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def _snapshot(cache):
    return cache.k.clone(), cache.v.clone()


@pytest.mark.parametrize("position_mode,rotate_on_read", MODES)
def test_recache_rewrites_only_the_window_entries(model, prompts, position_mode, rotate_on_read):
    """Window 2, switch at chunk 3: the window holds chunks 1 and 2 and nothing is evicted at the switch, so the
    buffers before and after the re-cache line up: anchor and free tail bitwise equal, each window entry new."""
    cfg = video_config("histream", num_frames=FRAMES_5_CHUNKS, window_chunks=2, position_mode=position_mode)
    p = HiStreamPipeline(model, cfg, rotate_on_read=rotate_on_read)
    before, after = {}, {}

    def spy(info):
        if info.kind == "cache" and info.chunk == 2 and info.stage == "high":  # chunk 2 written into both caches
            before.update(low=_snapshot(p.low_cache), high=_snapshot(p.high_cache))
        if info.kind == "recache":  # the last call holds both caches fully re-encoded
            after.update(low=_snapshot(p.low_cache), high=_snapshot(p.high_cache))

    p.generate(PromptSchedule(((0, prompts[0]), (3, prompts[1]))), seed=3, callback=spy)
    assert set(before) == set(after) == {"low", "high"}
    for name in ("low", "high"):
        tpf = (p.low_cache if name == "low" else p.high_cache).tokens_per_frame
        anchor, end = 3 * tpf, 9 * tpf  # anchor = chunk 0; window entries = chunks 1, 2
        for old, new in zip(before[name], after[name]):
            assert same_bits(old[:, :, :anchor], new[:, :, :anchor]), name
            assert same_bits(old[:, :, end:], new[:, :, end:]), name
            # layer 0's K/V see only the latent and t (text enters after its self-attention): re-encoding them
            # at the right positions reproduces them bitwise; every later layer carries the new prompt
            assert same_bits(old[0], new[0]), name
            for entry in (slice(anchor, 6 * tpf), slice(6 * tpf, end)):
                for layer in range(1, old.shape[0]):
                    assert not torch.allclose(old[layer, :, entry], new[layer, :, entry], atol=1e-5), (name, layer)


def _committed_at_chunk_start(p, k):
    """Callback that copies each cache's committed prefix at chunk k's first step against it (after any re-cache
    and the eviction that begin() does for the chunk)."""
    seen = {}

    def spy(info):
        if info.kind == "denoise" and info.chunk == k and info.stage not in seen:
            c = p.low_cache if info.stage == "low" else p.high_cache
            n = c.committed_frames * c.tokens_per_frame
            seen[info.stage] = (c.k[:, :, :n].clone(), c.v[:, :, :n].clone(), c.committed_positions())
    return seen, spy


@pytest.mark.parametrize("position_mode,rotate_on_read", MODES)
def test_anchor_unchanged_window_changed_after_evictions(model, prompts, position_mode, rotate_on_read):
    """Window 1, switch at chunk 3 (entries have been evicted and moved before): at chunk 3 the anchor equals the
    single-prompt run's bitwise, the window entry differs."""
    cfg = video_config("histream", num_frames=FRAMES_5_CHUNKS, window_chunks=1, position_mode=position_mode)
    p = HiStreamPipeline(model, cfg, rotate_on_read=rotate_on_read)
    plain, spy = _committed_at_chunk_start(p, 3)
    p.generate(prompts[0], seed=3, callback=spy)
    switched, spy = _committed_at_chunk_start(p, 3)
    p.generate(PromptSchedule(((0, prompts[0]), (3, prompts[1]))), seed=3, callback=spy)
    for name in ("low", "high"):
        (k0, v0, pos0), (k1, v1, pos1) = plain[name], switched[name]
        assert pos0 == pos1 == [0, 1, 2, 6, 7, 8]  # anchor = chunk 0, window = chunk 2
        a = k0.shape[2] // 2
        assert torch.equal(k0[:, :, :a], k1[:, :, :a]) and torch.equal(v0[:, :, :a], v1[:, :, :a])
        # layer 0 is text-independent (see above); the fast cache_relative path moved the plain run's entry down
        # with one re-rotation, which the fresh re-encode at its new place matches up to rounding
        exact = position_mode == "absolute" or rotate_on_read
        assert torch.equal(k0[0], k1[0]) if exact else torch.allclose(k0[0], k1[0], atol=1e-6, rtol=0)
        assert not torch.allclose(k0[1:, :, a:], k1[1:, :, a:], atol=1e-5)
        assert not torch.allclose(v0[1:, :, a:], v1[1:, :, a:], atol=1e-5)


@pytest.mark.parametrize("position_mode,rotate_on_read", MODES)
@pytest.mark.parametrize("window", [1, 2, None])
def test_in_place_recache_equals_rebuilt_caches(model, prompts, position_mode, rotate_on_read, window):
    """Reference: fresh caches filled by ordinary cache writes: chunk 0's t=0 pass under the old prompt (the
    anchor), then the window chunks' t=0 passes under the new prompt, in order, from the run's clean outputs."""
    k = 4
    cfg = video_config("histream", num_frames=FRAMES_5_CHUNKS, window_chunks=window, position_mode=position_mode)
    p = HiStreamPipeline(model, cfg, rotate_on_read=rotate_on_read)
    got, spy = _committed_at_chunk_start(p, k)
    out = p.generate(PromptSchedule(((0, prompts[0]), (k, prompts[1]))), seed=3, callback=spy)

    ref = HiStreamPipeline(model, cfg, rotate_on_read=rotate_on_read)
    ref.allocate()
    old_text, new_text = model.text_cache(prompts[0]), model.text_cache(prompts[1])
    t0 = torch.zeros(1)
    for name, cache in (("low", ref.low_cache), ("high", ref.high_cache)):
        def clean(j, low=name == "low"):
            x = chunk_of(out, j)
            return resize_latent(x, cfg.low_latent_size, cfg.downsample_method) if low else x

        model.forward_chunk(clean(0), t0, old_text, cache, 0)
        cache.commit()
        for j in range(1 if window is None else k - window, k):
            model.forward_chunk(clean(j), t0, new_text, cache, 3 * j)
            cache.commit()
        n = cache.committed_frames * cache.tokens_per_frame
        gk, gv, pos = got[name]
        assert pos == cache.committed_positions() == [0, 1, 2] + list(range(3 * (k - (window or k - 1)), 3 * k))
        assert torch.equal(gk, cache.k[:, :, :n]), (name, (gk - cache.k[:, :, :n]).abs().max())
        assert torch.equal(gv, cache.v[:, :, :n]), name
    ref.release()


@pytest.mark.parametrize("anchor", [0, 1, 4])
def test_anchor_not_a_whole_chunk(model, prompts, anchor):
    """Anchor 0 (all window), 1 (first frame) or 4 (chunk 0 + the first frame of chunk 1; chunk 1's other frames
    are a partial window entry): the anchor stays bitwise, every window frame changes, earlier chunks unchanged."""
    k = 3
    cfg = video_config("histream", num_frames=FRAMES_5_CHUNKS, window_chunks=1, anchor_frames=anchor)
    p = HiStreamPipeline(model, cfg)
    plain, spy = _committed_at_chunk_start(p, k)
    a = p.generate(prompts[0], seed=3, callback=spy)
    switched, spy = _committed_at_chunk_start(p, k)
    b = p.generate(PromptSchedule(((0, prompts[0]), (k, prompts[1]))), seed=3, callback=spy)
    assert torch.equal(a[:, :, :3 * k], b[:, :, :3 * k]) and not torch.allclose(a[:, :, 3 * k:], b[:, :, 3 * k:])
    for name in ("low", "high"):
        (k0, _, pos0), (k1, _, pos1) = plain[name], switched[name]
        assert pos0 == pos1 and pos0[:anchor] == list(range(anchor)) and len(pos0) > anchor
        n = anchor * k0.shape[2] // len(pos0)
        assert torch.equal(k0[:, :, :n], k1[:, :, :n])
        for f in range(anchor, len(pos0)):  # each window frame, in every layer after the first
            sl = slice(f * k0.shape[2] // len(pos0), (f + 1) * k0.shape[2] // len(pos0))
            assert not torch.allclose(k0[1:, :, sl], k1[1:, :, sl], atol=1e-5), (name, f)


def test_fast_cache_relative_equals_rotate_on_read_reference_with_switches(model, prompts):
    cfg = video_config("histream", num_frames=FRAMES_5_CHUNKS, window_chunks=1)
    sched = PromptSchedule(((0, prompts[0]), (2, prompts[1]), (4, prompts[2])))
    fast = HiStreamPipeline(model, cfg).generate(sched, seed=3)
    slow = HiStreamPipeline(model, cfg, rotate_on_read=True).generate(sched, seed=3)
    assert torch.allclose(fast, slow, atol=1e-5, rtol=0), (fast - slow).abs().max()


def test_memory_flat_across_three_switches(model, prompts):
    cfg = video_config("histream", num_frames=1 + 4 * 20, window_chunks=1)  # 21 latent frames, 7 chunks
    sched = PromptSchedule(((0, prompts[0]), (1, prompts[1]), (3, prompts[2]), (5, prompts[3])))

    def buffers(ctx):
        p = HiStreamPipeline(model, cfg)
        seen, kinds, kept = set(), set(), []

        def spy(info):
            kinds.add(info.kind)
            seen.add(tuple((c.k.data_ptr(), c.v.data_ptr(), c.nbytes) for c in (p.low_cache, p.high_cache)))
            if p.window_latents is not None:
                kept.append(max(len(d) for d in p.window_latents.kept.values()))
        p.generate(ctx, seed=0, callback=spy)
        assert p.low_cache.k is None and p.window_latents is None  # released at the end
        return seen, kinds, kept

    plain, plain_kinds, _ = buffers(prompts[0])
    switched, kinds, kept = buffers(sched)
    assert "recache" in kinds and "recache" not in plain_kinds
    assert len(switched) == 1  # the same buffers, the same size, through every switch
    assert [n for *_, n in next(iter(switched))] == [n for *_, n in next(iter(plain))]
    assert max(kept) <= cfg.window_chunks + 1  # clean latents kept: a fixed, small number of chunks


# ---- validation and unit conversion --------------------------------------------------------------------------
@pytest.mark.parametrize("entries,expect", [
    ((), "empty"),
    (((1, "a"),), "starts at chunk 1: it must start at 0"),
    (((0, "a"), (2, "b"), (2, "c")), "strictly increase"),
    (((0, "a"), (3, "b"), (1, "c")), "strictly increase"),
])
def test_bad_schedules_are_refused(entries, expect):
    entries = tuple((s, torch.zeros(1, 2, 32)) for s, _ in entries)
    with pytest.raises(PromptScheduleError, match=expect):
        PromptSchedule(entries)


def test_start_beyond_the_video_is_refused_before_allocating(model, prompts):
    cfg = video_config("histream", num_frames=FRAMES_5_CHUNKS)
    p = HiStreamPipeline(model, cfg)
    with pytest.raises(PromptScheduleError, match="only 5 chunks"):
        p.generate(PromptSchedule(((0, prompts[0]), (5, prompts[1]))))
    assert p.low_cache is None and p.high_cache is None  # nothing planned or allocated
    bad = torch.zeros(1, 4, model.config.text_dim + 1)
    with pytest.raises(ValueError, match="text context must be"):
        p.generate(PromptSchedule(((0, prompts[0]), (2, bad))))
    assert p.low_cache is None


@pytest.mark.parametrize("pixel,latent", [(0, 0), (1, 1), (4, 1), (5, 2), (8, 2), (9, 3), (80, 20)])
def test_pixel_frame_to_latent_frame(pixel, latent):
    assert latent_frame_of_pixel_frame(pixel) == latent


@pytest.mark.parametrize("seconds,chunk_frames,chunk", [
    (0.0, 3, 0), (0.25, 3, 0),  # frame 4 → latent 1
    (0.5, 3, 0),  # frame 8 → latent 2
    (0.5625, 3, 1),  # frame 9 → latent 3
    (1.0, 3, 1),  # frame 16 → latent 4
    (2.0, 3, 2),  # frame 32 → latent 8
    (5.0, 3, 6),  # frame 80 → latent 20, the last chunk of an 81-frame video
    (1.0, 1, 4), (2.0, 4, 2), (3.0, 5, 2),  # frame 48 → latent 12
    (0.03, 3, 0),  # 0.48 frames rounds to frame 0
    (1.03, 3, 1),  # 16.48 → frame 16
])
def test_seconds_to_chunk_hand_computed(seconds, chunk_frames, chunk):
    assert seconds_to_chunk(seconds, chunk_frames) == chunk


def test_build_prompt_schedule_units_and_errors():
    a, b, c = (torch.full((1, 2, 32), float(i)) for i in range(3))
    s = build_prompt_schedule([(0, "second", a), (1.0, "second", b), (2.0, "second", c)], chunk_frames=3,
                              num_chunks=7)
    assert s.starts == [0, 1, 2] and s.entries[2][1] is c
    assert build_prompt_schedule([(0, "chunk", a), (4.0, "chunk", b)], chunk_frames=3).starts == [0, 4]
    with pytest.raises(PromptScheduleError, match="both fall in chunk 0"):
        build_prompt_schedule([(0, "second", a), (0.25, "second", b)], chunk_frames=3)
    with pytest.raises(PromptScheduleError, match="whole number"):
        build_prompt_schedule([(0, "chunk", a), (1.5, "chunk", b)], chunk_frames=3)
    with pytest.raises(PromptScheduleError, match="unknown prompt start unit"):
        build_prompt_schedule([(0, "frame", a)], chunk_frames=3)
    with pytest.raises(PromptScheduleError, match="only 7 chunks"):
        build_prompt_schedule([(0, "second", a), (6.0, "second", b)], chunk_frames=3, num_chunks=7)
