"""Streaming decode: chunk-by-chunk decoding through the host's Wan2.1 VAE equals stock VAEDecode bit for bit; the
sampler node decodes chunk k before chunk k+1's first forward, previews each finished chunk, and releases everything
on Stop."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from comfy_test_nodes import fake_wan_text
from nodes_support import tiny_state_dict
from stream_decode_support import host_vae, stock_vae_decode

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def sdec(pack):
    import importlib

    return importlib.import_module(pack.__name__ + ".nodes.stream_decode")


@pytest.fixture(scope="module")
def vae(comfy_modules):
    v = host_vae(dim=8)
    assert v.vae_dtype == torch.float32  # the bitwise claims are for CPU fp32
    return v


@pytest.fixture(scope="module")
def patcher(comfy_modules):
    sd = {f"model.diffusion_model.{k}": v for k, v in tiny_state_dict(seed=0).items()}
    return comfy_modules.sd.load_diffusion_model_state_dict(sd)


def streamed(sdec, vae, raw, sizes):
    dec = sdec.StreamingDecode(vae, raw.shape[0], raw.shape[2])
    pieces, start = [], 0
    for n in sizes:
        pieces.append(dec.decode(raw[:, :, start:start + n]).clone())
        start += n
    out = dec.images()
    dec.release()
    return out, pieces


@pytest.fixture(scope="module")
def stock(vae):
    """batch → (latent, stock VAEDecode of it), computed once per batch size."""
    cache = {}

    def get(batch):
        if batch not in cache:
            # 2×3 latent: a size where the host's 1×1×1 conv2 rounds differently if run per chunk (stream_decode.py)
            raw = torch.randn(batch, 16, 5, 2, 3, generator=torch.Generator().manual_seed(4)) * 2
            cache[batch] = raw, stock_vae_decode(vae, raw)  # [batch·17, 16, 24, 3]
        return cache[batch]

    return get


@pytest.mark.parametrize("batch,sizes", [(1, [1, 1, 1, 1, 1]), (1, [3, 2]), (1, [2, 2, 1]), (2, [1, 4]),
                                         (1, [5])], ids=["chunk1", "chunk3", "chunk2-unaligned", "batch2", "whole"])
def test_streamed_decode_equals_stock_vaedecode(sdec, vae, stock, batch, sizes):
    raw, expected = stock(batch)
    assert expected.shape == (batch * 17, 16, 24, 3)
    assert 0.5 < ((expected > 0) & (expected < 1)).float().mean()  # mostly unclamped: the equality says something
    out, pieces = streamed(sdec, vae, raw, sizes)
    assert out.dtype == expected.dtype and torch.equal(out, expected)
    per_video = expected.reshape(batch, 17, 16, 24, 3)
    start = 0
    for n, piece in zip(sizes, pieces):  # each call returns exactly its own new pixel frames, already final
        lo, hi = sdec.pixel_range(start, n)
        assert torch.equal(piece, per_video[:, lo:hi])
        start += n


def test_real_size_wan_vae_streamed_equals_stock(sdec, comfy_modules):
    real = host_vae(dim=96, seed=1)  # the 127M architecture through the host's own state-dict path
    raw = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(5))
    out, _ = streamed(sdec, real, raw, [1, 1])
    assert torch.equal(out, stock_vae_decode(real, raw))


def test_pixel_frame_count_is_the_hosts(sdec, vae):
    assert [sdec.pixel_frames(t) for t in range(40)] == [vae.upscale_ratio[0](t) for t in range(40)]


def test_refuses_wrong_vae_and_overlong_input(sdec, vae):
    class NotWan:
        first_stage_model = torch.nn.Identity()
        latent_channels = 4

    with pytest.raises(ValueError, match="Wan2.1 VAE"):
        sdec.StreamingDecode(NotWan(), 1, 3)
    dec = sdec.StreamingDecode(vae, 1, 2)
    with pytest.raises(ValueError, match="does not continue"):
        dec.decode(torch.zeros(1, 16, 3, 2, 2))
    with pytest.raises(ValueError, match="does not continue"):
        dec.decode(torch.zeros(2, 16, 1, 2, 2))


# ---- the sampler node -------------------------------------------------------------------------------------------
def run_node(pack, patcher, vae=None, preset="HiStream+", frames=13, batch=1, **hidden):
    m = pack.NODE_CLASS_MAPPINGS
    cache, latent = m["AnchorCacheChunker"]().plan(64, 64, frames, batch, 3, 3, 1, "cache_relative")
    (steps,) = m["SparseStepSampler"]().build(preset, 5.0, 4, 2, 2, 1)
    cond = [[fake_wan_text(1, 8, 1), {}]]
    (low,) = m["LowResDenoise"]().stage(patcher, cond, cache, steps, latent, 7, 0.5)
    latent_out, images = m["CachedUpsampleRefine"]().run(low, "bilinear", "area", 1.0, "clean_pass", vae=vae,
                                                           **hidden)
    return latent_out, images, cache


@pytest.fixture
def previews(comfy_modules):
    """Record (kind, ...) events: progress-bar updates with their preview size, model forwards, VAE decoder calls."""
    from comfy.cli_args import LatentPreviewMethod, args

    events = []
    old = args.preview_method
    args.preview_method = LatentPreviewMethod.Latent2RGB
    comfy_modules.utils.set_progress_bar_global_hook(lambda v, total, preview, node_id=None: events.append(
        ("bar", v, None if preview is None else preview[1].size)))
    yield events
    comfy_modules.utils.set_progress_bar_global_hook(None)
    args.preview_method = old


def test_node_decodes_each_chunk_before_the_next_starts(pack, patcher, vae, previews):
    dm = patcher.model.diffusion_model
    hooks = [dm.patch_embedding.register_forward_pre_hook(lambda mod, a: previews.append(("forward",))),
             vae.first_stage_model.decoder.register_forward_hook(lambda mod, a, o: previews.append(("decode",)))]
    try:
        latent, images, _cache = run_node(pack, patcher, vae)  # 13 frames = 4 latent frames: chunks of 3 + 1
    finally:
        for h in hooks:
            h.remove()
    fwd, dec = ("forward",), ("decode",)
    low, high = (4, 4), (8, 8)  # per-step latent previews of the newest frame (half-res steps first)
    assert previews == [
        fwd, ("bar", 1, low), fwd, ("bar", 2, low), fwd, ("bar", 3, high), fwd, ("bar", 4, high),
        fwd, fwd,  # chunk 0's t=0 passes write the low- and high-res caches
        dec, dec, dec, ("bar", 4, (3 * 64, 64)),  # chunk 0 decoded (1 + 4 + 4 frames), its 3 latent instants shown
        fwd, ("bar", 5, low), fwd, ("bar", 6, high),  # only now chunk 1's first forward
        dec, ("bar", 6, (64, 64))]
    assert images.shape == (13, 64, 64, 3) and torch.equal(images, stock_vae_decode(vae, latent["samples"]))


def test_without_vae_latent_is_unchanged_and_chunks_get_latent_previews(pack, patcher, vae, previews):
    from comfy_execution.graph_utils import ExecutionBlocker

    latent, images, _ = run_node(pack, patcher, None)
    assert isinstance(images, ExecutionBlocker) and "vae input is empty" in images.message  # blocks any reader
    low, high = (4, 4), (8, 8)
    assert previews == [("bar", 1, low), ("bar", 2, low), ("bar", 3, high), ("bar", 4, high), ("bar", 4, (24, 8)),
                        ("bar", 5, low), ("bar", 6, high), ("bar", 6, (8, 8))]
    previews.clear()
    with_vae, _, _ = run_node(pack, patcher, vae)
    assert torch.equal(with_vae["samples"], latent["samples"])  # decoding never touches generation


def test_no_preview_method_means_no_chunk_previews(pack, patcher, vae, previews):
    from comfy.cli_args import LatentPreviewMethod, args

    args.preview_method = LatentPreviewMethod.NoPreviews
    run_node(pack, patcher, vae, frames=9)
    assert previews and all(p[2] is None for p in previews)


def test_batch_two_node_image_equals_stock_vaedecode(pack, patcher, vae):
    latent, images, _ = run_node(pack, patcher, vae, preset="HiStream", frames=9, batch=2)
    assert latent["samples"].shape[0] == 2 and images.shape == (2 * 9, 64, 64, 3)
    assert torch.equal(images, stock_vae_decode(vae, latent["samples"]))


def test_image_output_without_vae_is_a_clear_error(pack, patcher):
    from comfy_execution.graph_utils import ExecutionBlocker

    prompt = {"7": {"class_type": "CachedUpsampleRefine", "inputs": {}},
              "9": {"class_type": "CreateVideo", "inputs": {"images": ["7", 1], "fps": 16.0}}}
    with pytest.raises(ValueError, match="IMAGE output is connected but its vae input is empty"):
        run_node(pack, patcher, None, prompt=prompt, unique_id="7")
    prompt["9"]["inputs"]["images"] = ["8", 0]  # someone else's IMAGE: fine
    _, images, _ = run_node(pack, patcher, None, frames=5, prompt=prompt, unique_id="7")
    assert isinstance(images, ExecutionBlocker)


def test_stop_during_decode_releases_everything_and_next_run_works(pack, patcher, vae, comfy_modules):
    mm = comfy_modules.model_management
    cache_refs, calls = [], []

    def on_decode(mod, args, kwargs, out):
        calls.append(1)
        cache_refs.extend(weakref.ref(t) for t in kwargs["feat_cache"] if isinstance(t, torch.Tensor))
        if len(calls) == 2:
            mm.interrupt_current_processing(True)  # Stop pressed while chunk 0 is being decoded

    hook = vae.first_stage_model.decoder.register_forward_hook(on_decode, with_kwargs=True)
    try:
        with pytest.raises(mm.InterruptProcessingException) as stopped:
            run_node(pack, patcher, vae, preset="HiStream", frames=33)
    finally:
        hook.remove()
        mm.interrupt_current_processing(False)
    assert len(calls) == 2  # stopped before the next latent frame
    gc.collect()
    assert cache_refs and all(r() is None for r in cache_refs), "the VAE feature cache outlived the Stop"
    assert stopped.value is not None
    latent, images, _cache = run_node(pack, patcher, vae, preset="HiStream", frames=9)
    assert torch.equal(images, stock_vae_decode(vae, latent["samples"]))
