"""The toy DiT's training script: its teacher-forced objective is the sampler's cached forward, its loss masks
cover the object, its layouts are what they say, and a short run writes loadable Wan weights."""

from __future__ import annotations

import json
import random

import torch
from core_helpers import rel_err

from histream_core.model import CausalWanModel
from histream_toy.data import random_spec, render
from histream_toy.sampling import TOY_WAN_CONFIG
from histream_toy.train_dit import main, object_masks, sample_layout, teacher_forced_forward


def test_teacher_forced_forward_is_the_cached_sampler_step():
    """Noisy frame k in the training sequence [clean | noisy] sees what the sampler's frame k sees: clean frames
    0..k-1 through t = 0 cache writes, then itself at its timestep (chunks of 1, cache_relative positions)."""
    torch.manual_seed(0)
    model = CausalWanModel(TOY_WAN_CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # the zero-initialised head would make every output 0
    clean, noisy = torch.randn(2, 16, 4, 8, 8), torch.randn(2, 16, 5, 8, 8)
    ctx = torch.randn(2, 16, 4096)
    t = torch.rand(2, 5) * 1000
    with torch.no_grad():
        got = teacher_forced_forward(model, clean, noisy, t, ctx)
        cache = model.new_cache(batch=2, grid_hw=(4, 4), anchor_frames=1, window_chunks=None, chunk_frames=1,
                                total_frames=5, position_mode="cache_relative").allocate()
        text = model.text_cache(ctx)
        for k in range(5):
            want = model.forward_chunk(noisy[:, :, k:k + 1], t[:, k], text, cache, k)
            assert rel_err(got[:, :, k:k + 1], want) <= 1e-5, k
            if k < 4:
                model.forward_chunk(clean[:, :, k:k + 1], torch.zeros(2), text, cache, k)
                cache.commit()


def test_object_masks_cover_the_object_now_and_one_latent_frame_before():
    spec = random_spec(random.Random(3))
    masks = object_masks([spec], 128)[0]  # [9, 16, 16]
    _, alpha = render(spec, 33, 128, 128, with_mask=True)
    assert masks.shape == (9, 16, 16)
    for i in range(9):
        frames = [0] if i == 0 else list(range(4 * i - 3, 4 * i + 1))
        cells = torch.nn.functional.max_pool2d(alpha[frames].amax(0)[None], 8)[0] > 0.5
        assert masks[i][cells].all(), i
        if i > 0:
            before = torch.nn.functional.max_pool2d(alpha[[0] if i == 1 else list(range(4 * i - 7, 4 * i - 3))]
                                                    .amax(0)[None], 8)[0] > 0.5
            assert masks[i][before].all(), i
    assert 0.05 < masks.float().mean() < 0.6  # the object and its surroundings, not the frame


def test_layouts():
    rng = random.Random(0)
    assert sample_layout(rng, 9, 0.0, first_frame_prob=1.0) == ([0], [1.0])
    assert sample_layout(rng, 9, 0.0, first_motion_prob=1.0) == ([0, 1], [0.0, 1.0])
    frames, weights = sample_layout(rng, 9, gap_prob=1.0)  # anchor + a later run of window + 1, loss on its end
    assert frames[0] == 0 and frames[1] > 1 and frames[1:] == list(range(frames[1], frames[1] + 4))
    assert weights == [0.0] * 4 + [1.0]
    for _ in range(20):
        frames, weights = sample_layout(rng, 9, gap_prob=0.0)
        assert frames == list(range(len(frames))) and 2 <= len(frames) <= 9 and weights == [1.0] * len(frames)


def test_short_training_run_writes_loadable_wan_weights(tmp_path):
    from histream_core.loading import load_wan_state_dict

    out = tmp_path / "dit.safetensors"
    assert main(["--steps", "4", "--videos", "4", "--batch", "2", "--eval", "0", "--log-every", "2",
                 "--out", str(out)]) == 0
    sd, cfg, info = load_wan_state_dict(out)
    assert cfg == TOY_WAN_CONFIG and info["format"] == "wan_official"
    meta = json.loads(info["metadata"]["histream_toy_dit"])
    assert meta["steps"] == 4 and meta["cond_drop"] > 0 and meta["object_weight"] > 0
    assert all(torch.isfinite(v).all() for v in sd.values())
