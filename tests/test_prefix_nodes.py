"""Image-to-video, extension and resume through the pack's nodes on a host-loaded MODEL: the start image node equals
core's ARVideoI2V (emulated: no matrix host has it) and the core run with the encoded prefix; a stopped run resumed
from its saved .latent (stock LoadLatent) continues exactly as extension from those frames."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from comfy_test_nodes import HiStreamTestEmulatedARVideoI2V, fake_wan_text
from nodes_support import TINY, chunker_and_steps, tiny_state_dict
from test_workflows_server import random_wan21_vae

from histream_core import CausalWanModel, HiStreamConfig, HiStreamPipeline
from histream_core.schedule import build_step_plan

pytestmark = pytest.mark.comfy
SEED = 5  # the start image's pixels


@pytest.fixture(scope="module")
def vae(comfy_modules):
    return comfy_modules.sd.VAE(sd=random_wan21_vae(comfy_modules), dtype=torch.float32)


def start_image(h=48, w=80):
    return torch.rand(2, h, w, 3, generator=torch.Generator().manual_seed(SEED))  # the node uses the first only


def run(pack, model, *, frames=13, seed=7, prompt_seed=1, vae=None):
    """Chunker (64x64, chunks of 3, window 1) → Low-Res Denoise → Cached Upsample Refine; returns the LATENT (and
    the streamed IMAGE with a `vae`)."""
    m = pack.NODE_CLASS_MAPPINGS
    cache, latent, steps = chunker_and_steps(pack, frames=frames)
    (low,) = m["LowResDenoise"]().stage(model=model, positive=[[fake_wan_text(prompt_seed, 8, 1), {}]], cache=cache,
                                        steps=steps, latent=latent, seed=seed, low_res_scale=0.5)
    out = m["CachedUpsampleRefine"]().run(low_res=low, upsample_method="bilinear", downsample_method="area",
                                          rope_ntk_scale=1.0, cache_update="clean_pass", vae=vae)
    return out[0] if vae is None else out


def core_run(prefix_model_space, frames, seed=7):
    model = CausalWanModel(TINY)
    model.load_state_dict(tiny_state_dict(seed=0))
    cfg = HiStreamConfig(width=64, height=64, num_frames=frames, chunk_frames=3, anchor_frames=3, window_chunks=1,
                         steps=build_step_plan(4, 2, 4, 2, shift=5.0), prefix_frames=prefix_model_space.shape[2])
    return HiStreamPipeline(model.eval(), cfg).generate(fake_wan_text(1, 8, 1), seed=seed,
                                                         prefix_latent=prefix_model_space)


def test_start_image_equals_emulated_ar_video_i2v_and_the_core_run(pack, patcher, vae, comfy_modules):
    m = pack.NODE_CLASS_MAPPINGS
    image = start_image()
    cache, _, _ = chunker_and_steps(pack, frames=13)
    (ours,) = m["HiStreamStartImage"]().apply(patcher, vae, image, cache)
    emulated, empty = HiStreamTestEmulatedARVideoI2V().emulate(patcher, vae, image, 64, 64, 13, 1)
    raw = ours.model_options["transformer_options"]["ar_config"]["initial_latent"]
    assert torch.equal(raw, emulated.model_options["transformer_options"]["ar_config"]["initial_latent"])
    assert "ar_config" not in patcher.model_options.get("transformer_options", {})  # the input MODEL is unchanged
    # the resize, from its definition: center crop of the 80x48 image to the 64x64 aspect, then bilinear
    crop = image[:1, :, 16:64].movedim(-1, 1)
    want = vae.encode(F.interpolate(crop, size=(64, 64), mode="bilinear").movedim(1, -1))
    assert torch.allclose(raw, want, atol=1e-6)
    a, b = run(pack, ours)["samples"], run(pack, emulated)["samples"]
    assert torch.equal(a, b) and a.shape == empty["samples"].shape == (1, 16, 4, 8, 8)
    fmt = comfy_modules.latent_formats.Wan21()
    assert torch.allclose(a[:, :, :1], raw, atol=1e-5)  # the output's first frame is the encoded image
    want = fmt.process_out(core_run(fmt.process_in(raw), 13))
    assert torch.allclose(a, want, atol=1e-5), (a - want).abs().max()


def test_video_prefix_continues_the_last_frames(pack, patcher, comfy_modules):
    m = pack.NODE_CLASS_MAPPINGS
    previous = run(pack, patcher, frames=21)  # 6 latent frames
    (model,) = m["HiStreamVideoPrefix"]().apply(patcher, previous, 2)
    out = run(pack, model, frames=21, seed=9)["samples"]  # 2 prefix frames + 4 new
    assert torch.allclose(out[:, :, :2], previous["samples"][:, :, -2:], atol=1e-5)
    fmt = comfy_modules.latent_formats.Wan21()
    want = fmt.process_out(core_run(fmt.process_in(previous["samples"][:, :, -2:]), 21, seed=9))
    assert torch.allclose(out, want, atol=1e-5)
    with pytest.raises(ValueError, match="lower frames to at most 6"):
        m["HiStreamVideoPrefix"]().apply(patcher, previous, 7)
    with pytest.raises(ValueError, match="make the video longer than the prefix"):
        run(pack, m["HiStreamVideoPrefix"]().apply(patcher, previous, 6)[0], frames=21)
    small = {"samples": previous["samples"][..., :4, :4]}
    with pytest.raises(ValueError, match="set the chunker's width/height to 32x32"):
        run(pack, m["HiStreamVideoPrefix"]().apply(patcher, small, 1)[0])


def stop_during_chunk(pack, model, comfy_modules, step, frames):
    mm = comfy_modules.model_management

    def hook(v, total, preview, node_id=None):
        if v == step:
            mm.interrupt_current_processing(True)

    comfy_modules.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(pack, model, frames=frames)
    finally:
        comfy_modules.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)


def test_resume_from_the_saved_latent_equals_extension_from_those_frames(pack, patcher, comfy_modules):
    """A 33-frame run (3 chunks) stopped in chunk 2 saves chunks 0-1; stock LoadLatent of that file → Video Prefix
    (last 3 frames) → the rest gives, after the cut, the same video as extension from the uninterrupted run's frames
    3..5 (its LATENT cut there)."""
    import folder_paths

    from nodes import LoadLatent  # ComfyUI's own nodes.py

    m = pack.NODE_CLASS_MAPPINGS
    out_dir = Path(folder_paths.get_output_directory())
    before = set(out_dir.rglob("*.latent"))
    full = run(pack, patcher, frames=33)["samples"]
    stop_during_chunk(pack, patcher, comfy_modules, 2 * 4 + 1, frames=33)
    (saved,) = set(out_dir.rglob("*.latent")) - before
    shutil.copy(saved, Path(folder_paths.get_input_directory()) / "resume_me.latent")
    (loaded,) = LoadLatent().load("resume_me.latent")
    assert torch.equal(loaded["samples"], full[:, :, :6])
    (resumed_model,) = m["HiStreamVideoPrefix"]().apply(patcher, loaded, 3)
    resumed = run(pack, resumed_model, frames=21)["samples"]  # prefix 3 + 3 new latent frames
    (extended_model,) = m["HiStreamVideoPrefix"]().apply(patcher, {"samples": full[:, :, :6]}, 3)
    extended = run(pack, extended_model, frames=21)["samples"]
    assert torch.equal(resumed, extended)
    assert torch.allclose(resumed[:, :, :3], full[:, :, 3:6], atol=1e-5)
    # a stopped run with a prefix saves the prefix and its finished chunks, counting only the chunks
    before = set(out_dir.rglob("*.latent"))
    stop_during_chunk(pack, resumed_model, comfy_modules, 4 + 1, frames=33)  # in chunk 1 of 2
    (saved,) = set(out_dir.rglob("*.latent")) - before
    assert "chunks-1-of-2" in saved.name
    from safetensors.torch import load_file

    assert torch.allclose(load_file(str(saved))["latent_tensor"], resumed[:, :, :6], atol=1e-6)


def test_streaming_decode_of_an_i2v_run_starts_with_the_prefix_frames(pack, patcher, vae):
    """With the VAE on the sampler the prefix is decoded first, before chunk 0: the IMAGE equals stock VAEDecode of
    the LATENT output (its first frame the start image's decode)."""
    from stream_decode_support import stock_vae_decode

    m = pack.NODE_CLASS_MAPPINGS
    cache, _, _ = chunker_and_steps(pack, frames=13)
    (model,) = m["HiStreamStartImage"]().apply(patcher, vae, start_image(), cache)
    latent, images = run(pack, model, vae=vae)
    want = stock_vae_decode(vae, latent["samples"])
    assert images.shape == want.shape == (1 + 4 * 3, 64, 64, 3)
    assert torch.allclose(images, want, atol=1e-5), (images - want).abs().max()


def test_a_model_prefix_that_is_no_video_latent_is_refused_naming_the_fix(pack, patcher):
    bad = patcher.clone()
    bad.model_options.setdefault("transformer_options", {})["ar_config"] = {"initial_latent": torch.zeros(1, 16, 8, 8)}
    with pytest.raises(ValueError, match="initial_latent must be a video latent .* make it with HiStream Start Image"):
        run(pack, bad)
