"""The rollout teacher and stage 2 of the toy's training: on a true video the teacher's continuation is the video
itself (data.render is the independent expectation), on a spoiled one it is the true video the spoiled one shows,
a stage-2 row is the sampler's cached step, and a short stage-2 run writes loadable Wan weights."""

from __future__ import annotations

import json
import random

import pytest
import torch
from core_helpers import rel_err

from histream_core.model import CausalWanModel
from histream_toy.data import Degradation, VideoSpec, _layout, random_spec, render
from histream_toy.sampling import TOY_WAN_CONFIG
from histream_toy.teacher import measure, teacher_video
from histream_toy.train_dit import teacher_forced_forward
from histream_toy.train_rollout import context_frames, main

SEED = random.randrange(2**31)


def _group_errors(teacher, truth, latent_frames):
    return torch.tensor([(teacher[:, 4 * i - 3:4 * i + 1] - truth[:, 4 * i - 3:4 * i + 1]).abs().mean().item()
                         for i in range(1, latent_frames)])


def test_teacher_continues_a_true_video_as_itself():
    print(f"seed {SEED}")
    rng = random.Random(SEED)
    errors = []
    for _ in range(16):
        spec = random_spec(rng)
        video = render(spec, 45, 128, 128)
        state = measure(video, spec.prompt)
        size, _, tint, tint2 = _layout(spec)
        assert abs(state.size - size) < 0.01, spec
        assert max(abs(a - b) for a, b in zip(state.top, tint)) < 0.02, spec
        bottom = tint if spec.background == "plain" else tint2
        assert max(abs(a - b) for a, b in zip(state.bottom, bottom)) < 0.02, spec
        teacher, ok, alpha = teacher_video(state, 12, 128, 128)
        assert teacher.shape == video.shape and alpha.shape == video.shape[1:]
        assert ok.tolist() == [True] * 12
        errors.append(_group_errors(teacher, video, 12))
    errors = torch.cat(errors)
    # edge antialiasing and the odd bounce one frame early or late: small; a wrong position or size is >= 0.02
    assert errors.median() < 0.004 and (errors < 0.02).float().mean() > 0.95, errors.sort().values[-8:]


def test_teacher_restores_a_faded_off_colour_object():
    """A weak rollout (faded, off-colour, soft object) is continued as the crisp true video it shows."""
    spec = VideoSpec("green", "square", "down", "fast", "gradient", 5)
    weak = render(spec, 33, 128, 128, degrade=Degradation(opacity=0.75, color_mix=0.1, softness=3.0))
    teacher, _, _ = teacher_video(measure(weak, spec.prompt), 9, 128, 128)
    truth = render(spec, 33, 128, 128)
    assert (weak - truth).abs().amax() > 0.3  # the weak object is visibly off
    weak_err, err = _group_errors(weak, truth, 9), _group_errors(teacher, truth, 9)
    assert weak_err.min() > 0.015
    # a soft edge reads ~1 px small and the bounce may come a frame late: one group may be off, the rest are true
    assert err.median() < weak_err.median() / 4 and (err > 0.01).sum() <= 1, err


def test_teacher_keeps_frame_0_look_and_follows_the_object_shown():
    """The continuation starts where the rollout's object is (not where the spec's was) and keeps frame 0's size
    and background: a video whose object jumped keeps being continued from the jump."""
    spec = VideoSpec("red", "circle", "right", "slow", "plain", 2)
    video = render(spec, 33, 128, 128)
    jumped = render(VideoSpec("red", "circle", "right", "slow", "plain", 4), 33, 128, 128)
    mixed = torch.cat([video[:, :9], jumped[:, 9:]], 1)  # frames 9.. come from another layout
    state = measure(mixed, spec.prompt)
    teacher, _, _ = teacher_video(state, 9, 128, 128)
    size0 = _layout(spec)[0]
    assert abs(state.size - size0) < 0.01  # frame 0's size, not the jumped video's
    later = measure(teacher, spec.prompt)
    shown = measure(jumped, spec.prompt).centre
    # group 4 (frames 13-16) continues frame 12 of the jumped part, one step right of it per frame
    assert (later.centre[13:17, 1] - shown[12, 1]).abs().max() < 0.01
    assert abs(later.centre[16, 0] - shown[12, 0] - 4 * 0.03) < 0.01


def test_context_frames_are_the_anchor_and_the_window():
    assert [context_frames(i) for i in range(1, 7)] == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 2, 3, 4],
                                                         [0, 3, 4, 5]]


@pytest.mark.parametrize("n_ctx", [1, 3])
def test_stage_two_row_is_the_cached_sampler_step(n_ctx):
    """A stage-2 row [context | fillers, noisy] predicts for its last frame what the sampler's cached step does
    after writing the context at t = 0; the filler noisy frames change nothing."""
    torch.manual_seed(n_ctx)
    model = CausalWanModel(TOY_WAN_CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    clean = torch.randn(1, 16, n_ctx, 8, 8)
    last = torch.randn(1, 16, 1, 8, 8)
    ctx = torch.randn(1, 16, 4096)
    t = torch.cat([torch.zeros(1, n_ctx), torch.tensor([[700.0]])], 1)
    with torch.no_grad():
        got = teacher_forced_forward(model, clean, torch.cat([clean, last], 2), t, ctx)[:, :, -1:]
        other = teacher_forced_forward(model, clean, torch.cat([torch.randn_like(clean), last], 2), t, ctx)
        assert torch.equal(got, other[:, :, -1:])
        cache = model.new_cache(batch=1, grid_hw=(4, 4), anchor_frames=1, window_chunks=3, chunk_frames=1,
                                total_frames=n_ctx + 1, position_mode="cache_relative").allocate()
        text = model.text_cache(ctx)
        for k in range(n_ctx):
            model.forward_chunk(clean[:, :, k:k + 1], torch.zeros(1), text, cache, k)
            cache.commit()
        want = model.forward_chunk(last, torch.tensor([700.0]), text, cache, n_ctx)
    assert rel_err(got, want) <= 1e-5


def test_short_stage_two_run_writes_loadable_wan_weights(tmp_path):
    from histream_core.loading import load_wan_state_dict

    out = tmp_path / "dit.safetensors"
    assert main(["--stage1-steps", "2", "--steps", "4", "--minutes", "0", "--videos", "4", "--batch", "2",
                 "--rollout-batch", "2", "--rollout-latents", "3", "--reuse", "2", "--log-every", "2",
                 "--coupled-prob", "0.5", "--coupled-after-minutes", "0",
                 "--checkpoint-minutes", "0", "--out", str(out)]) == 0
    sd, cfg, info = load_wan_state_dict(out)
    assert cfg == TOY_WAN_CONFIG
    meta = json.loads(info["metadata"]["histream_toy_dit"])
    assert meta["steps"] == 2 and meta["stage2_steps"] == 4 and meta["stage2_rollout_batch"] == 2
    assert all(torch.isfinite(v).all() for v in sd.values())


def test_recorded_noise_is_the_pipelines_own_and_one_draw_per_chunk_and_resolution():
    """RecordedNoise draws what NoiseSource(seed) draws (the same video) and keeps each chunk's starting noise:
    histream starts every chunk at low res and re-noises once at full res (the DRC hand-over)."""
    from histream_toy._engine import HiStreamPipeline
    from histream_toy.sampling import toy_config
    from histream_toy.train_rollout import RecordedNoise

    torch.manual_seed(0)
    model = CausalWanModel(TOY_WAN_CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ctx = torch.randn(2, 16, 4096)
    for preset, low in (("histream", True), ("self_forcing", False)):
        cfg = toy_config(9, 64, preset, sampler="euler", batch_size=2, guidance_scale=1.0)
        noise = RecordedNoise(5, 2)
        got = HiStreamPipeline(model, cfg).generate(ctx, noise=noise)
        assert torch.equal(got, HiStreamPipeline(model, cfg).generate(ctx, seed=5))
        assert noise.at(8).shape == (2, 16, 3, 8, 8)
        assert (noise.at(4) is not None) == low
        if low:
            assert noise.at(4).shape == (2, 16, 3, 4, 4)
