"""Cached chunked inference reproduces the block-masked full-sequence forward (the training-time form)."""

import pytest
import torch
from core_helpers import context, rel_err, tiny_model

from histream_core.masks import anchor_window_mask, block_causal_mask

CHUNK = 3


def cached_chunk_outputs(model, clean, noisy_last, t_last, ctx, *, anchor, window, mode):
    """Chunks of `clean` enter the cache through t=0 passes; the last chunk is `noisy_last` at t_last."""
    frames = clean.shape[2] + noisy_last.shape[2]
    cache = model.new_cache(batch=clean.shape[0], grid_hw=(clean.shape[3] // 2, clean.shape[4] // 2),
                            anchor_frames=anchor, window_chunks=window, chunk_frames=CHUNK, total_frames=frames,
                            position_mode=mode).allocate()
    text = model.text_cache(ctx)
    outs = []
    for s in range(0, clean.shape[2], CHUNK):
        outs.append(model.forward_chunk(clean[:, :, s:s + CHUNK], torch.zeros(clean.shape[0]), text, cache, s))
        cache.commit()
    t = torch.full((clean.shape[0],), t_last)
    outs.append(model.forward_chunk(noisy_last, t, text, cache, clean.shape[2]))
    return torch.cat(outs, dim=2), cache


def reference(model, clean, noisy_last, t_last, ctx, mask):
    x = torch.cat([clean, noisy_last], dim=2)
    t = torch.cat([torch.zeros(clean.shape[2]), torch.full((noisy_last.shape[2],), t_last)])[None]
    return model(x, t.expand(x.shape[0], -1), ctx, frame_mask=mask)


@pytest.mark.parametrize("mode", ["absolute", "cache_relative"])
def test_chunked_cached_equals_block_causal_forward(mode):
    torch.manual_seed(0)
    model = tiny_model()
    ctx = context(model, batch=2)
    clean, noisy = torch.randn(2, 16, 9, 8, 8), torch.randn(2, 16, 3, 8, 8)
    with torch.no_grad():
        got, _ = cached_chunk_outputs(model, clean, noisy, 700.0, ctx, anchor=CHUNK, window=None, mode=mode)
        want = reference(model, clean, noisy, 700.0, ctx, block_causal_mask(12, CHUNK))
    assert rel_err(got, want) <= 1e-5
    # and the mask matters: a bidirectional forward gives something else for early chunks
    with torch.no_grad():
        bidir = reference(model, clean, noisy, 700.0, ctx, None)
    assert rel_err(got[:, :, :3], bidir[:, :, :3]) > 1e-3


@pytest.mark.parametrize("anchor,window", [(3, 1), (1, 1), (3, 0), (6, 1), (2, 2)])
def test_windowed_cache_equals_anchor_window_mask(anchor, window):
    """In absolute mode a chunk reads exactly the anchor, the window and itself."""
    torch.manual_seed(1)
    model = tiny_model()
    ctx = context(model)
    clean, noisy = torch.randn(1, 16, 15, 8, 8), torch.randn(1, 16, 3, 8, 8)
    with torch.no_grad():
        got, cache = cached_chunk_outputs(model, clean, noisy, 500.0, ctx, anchor=anchor, window=window,
                                          mode="absolute")
        want = reference(model, clean, noisy, 500.0, ctx, anchor_window_mask(18, CHUNK, anchor, window))
        full = reference(model, clean, noisy, 500.0, ctx, block_causal_mask(18, CHUNK))
    assert rel_err(got, want) <= 1e-5
    assert rel_err(got[:, :, -3:], full[:, :, -3:]) > 1e-4  # the window really dropped something
    assert cache.capacity_frames == min(18, anchor + (window + 1) * CHUNK)


def test_time_per_frame_matches_scalar_time():
    model = tiny_model()
    ctx = context(model)
    x = torch.randn(1, 16, 6, 8, 8)
    with torch.no_grad():
        a = model(x, torch.tensor([300.0]), ctx)
        b = model(x, torch.full((1, 6), 300.0), ctx)
    assert torch.allclose(a, b, atol=1e-6)


def test_state_dict_has_wan_names():
    model = tiny_model()
    keys = set(model.state_dict())
    for k in ["patch_embedding.weight", "text_embedding.0.weight", "text_embedding.2.bias", "time_embedding.0.weight",
              "time_projection.1.weight", "blocks.0.self_attn.q.weight", "blocks.1.self_attn.norm_k.weight",
              "blocks.0.cross_attn.o.bias", "blocks.0.norm3.weight", "blocks.1.ffn.2.weight", "blocks.0.modulation",
              "head.head.weight", "head.modulation"]:
        assert k in keys
    assert not any(k.startswith("rope") for k in keys)


def test_runs_over_foreign_module_tree_without_copying():
    from histream_core import CausalWanModel

    own = tiny_model()
    wrapped = CausalWanModel.over(own, own.config)
    assert wrapped.blocks[0].self_attn.q.weight.data_ptr() == own.blocks[0].self_attn.q.weight.data_ptr()
    x, ctx = torch.randn(1, 16, 3, 8, 8), context(own)
    with torch.no_grad():
        assert torch.equal(wrapped(x, torch.tensor([100.0]), ctx), own(x, torch.tensor([100.0]), ctx))
        own.blocks[0].ffn[0].weight.mul_(2)  # a patch to the host's weights is seen by the wrapper
        assert torch.equal(wrapped(x, torch.tensor([100.0]), ctx), own(x, torch.tensor([100.0]), ctx))
