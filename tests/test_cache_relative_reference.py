"""cache_relative positions after evictions, against a reference written from their definition alone.

The reference cache keeps each committed chunk's un-rotated K/V in plain Python lists (the anchor, then the last
`window_chunks` chunks) and, at every read, concatenates them and rotates each key by its place 0..n-1 in that
order, the current chunk right after. It shares no bookkeeping with `KVCache` (no buffers, no moves, no re-rotation
by -L), so it checks the fast path's eviction and rotation, and its `rotate_on_read` reference, from outside.
"""

import pytest
import torch
from core_helpers import context, tiny_model, video_config

from histream_core import HiStreamPipeline
from histream_core.attention import sdpa
from histream_core.rope import apply_rope


class ListCache:
    def __init__(self, *, rope, grid_hw, anchor_frames, window_chunks, chunk_frames, name="cache", **_):
        self.rope, self.grid_hw, self.name = rope, grid_hw, name
        self.anchor_frames, self.window_chunks = anchor_frames, window_chunks
        self.capacity_frames = anchor_frames + ((window_chunks or 0) + 1) * chunk_frames
        self.tokens_per_frame = grid_hw[0] * grid_hw[1]
        self.k = None
        self.release()

    # the lifetime calls the pipeline makes
    def planned_nbytes(self):
        return 0

    nbytes = 0

    def allocate(self):
        self.k = "allocated"
        return self

    def release(self):
        self.k = None
        self.anchor = []  # (frames, {layer: (k, v)}) pieces, in order
        self.window = []  # the same, one per committed chunk (its frames past the anchor)
        self.current, self.written = None, {}

    def begin(self, frame_start, frames):
        if self.current is not None and self.current[0] == frame_start:
            return  # another step of the same chunk
        while self.window_chunks is not None and len(self.window) > self.window_chunks:
            self.window.pop(0)  # evict the oldest chunk
        self.current, self.written = (frame_start, frames), {}

    def attend(self, layer, q, k, v):
        self.written[layer] = (k, v)  # un-rotated; the last step's K/V are the ones committed
        pieces = [kv[layer] for _, kv in self.anchor + self.window] + [(k, v)]
        keys, values = torch.cat([p[0] for p in pieces], 1), torch.cat([p[1] for p in pieces], 1)
        n, f = keys.shape[1] // self.tokens_per_frame, k.shape[1] // self.tokens_per_frame
        h, w = self.grid_hw
        k_cos, k_sin = self.rope.angles(range(n), h, w, q.device)
        q_cos, q_sin = self.rope.angles(range(n - f, n), h, w, q.device)
        return sdpa(apply_rope(q, q_cos, q_sin), apply_rope(keys, k_cos, k_sin), values)

    def commit(self):
        frames, t = self.current[1], self.tokens_per_frame
        in_anchor = sum(fr for fr, _ in self.anchor)
        to_anchor = max(0, min(frames, self.anchor_frames - in_anchor))
        if to_anchor:
            self.anchor.append((to_anchor, {i: (k[:, :to_anchor * t], v[:, :to_anchor * t])
                                            for i, (k, v) in self.written.items()}))
        if frames > to_anchor:
            self.window.append((frames - to_anchor, {i: (k[:, to_anchor * t:], v[:, to_anchor * t:])
                                                     for i, (k, v) in self.written.items()}))
        self.current = None


def reference_run(model, cfg, ctx, seed, monkeypatch, prefix=None):
    with monkeypatch.context() as m:
        m.setattr(model, "new_cache", lambda **kw: ListCache(**kw))
        return HiStreamPipeline(model, cfg).generate(ctx, seed=seed, prefix_latent=prefix)


@pytest.mark.parametrize("anchor, window", [(None, 1), (1, 2), (4, 1), (0, 1), (3, 0)])
def test_cache_relative_after_evictions_equals_list_reference(anchor, window, monkeypatch):
    model = tiny_model()
    ctx = context(model)
    cfg = video_config("histream_plus", num_frames=1 + 4 * 20, anchor_frames=anchor, window_chunks=window,
                       position_mode="cache_relative")  # 21 latent frames, 7 chunks: several evictions
    want = reference_run(model, cfg, ctx, 1, monkeypatch)
    fast = HiStreamPipeline(model, cfg).generate(ctx, seed=1)
    slow = HiStreamPipeline(model, cfg, rotate_on_read=True).generate(ctx, seed=1)
    errors = {name: (got - want).abs().max().item() for name, got in (("fast path", fast), ("rotate_on_read", slow))}
    assert max(errors.values()) < 1e-5, errors
    # RoPE sees only offsets, and those differ from absolute positions' only between the anchor and what follows
    # it: with an anchor, the evictions must show, far beyond the error above; without one they cannot
    absolute = HiStreamPipeline(model, cfg.with_(position_mode="absolute")).generate(ctx, seed=1)
    moved = (absolute - want).abs().max().item()
    if cfg.anchor:
        assert moved > 20 * max(errors.values()) and moved > 1e-5, (moved, errors)
    else:
        assert moved < 1e-5, moved


def test_list_reference_is_exact_without_evictions(monkeypatch):
    """The reference itself: with a window covering the video, places are absolute frame indices."""
    model = tiny_model()
    ctx = context(model)
    cfg = video_config("histream", num_frames=1 + 4 * 11, window_chunks=None, position_mode="cache_relative")
    absolute = HiStreamPipeline(model, cfg.with_(position_mode="absolute")).generate(ctx, seed=2)
    assert torch.allclose(reference_run(model, cfg, ctx, 2, monkeypatch), absolute, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k, window", [(1, 1), (3, 2)])
def test_a_prefix_anchor_after_evictions_equals_list_reference(k, window, monkeypatch):
    """With a clean prefix (its place 0..k-1 is the anchor) the places after evictions are the reference's too."""
    model = tiny_model()
    ctx = context(model)
    cfg = video_config("histream_plus", num_frames=1 + 4 * 20, window_chunks=window, position_mode="cache_relative",
                       prefix_frames=k)
    prefix = torch.randn(1, 16, k, *cfg.latent_size, generator=torch.Generator().manual_seed(4))
    want = reference_run(model, cfg, ctx, 1, monkeypatch, prefix)
    fast = HiStreamPipeline(model, cfg).generate(ctx, seed=1, prefix_latent=prefix)
    slow = HiStreamPipeline(model, cfg, rotate_on_read=True).generate(ctx, seed=1, prefix_latent=prefix)
    assert torch.equal(fast[:, :, :k], prefix)
    assert max((fast - want).abs().max().item(), (slow - want).abs().max().item()) < 1e-5
