"""VACE control in the core: chunked causal VACE equals the block-causal full-sequence VACE forward, the pipeline
with control equals a reference loop over that forward, no control is the plain path bit for bit, and the packed
8x8 mask is resized through its pixels."""

import pytest
import torch
import torch.nn.functional as F
from core_helpers import context, reference_self_forcing, rel_err, video_config
from vace_helpers import random_control, vace_model, without_vace

from histream_core import CausalWanModel, HiStreamPipeline
from histream_core.masks import anchor_window_mask, block_causal_mask
from histream_core.memory import cache_bytes, vace_cache_bytes
from histream_core.vace import VaceControl, VaceInput, pack_mask, resize_packed_mask, unpack_mask, vace_text_cache

CHUNK = 3


def vace_ctx(control: VaceControl, frames: int, size) -> torch.Tensor:
    return control.chunk_context(0, frames, size, batch=control.frames[0].shape[0])


def chunked(model, clean, noisy, t_last, ctx, control, *, anchor, window, mode):
    """Chunks of `clean` enter both caches through t=0 passes; the last chunk is `noisy` at t_last."""
    b, frames, h, w = clean.shape[0], clean.shape[2] + noisy.shape[2], clean.shape[3], clean.shape[4]
    kw = dict(batch=b, grid_hw=(h // 2, w // 2), anchor_frames=anchor, window_chunks=window, chunk_frames=CHUNK,
              total_frames=frames, position_mode=mode)
    cache = model.new_cache(**kw).allocate()
    vcache = model.new_cache(**kw, vace_entries=control.entries).allocate()
    text, vtext = model.text_cache(ctx), vace_text_cache(model, ctx, control.entries)
    full = vace_ctx(control, frames, (h, w))
    outs = []
    for s in range(0, frames, CHUNK):
        x = clean[:, :, s:s + CHUNK] if s < clean.shape[2] else noisy
        t = torch.zeros(b) if s < clean.shape[2] else torch.full((b,), t_last)
        vace = VaceInput(full[:, :, s:s + CHUNK], control.strengths, vtext, vcache)
        outs.append(model.forward_chunk(x, t, text, cache, s, vace))
        cache.commit()
        vcache.commit()
    return torch.cat(outs, dim=2), vcache


def reference(model, clean, noisy, t_last, ctx, control, mask):
    x = torch.cat([clean, noisy], dim=2)
    t = torch.cat([torch.zeros(clean.shape[2]), torch.full((noisy.shape[2],), t_last)])[None]
    vace = VaceInput(vace_ctx(control, x.shape[2], x.shape[3:]), control.strengths)
    return model(x, t.expand(x.shape[0], -1), ctx, frame_mask=mask, vace=vace)


@pytest.mark.parametrize("mode", ["absolute", "cache_relative"])
def test_chunked_vace_equals_block_causal_reference(mode):
    model = vace_model()
    ctx = context(model, batch=2)
    g = torch.Generator().manual_seed(0)
    clean, noisy = torch.randn(2, 16, 9, 8, 8, generator=g), torch.randn(2, 16, 3, 8, 8, generator=g)
    control = random_control(12, (8, 8), entries=2, strengths=[0.8, 1.5], batch=2)
    with torch.no_grad():
        got, _ = chunked(model, clean, noisy, 700.0, ctx, control, anchor=CHUNK, window=None, mode=mode)
        want = reference(model, clean, noisy, 700.0, ctx, control, block_causal_mask(12, CHUNK))
        plain = model(torch.cat([clean, noisy], 2), torch.zeros(2, 12), ctx, frame_mask=block_causal_mask(12, 3))
    assert rel_err(got, want) <= 1e-5
    assert rel_err(want, plain) > 1e-2  # the control matters


@pytest.mark.parametrize("anchor,window", [(3, 1), (1, 1), (3, 0)])
def test_windowed_vace_cache_equals_anchor_window_mask(anchor, window):
    """With eviction, the VACE stream reads exactly the anchor, the window and its own chunk, like the main one."""
    model = vace_model(seed=1)
    ctx = context(model)
    g = torch.Generator().manual_seed(1)
    clean, noisy = torch.randn(1, 16, 12, 8, 8, generator=g), torch.randn(1, 16, 3, 8, 8, generator=g)
    control = random_control(15, (8, 8), seed=2)
    with torch.no_grad():
        got, vcache = chunked(model, clean, noisy, 500.0, ctx, control, anchor=anchor, window=window,
                              mode="absolute")
        want = reference(model, clean, noisy, 500.0, ctx, control, anchor_window_mask(15, CHUNK, anchor, window))
        full = reference(model, clean, noisy, 500.0, ctx, control, block_causal_mask(15, CHUNK))
    assert rel_err(got, want) <= 1e-5
    assert rel_err(got[:, :, -3:], full[:, :, -3:]) > 1e-4  # the window really dropped something
    assert vcache.num_layers == 2 and vcache.capacity_frames == min(15, anchor + (window + 1) * CHUNK)


def test_vace_model_without_control_is_the_plain_model_bitwise():
    model = vace_model()
    plain = without_vace(model)
    assert model.has_vace and not plain.has_vace and CausalWanModel.over(model, model.config).has_vace
    x, ctx = torch.randn(1, 16, 3, 8, 8), context(model)
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([400.0]), ctx), plain(x, torch.tensor([400.0]), ctx))


def reference_self_forcing_vace(model, cfg, ctx, control, seed):
    """The Self-Forcing reference (core_helpers) over the block-causal forward with the control of frames < n."""
    full_ctx = vace_ctx(control, cfg.latent_frames, cfg.latent_size)

    def velocity(seq, t, start, frames):
        n = start + frames
        vace = VaceInput(full_ctx[:, :, :n], control.strengths)
        return model(seq, t, ctx, frame_mask=block_causal_mask(n, cfg.chunk_frames), vace=vace)[:, :, start:]

    return reference_self_forcing(cfg, seed, velocity)


def test_pipeline_with_control_equals_reference_over_full_forward():
    model = vace_model(seed=2)
    ctx = context(model)
    cfg = video_config("self_forcing", width=32, height=32, num_frames=29)  # 8 latent frames: chunks 3, 3, 2
    control = random_control(cfg.latent_frames, cfg.latent_size, entries=2, strengths=[0.6, 1.2], seed=3)
    with torch.no_grad():
        got = HiStreamPipeline(model, cfg).generate(ctx, seed=4, control=control)
        want = reference_self_forcing_vace(model, cfg, ctx, control, seed=4)
        plain = HiStreamPipeline(model, cfg).generate(ctx, seed=4)
    assert rel_err(got, want) <= 1e-5
    assert rel_err(got, plain) > 1e-2


def test_control_changes_output_strength_zero_and_none_are_plain():
    model = vace_model(seed=3)
    ctx = context(model)
    cfg = video_config("histream", num_frames=21)  # DRC: low-res steps use the resized control
    frames, size = cfg.latent_frames, cfg.latent_size
    pipe = HiStreamPipeline(model, cfg)
    with torch.no_grad():
        plain = pipe.generate(ctx, seed=1)
        controlled = pipe.generate(ctx, seed=1, control=random_control(frames, size, strengths=[1.0]))
        zero = pipe.generate(ctx, seed=1, control=random_control(frames, size, strengths=[0.0]))
        # the same weights without VACE modules: the plain path of a plain model
        bare = HiStreamPipeline(without_vace(model), cfg).generate(ctx, seed=1)
    assert torch.equal(plain, bare)
    assert torch.equal(zero, plain)
    assert rel_err(controlled, plain) > 1e-2
    # VACE caches exist only during a run
    assert pipe.low.vace_cache is None and pipe.high.vace_cache is None and pipe.control is None


def test_cache_nbytes_counts_the_vace_caches_before_the_run():
    """The planned KV bytes (logged before the run and quoted by the OOM message) include the VACE caches already
    before the run, equal what the run allocates, and agree with the memory planner's count."""
    model, cfg = vace_model(), video_config("histream", num_frames=45, window_chunks=1)
    control = random_control(cfg.latent_frames, cfg.latent_size, entries=2, strengths=[1.0, 0.5])
    pipe = HiStreamPipeline(model, cfg)
    plain, planned = pipe.cache_nbytes(), pipe.cache_nbytes(control)
    main = sum(cache_bytes(model.config, cfg, bytes_per_elem=4).values())
    assert plain == main
    assert planned == main + vace_cache_bytes(model.config, cfg, 2, 2, bytes_per_elem=4) > plain
    allocated = set()

    def spy(info):
        caches = (r.cache for r in (pipe.low, pipe.high)), (r.vace_cache for r in (pipe.low, pipe.high))
        allocated.add(sum(c.nbytes for group in caches for c in group if c is not None))
        assert pipe.cache_nbytes() == planned  # the same number during the run

    with torch.no_grad():
        pipe.generate(context(model), seed=1, control=control, callback=spy)
    assert allocated == {planned}
    assert pipe.cache_nbytes() == plain  # after the run: no control, no VACE caches


def test_batch_of_two_with_two_controls_equals_single_runs():
    """Entries and videos share the batch axis (entry-major): a batch of two with one text equals two runs."""
    model = vace_model(seed=5)
    ctx = context(model)  # batch 1, expanded to the video batch
    cfg = video_config("histream_plus", width=32, height=32, num_frames=21)
    control = random_control(cfg.latent_frames, cfg.latent_size, entries=2, strengths=[0.5, 1.0], seed=8)
    with torch.no_grad():
        both = HiStreamPipeline(model, cfg.with_(batch_size=2)).generate(ctx, seed=10, control=control)
        one = HiStreamPipeline(model, cfg).generate(ctx, seed=10, control=control)
        two = HiStreamPipeline(model, cfg).generate(ctx, seed=11, control=control)
    assert rel_err(both, torch.cat([one, two])) <= 1e-5


def test_control_is_causal_and_reaches_low_res_stage_resized():
    model = vace_model(seed=4)
    ctx = context(model)
    cfg = video_config("histream", num_frames=33)  # 9 latent frames, 3 chunks
    base = random_control(cfg.latent_frames, cfg.latent_size, seed=7)
    later = VaceControl([base.frames[0].clone()], [base.masks[0].clone()], [1.0])
    later.frames[0][:, :, 6:] += 1.0  # change the last chunk's control only
    seen = []
    pipe = HiStreamPipeline(model, cfg)
    orig = model.forward_chunk

    def spy(x, t, text, cache, start, vace=None):
        seen.append((x.shape[-1], start, vace.context.clone()))
        return orig(x, t, text, cache, start, vace)

    with torch.no_grad():
        a = pipe.generate(ctx, seed=2, control=base)
        model.forward_chunk = spy
        b = pipe.generate(ctx, seed=2, control=later)
    assert torch.equal(a[:, :, :6], b[:, :, :6]) and rel_err(b[:, :, 6:], a[:, :, 6:]) > 1e-3
    low = [(s, c) for w, s, c in seen if w == cfg.low_latent_size[1]]
    assert low and all(c.shape[-2:] == cfg.low_latent_size for _, c in low)
    s, c = low[0]
    want_lat = F.avg_pool2d(later.frames[0][0, :, s:s + 3].transpose(0, 1), 2).transpose(0, 1)
    assert torch.allclose(c[0, :32], want_lat, atol=1e-6)


def test_pack_mask_matches_hand_packing_and_inverts():
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, 16, 24, generator=g)
    packed = pack_mask(pixels)
    assert packed.shape == (2, 64, 3, 2, 3)
    for r in range(8):
        for c in range(8):  # channel 8·r + c holds pixel (8y + r, 8x + c)
            assert torch.equal(packed[:, 8 * r + c], pixels[:, :, r::8, c::8])
    assert torch.equal(unpack_mask(packed), pixels)


def test_packed_mask_resize_equals_resizing_pixels_then_packing():
    g = torch.Generator().manual_seed(1)
    pixels = (torch.rand(1, 4, 32, 48, generator=g) > 0.5).float()
    packed = pack_mask(pixels)
    got = resize_packed_mask(packed, (2, 3))
    # independent: average each 2x2 pixel block, then pack by hand
    small = pixels.reshape(1, 4, 16, 2, 24, 2).mean(dim=(3, 5))
    want = torch.stack([small[:, :, r::8, c::8] for r in range(8) for c in range(8)], dim=1)
    assert torch.allclose(got, want, atol=1e-6)
    naive = F.interpolate(packed[0].transpose(0, 1), size=(2, 3), mode="bilinear").transpose(0, 1)[None]
    assert not torch.allclose(naive, want, atol=1e-2)  # bilinear on packed channels is something else


def test_control_errors_are_clear_and_early():
    model = vace_model()
    ctx = context(model)
    cfg = video_config("histream", num_frames=21)
    pipe = HiStreamPipeline(model, cfg)
    ref = random_control(cfg.latent_frames + 1, cfg.latent_size)  # WanVaceToVideo with a reference_image
    with pytest.raises(ValueError, match="reference_image"):
        pipe.generate(ctx, control=ref)
    with pytest.raises(ValueError, match="width, height and length"):
        pipe.generate(ctx, control=random_control(cfg.latent_frames, (4, 4)))
    with pytest.raises(ValueError, match="no VACE blocks"):
        HiStreamPipeline(without_vace(model), cfg).generate(
            ctx, control=random_control(cfg.latent_frames, cfg.latent_size))
    assert pipe.low_cache is None or pipe.low_cache.k is None  # refused before allocating


def test_single_chunk_equals_host_vace_model(comfy_modules):
    """One chunk, one timestep, no mask: our VACE forward equals the host's own VaceWanModel (fp32)."""
    model = vace_model(seed=6)
    c = model.config
    host = comfy_modules.wan_model.VaceWanModel(
        patch_size=c.patch_size, text_len=c.text_len, in_dim=c.in_dim, dim=c.dim, ffn_dim=c.ffn_dim,
        freq_dim=c.freq_dim, text_dim=c.text_dim, out_dim=c.out_dim, num_heads=c.num_heads, num_layers=c.num_layers,
        qk_norm=c.qk_norm, cross_attn_norm=c.cross_attn_norm, eps=c.eps, vace_layers=2, vace_in_dim=96,
        operations=comfy_modules.ops.disable_weight_init, dtype=torch.float32)
    missing, unexpected = host.load_state_dict(model.state_dict(), strict=True)
    assert not missing and not unexpected
    host.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 3, 8, 12, generator=g)
    t = torch.tensor([937.5, 250.0])
    ctx = context(model, batch=2)
    control = random_control(3, (8, 12), entries=2, strengths=[0.7, 1.3], batch=2)
    ours_ctx = vace_ctx(control, 3, (8, 12))  # [entries·B, 96, ...], entry-major
    host_ctx = ours_ctx.unflatten(0, (2, 2)).movedim(0, 1)  # the host's [B, entries, 96, ...]
    with torch.no_grad():
        want = host(x, t, ctx, vace_context=host_ctx, vace_strength=[0.7, 1.3])
        got = model(x, t, ctx, vace=VaceInput(ours_ctx, [0.7, 1.3]))
        plain = model(x, t, ctx)
    assert rel_err(got, want) <= 1e-5
    assert rel_err(plain, want) > 1e-2


def test_switching_prompt_schedule_with_control_is_refused_before_allocating():
    from histream_core import PromptSchedule

    model = vace_model()
    cfg = video_config("histream", num_frames=21)
    pipe = HiStreamPipeline(model, cfg)
    schedule = PromptSchedule([(0, context(model, seed=1)), (1, context(model, seed=2))])
    with pytest.raises(ValueError, match="cannot be combined with VACE control"):
        pipe.generate(schedule, control=random_control(cfg.latent_frames, cfg.latent_size))
    assert pipe.low_cache is None or pipe.low_cache.k is None
    single = PromptSchedule([(0, context(model, seed=1))])  # one prompt: no switch, control works
    assert pipe.generate(single, control=random_control(cfg.latent_frames, cfg.latent_size)).shape[2] == 6
