"""Streaming decode: chunk-by-chunk decoding through the host's Wan2.1 VAE equals stock VAEDecode bit for bit; the
sampler node decodes chunk k before chunk k+1's first forward, previews each finished chunk, and releases everything
on Stop."""

from __future__ import annotations

import gc
import re
import shutil
import subprocess
import weakref
from pathlib import Path

import pytest
import torch
from stream_decode_support import host_vae, run_node, stock_vae_decode

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def sdec(pack):
    import importlib

    return importlib.import_module(pack.__name__ + ".nodes.stream_decode")


@pytest.fixture(scope="module")
def loop(pack):
    import importlib

    return importlib.import_module(pack.__name__ + ".nodes.wan_causal_decode")


@pytest.fixture(scope="module")
def vae(comfy_modules):
    """The narrowest VAE this host builds through its public path (96 wide on v0.3.64, see host_vae)."""
    v = host_vae(dim=8)
    assert v.vae_dtype == torch.float32  # the bitwise claims are for CPU fp32
    return v


def streamed(sdec, vae, raw, sizes, schedule=None):
    dec = sdec.StreamingDecode(vae, raw.shape[0], raw.shape[2], schedule=schedule)
    pieces, start = [], 0
    for n in sizes:
        piece = dec.decode(raw[:, :, start:start + n])
        pieces.append(None if piece is None else piece.clone())
        start += n
    out = dec.images()
    dec.release()
    return out, pieces


WIDTHS = {"narrow": 8, "real": 96}  # 96: the real 127M architecture


@pytest.fixture(scope="module")
def stock(vae, comfy_modules):
    """(width, batch) → (VAE, latent, stock VAEDecode of it), computed once each."""
    cache, vaes = {}, {}

    def get(width, batch):
        if width not in vaes:
            vaes[width] = vae if width == "narrow" else host_vae(dim=WIDTHS[width], seed=1)
        v = vaes[width]
        if width == "narrow" and v.first_stage_model.dim == 96:
            pytest.skip("this host builds only the 96-wide Wan2.1 VAE through its public path (the 'real' cases)")
        if (width, batch) not in cache:
            # 2×3 latent: a size where the host's 1×1×1 conv2 rounds differently if run per chunk (stream_decode.py)
            raw = torch.randn(batch, 16, 5, 2, 3, generator=torch.Generator().manual_seed(4 + batch)) * 2
            cache[width, batch] = v, raw, stock_vae_decode(v, raw)  # [batch·17, 16, 24, 3]
        return cache[width, batch]

    return get


SIZES = {"chunk1": [1, 1, 1, 1, 1], "chunk3": [3, 2], "chunk2-unaligned": [2, 2, 1], "whole": [5]}


@pytest.mark.parametrize("sizes", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("width", WIDTHS)
def test_streamed_decode_equals_stock_vaedecode(sdec, loop, stock, width, batch, sizes):
    vae, raw, expected = stock(width, batch)
    assert expected.shape == (batch * 17, 16, 24, 3)
    assert 0.5 < ((expected > 0) & (expected < 1)).float().mean()  # mostly unclamped: the equality says something
    out, pieces = streamed(sdec, vae, raw, sizes)
    assert out.dtype == expected.dtype and torch.equal(out, expected)
    per_video = expected.reshape(batch, 17, 16, 24, 3)
    schedule, decoded, received = loop.host_schedule(), 0, 0
    for n, piece in zip(sizes, pieces):  # each call returns exactly the pixel frames that became final
        received += n
        todo = loop.passes(schedule, decoded, received, final=received == 5)
        if not todo:
            assert piece is None
            continue
        lo, hi = sdec.pixel_frames(decoded), sdec.pixel_frames(todo[-1][1])
        assert torch.equal(piece, per_video[:, lo:hi])
        decoded = todo[-1][1]


def test_stream_never_calls_the_hosts_decode_loop(sdec, stock, monkeypatch):
    """The host's own decode loop and cache helpers may change or go: the stream runs on the layers alone."""
    import comfy.ldm.wan.vae as wan_vae

    vae, raw, expected = stock("real", 1)  # stock computed before the swap

    def gone(*args, **kwargs):
        raise AssertionError("the streaming decode called the host's decode loop")

    for owner, name in [(wan_vae.WanVAE, "decode"), (wan_vae.Decoder3d, "forward"), (wan_vae, "count_conv3d"),
                        (wan_vae.CausalConv3d, "forward"), (wan_vae.ResidualBlock, "forward"),
                        (wan_vae.Resample, "forward")]:
        monkeypatch.setattr(owner, name, gone)
    out, _ = streamed(sdec, vae, raw, [3, 2])
    assert torch.equal(out, expected)


@pytest.mark.parametrize("sizes", [[1, 1, 1, 1, 1], [3, 2], [2, 2, 1], [5]], ids=["chunk1", "chunk3", "chunk2",
                                                                               "whole"])
def test_paired_grouping_is_the_same_math_as_one_frame(sdec, loop, vae, sizes):
    """Frame 0 then pairs (newer hosts' stock grouping) against one frame per pass, on this host's layers."""
    seed = 11
    print("seed", seed)
    raw = torch.randn(1, 16, 5, 2, 2, generator=torch.Generator().manual_seed(seed)) * 2
    one, _ = streamed(sdec, vae, raw, [5], schedule=loop.ONE_FRAME)
    paired, pieces = streamed(sdec, vae, raw, sizes, schedule=loop.PAIRS)
    assert (paired - one).abs().max() <= 1e-5
    got = [0 if p is None else p.shape[1] for p in pieces]  # a frame without its pair waits for the next chunk
    expect = {"[1, 1, 1, 1, 1]": [1, 0, 8, 0, 8], "[3, 2]": [9, 8], "[2, 2, 1]": [1, 8, 8], "[5]": [17]}
    assert got == expect[str(sizes)]


@pytest.mark.parametrize("frames", range(1, 9))
def test_paired_passes_are_newer_hosts_stock_grouping(loop, frames):
    """Newer WanVAE.decode: frame 0, then x[1 + 2(i-1) : 1 + 2i] for i = 1 .. T // 2 (the last may be one frame)."""
    stock = [(0, 1)] + [(1 + 2 * (i - 1), min(1 + 2 * i, frames)) for i in range(1, frames // 2 + 1)]
    assert loop.passes(loop.PAIRS, 0, frames, final=True) == stock
    assert loop.passes(loop.ONE_FRAME, 0, frames, final=True) == [(i, i + 1) for i in range(frames)]
    streamed_ranges, decoded = [], 0  # one latent frame per chunk: the same passes, each as soon as complete
    for received in range(1, frames + 1):
        todo = loop.passes(loop.PAIRS, decoded, received, final=received == frames)
        streamed_ranges += todo
        decoded = todo[-1][1] if todo else decoded
    assert streamed_ranges == stock


def test_grouping_follows_the_hosts_vae_module(loop):
    import types

    assert loop.host_schedule(types.SimpleNamespace(count_conv3d=len)) == loop.ONE_FRAME
    assert loop.host_schedule(types.SimpleNamespace(count_cache_layers=len)) == loop.PAIRS
    with pytest.raises(RuntimeError, match="grouping is unknown"):
        loop.host_schedule(types.SimpleNamespace())


@pytest.mark.skipif(shutil.which("duplicates") is None, reason="the duplicates command is not installed here")
def test_decode_loop_shares_no_block_with_the_hosts_vae(comfy_root, tmp_path):
    """Written from the architecture, not transcribed: no run of 6+ lines alike with the host's wan/vae.py."""
    ours = ("wan_causal_decode.py", "stream_decode.py")
    for name in ours:
        shutil.copy(Path(__file__).parent.parent / "nodes" / name, tmp_path / name)
    shutil.copy(Path(comfy_root) / "comfy" / "ldm" / "wan" / "vae.py", tmp_path / "host_wan_vae.py")
    report = subprocess.run(["duplicates", "--repo", str(tmp_path), "--most", "200"], capture_output=True,
                            text=True, check=True).stdout
    rows = [line for line in report.splitlines() if re.match(r"D\d+ ", line)]
    assert "incomplete" not in report and any(r.count("host_wan_vae.py") == 2 for r in rows)  # it read the host
    assert not [r for r in rows if "host_wan_vae.py" in r and any(n in r for n in ours)], report


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
def head_norm(vae):
    """The decoder head's RMS norm: the stream calls it once per decoder pass (one latent frame on these hosts)."""
    return vae.first_stage_model.decoder.head[0]


def test_node_decodes_each_chunk_before_the_next_starts(pack, patcher, vae, previews):
    dm = patcher.model.diffusion_model
    hooks = [dm.patch_embedding.register_forward_pre_hook(lambda mod, a: previews.append(("forward",))),
             head_norm(vae).register_forward_hook(lambda mod, a, o: previews.append(("decode",)))]
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


def test_stop_during_decode_releases_everything_and_next_run_works(pack, sdec, patcher, vae, comfy_modules,
                                                                  monkeypatch):
    mm = comfy_modules.model_management
    decoders, cache_refs, calls = [], [], []

    class Recorded(sdec.StreamingDecode):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            decoders.append(self)

    def on_decode(mod, args, out):
        calls.append(1)
        if len(calls) == 2:  # Stop pressed while chunk 0 is being decoded
            cache_refs.extend(weakref.ref(t) for t in decoders[-1].decoder.history.values())
            mm.interrupt_current_processing(True)

    monkeypatch.setattr(sdec, "StreamingDecode", Recorded)
    hook = head_norm(vae).register_forward_hook(on_decode)
    try:
        with pytest.raises(mm.InterruptProcessingException) as stopped:
            run_node(pack, patcher, vae, preset="HiStream", frames=33)
    finally:
        hook.remove()
        mm.interrupt_current_processing(False)
    assert len(calls) == 2  # stopped before the next latent frame
    decoders.clear()
    gc.collect()
    assert cache_refs and all(r() is None for r in cache_refs), "the decode history outlived the Stop"
    assert stopped.value is not None
    latent, images, _cache = run_node(pack, patcher, vae, preset="HiStream", frames=9)
    assert torch.equal(images, stock_vae_decode(vae, latent["samples"]))
