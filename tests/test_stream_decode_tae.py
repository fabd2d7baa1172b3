"""Streaming decode through a Wan 2.1 tiny decoder (TAE, ComfyUI >= v0.8.0's comfy.taesd.taehv): chunk by chunk it
equals the host's whole-video decode of that TAE bit for bit; on the sampler node a `preview_vae` TAE makes each
chunk's preview before the next chunk starts and leaves the Wan VAE's IMAGE unchanged; TAEs of other latent formats
and hosts without TAEHV get one clear error."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from stream_decode_support import host_tae, host_vae, random_tae_state_dict, run_node, stock_vae_decode

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def has_taehv(comfy_modules) -> bool:
    return importlib.util.find_spec("comfy.taesd.taehv") is not None


@pytest.fixture(scope="module")
def needs_taehv(has_taehv):
    if not has_taehv:
        pytest.skip("this ComfyUI has no TAEHV (added in v0.8.0)")


@pytest.fixture(scope="module")
def sdec(pack):
    return importlib.import_module(pack.__name__ + ".nodes.stream_decode")


@pytest.fixture(scope="module")
def tae(needs_taehv):
    t = host_tae(seed=0)
    assert t.vae_dtype == torch.float32  # the bitwise claims are for CPU fp32
    return t


@pytest.fixture(scope="module")
def wan_vae(comfy_modules):
    return host_vae(dim=8)


@pytest.fixture(scope="module")
def stock(tae):
    """batch → (latent, the host's whole-video decode of it through stock VAEDecode), once each."""
    cache = {}

    def get(batch):
        if batch not in cache:
            seed = 40 + batch
            print("seed", seed)
            raw = torch.randn(batch, 16, 5, 2, 3, generator=torch.Generator().manual_seed(seed)) * 2
            cache[batch] = raw, stock_vae_decode(tae, raw)
        return cache[batch]

    return get


# ---- the file format and the decode loop ----------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [16, 48, 32])
def test_random_tae_files_have_the_hosts_layout(needs_taehv, channels):
    """The test/benchmark state dicts (written from the architecture) are exactly what the host's TAEHV holds."""
    from comfy.taesd import taehv

    ours = {k: tuple(v.shape) for k, v in random_tae_state_dict(channels).items()}
    assert ours == {k: tuple(v.shape) for k, v in taehv.TAEHV(latent_channels=channels).state_dict().items()}


def test_host_reads_the_random_tae_as_wan21s_except_in_fp16(needs_taehv):
    import comfy.latent_formats

    for dtype in (torch.float32, torch.bfloat16):
        assert host_tae(dtype=dtype).first_stage_model.latent_format is None  # lighttaew2_1: the raw Wan latent
    assert host_tae(dtype=torch.float16).first_stage_model.latent_format is comfy.latent_formats.HunyuanVideo


SIZES = {"chunk1": [1, 1, 1, 1, 1], "chunk3": [3, 2], "chunk2-unaligned": [2, 2, 1], "whole": [5]}


@pytest.mark.parametrize("sizes", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("batch", [1, 2])
def test_streamed_tae_decode_equals_the_hosts_whole_video_decode(sdec, tae, stock, batch, sizes):
    raw, expected = stock(batch)
    assert expected.shape == (batch * 17, 16, 24, 3)  # 1 + 4·4 frames: the first chunk's 3 leading frames trimmed
    assert 0.5 < ((expected > 0.05) & (expected < 0.95)).float().mean()  # not saturated: the equality says something
    assert expected.reshape(batch, 17, -1).std(dim=1).mean() > 0.01  # frames differ
    dec = sdec.StreamingDecode(tae, batch, 5)
    per_video, start = expected.reshape(batch, 17, 16, 24, 3), 0
    for n in sizes:  # each call returns exactly its chunk's pixel frames
        piece = dec.decode(raw[:, :, start:start + n])
        lo, hi = sdec.pixel_frames(start), sdec.pixel_frames(start + n)
        assert torch.equal(piece, per_video[:, lo:hi])
        start += n
    out = dec.images()
    assert out.dtype == expected.dtype and torch.equal(out, expected)
    dec.release()


def test_tae_stream_never_calls_the_hosts_decode_loop(sdec, tae, stock, monkeypatch):
    from comfy.taesd import taehv

    raw, expected = stock(1)  # computed before the swap

    def gone(*args, **kwargs):
        raise AssertionError("the streaming decode called the host's TAE decode loop")

    monkeypatch.setattr(taehv.TAEHV, "decode", gone)
    monkeypatch.setattr(taehv, "apply_model_with_memblocks", gone)
    dec = sdec.StreamingDecode(tae, 1, 5)
    dec.decode(raw[:, :, :3])
    dec.decode(raw[:, :, 3:])
    assert torch.equal(dec.images(), expected)


@pytest.mark.parametrize("kind", ["fp16 16-channel (HunyuanVideo)", "48-channel (Wan 2.2)"])
def test_a_tae_of_another_latent_format_is_refused_with_the_fix(sdec, needs_taehv, kind):
    other = host_tae(dtype=torch.float16) if kind.startswith("fp16") else host_tae(latent_channels=48)
    family = "HunyuanVideo's" if kind.startswith("fp16") else "Wan 2.2's"
    with pytest.raises(ValueError, match=rf"decodes {family}.*not Wan 2.1's: load the Wan 2.1 TAE \(lighttaew2_1"):
        sdec.StreamingDecode(other, 1, 3)
    with pytest.raises(ValueError, match=rf"decodes {family}"):
        sdec.check_preview_vae(other)


# ---- the sampler node -----------------------------------------------------------------------------------------------
def test_preview_vae_previews_each_chunk_before_the_next_forward_and_leaves_the_image_unchanged(
        pack, sdec, patcher, wan_vae, tae, previews, monkeypatch):
    shown = []
    real_preview = sdec.frames_preview

    def record(frames, every):
        shown.append(frames.clone())
        return real_preview(frames, every)

    monkeypatch.setattr(sdec, "frames_preview", record)
    dm = patcher.model.diffusion_model
    hooks = [dm.patch_embedding.register_forward_pre_hook(lambda mod, a: previews.append(("forward",))),
             tae.first_stage_model.decoder[22].register_forward_hook(lambda mod, a, o: previews.append(("tae",))),
             wan_vae.first_stage_model.decoder.head[0].register_forward_hook(
                 lambda mod, a, o: previews.append(("wan",)))]
    try:
        latent, images, _ = run_node(pack, patcher, wan_vae, preview_vae=tae)  # 13 frames: chunks of 3 + 1 latent
    finally:
        for h in hooks:
            h.remove()
    fwd, low, high = ("forward",), (4, 4), (8, 8)
    assert previews == [
        fwd, ("bar", 1, low), fwd, ("bar", 2, low), fwd, ("bar", 3, high), fwd, ("bar", 4, high), fwd, fwd,
        *[("tae",)] * 12, ("bar", 4, (3 * 64, 64)),  # chunk 0 through the TAE (4 frames a latent frame, 3 trimmed)
        *[("wan",)] * 3,  # then the final decode of chunk 0
        fwd, ("bar", 5, low), fwd, ("bar", 6, high),  # only now chunk 1's first forward
        *[("tae",)] * 4, ("bar", 6, (64, 64)), ("wan",)]
    tae_frames = stock_vae_decode(tae, latent["samples"])  # the TAE's whole-video decode of the LATENT output
    assert [s.shape[1] for s in shown] == [9, 4]
    assert torch.equal(torch.cat(shown, dim=1)[0], tae_frames)
    previews.clear()
    latent_alone, images_alone, _ = run_node(pack, patcher, wan_vae)
    assert torch.equal(latent["samples"], latent_alone["samples"])
    assert torch.equal(images, images_alone) and torch.equal(images, stock_vae_decode(wan_vae, latent["samples"]))


def test_preview_vae_alone_previews_and_the_image_output_stays_blocked(pack, sdec, patcher, tae, previews):
    from comfy_execution.graph_utils import ExecutionBlocker

    latent, images, _ = run_node(pack, patcher, None, preview_vae=tae, frames=9)
    assert isinstance(images, ExecutionBlocker)
    assert [p for p in previews if p[2] not in ((4, 4), (8, 8))] == [("bar", 4, (3 * 64, 64))]  # 9 frames: 1 chunk
    assert stock_vae_decode(tae, latent["samples"]).shape == (9, 64, 64, 3)


def test_with_previews_off_the_preview_tae_never_runs(pack, patcher, tae, previews):
    from comfy.cli_args import LatentPreviewMethod, args

    args.preview_method = LatentPreviewMethod.NoPreviews  # the previews fixture restores it
    calls = []
    hook = tae.first_stage_model.decoder[22].register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        run_node(pack, patcher, None, preview_vae=tae, frames=9)
    finally:
        hook.remove()
    assert not calls and previews and all(p[2] is None for p in previews)


def test_stop_during_the_preview_decode_releases_both_decoders(pack, sdec, patcher, wan_vae, tae, previews,
                                                               comfy_modules, monkeypatch):
    mm = comfy_modules.model_management
    made, calls = [], []

    class Recorded(sdec.StreamingDecode):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    def on_frame(mod, args, out):
        calls.append(1)
        if len(calls) == 2:  # Stop pressed while chunk 0's preview is decoded
            mm.interrupt_current_processing(True)

    monkeypatch.setattr(sdec, "StreamingDecode", Recorded)
    hook = tae.first_stage_model.decoder[22].register_forward_hook(on_frame)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_node(pack, patcher, wan_vae, preview_vae=tae, frames=9)
    finally:
        hook.remove()
        mm.interrupt_current_processing(False)
    assert len(made) == 2 and all(d.decoder is None and d.latent is None for d in made)  # no causal state left
    assert len(calls) <= 4  # stopped within the first latent frame's 4 TAE frames
    latent, images, _ = run_node(pack, patcher, wan_vae, preview_vae=tae, frames=9)  # the next run is whole
    assert torch.equal(images, stock_vae_decode(wan_vae, latent["samples"]))


def test_a_tae_on_vae_gives_its_whole_video_decode_as_the_image(pack, patcher, tae):
    latent, images, _ = run_node(pack, patcher, tae, preset="HiStream", frames=9, batch=2)
    assert images.shape == (2 * 9, 64, 64, 3)
    assert torch.equal(images, stock_vae_decode(tae, latent["samples"]))


def test_the_wan_vae_on_preview_vae_is_refused_before_anything_runs(pack, patcher, wan_vae, has_taehv):
    calls = []
    hook = patcher.model.diffusion_model.patch_embedding.register_forward_pre_hook(lambda m, a: calls.append(1))
    fix = "belongs on the vae input" if has_taehv else r"needs ComfyUI v0\.8\.0 or newer .*update ComfyUI"
    try:
        with pytest.raises(ValueError, match=f"preview_vae.*{fix}"):
            run_node(pack, patcher, wan_vae, preview_vae=wan_vae)
    finally:
        hook.remove()
    assert not calls


def test_without_taehv_a_tae_file_is_refused_and_names_the_host_version(sdec, has_taehv, comfy_modules):
    """v0.3.64 reads no TAE: the host builds an empty VAE; the stream says what would read it."""
    if has_taehv:
        pytest.skip("this ComfyUI has TAEHV")
    empty = host_tae()
    assert empty.first_stage_model is None
    with pytest.raises(ValueError, match=r"no VAE weights \(a tiny decoder .*needs ComfyUI v0\.8\.0"):
        sdec.StreamingDecode(empty, 1, 3)


@pytest.mark.skipif(shutil.which("duplicates") is None, reason="the duplicates command is not installed here")
def test_tae_loop_shares_no_block_with_the_hosts_taehv(comfy_root, needs_taehv, tmp_path):
    """Written from the architecture, not transcribed: no run of 6+ lines alike with the host's taesd/taehv.py."""
    ours = ("taehv_causal_decode.py", "stream_decode.py")
    for name in ours:
        shutil.copy(Path(__file__).parent.parent / "nodes" / name, tmp_path / name)
    shutil.copy(Path(__file__).parent.parent / "bench" / "bench_decode.py", tmp_path / "bench_decode.py")
    shutil.copy(Path(comfy_root) / "comfy" / "taesd" / "taehv.py", tmp_path / "host_taehv.py")
    shutil.copy(Path(comfy_root) / "comfy" / "taesd" / "taehv.py", tmp_path / "host_taehv_again.py")
    report = subprocess.run(["duplicates", "--repo", str(tmp_path), "--most", "200"], capture_output=True,
                            text=True, check=True).stdout
    rows = [line for line in report.splitlines() if re.match(r"D\d+ ", line)]
    assert "incomplete" not in report and any("host_taehv" in r for r in rows)  # it read the host (its own copy)
    ours += ("bench_decode.py",)
    assert not [r for r in rows if "host_taehv" in r and any(n in r for n in ours)], report


def test_an_image_to_video_run_streamed_by_the_tae_decodes_its_prefix_first(pack, patcher, tae):
    """A prefixed MODEL (HiStream Video Prefix: the prefix is the loop's first chunk) streamed by the TAE: the IMAGE
    is the TAE's whole-video decode of the output latent, whose first frames are the prefix."""
    previous, _, _ = run_node(pack, patcher, None, preset="HiStream", frames=9)
    (model,) = pack.NODE_CLASS_MAPPINGS["HiStreamVideoPrefix"]().apply(patcher, previous, 1)
    latent, images, _ = run_node(pack, model, tae, preset="HiStream", frames=13)
    assert torch.allclose(latent["samples"][:, :, :1], previous["samples"][:, :, -1:], atol=1e-5)
    assert images.shape == (13, 64, 64, 3)
    assert torch.equal(images, stock_vae_decode(tae, latent["samples"]))
