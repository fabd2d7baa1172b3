"""The embedded toy model in the real ComfyUI, nothing downloaded: the shipped demo workflow runs through the five
HiStream nodes and the demo nodes (batch raised to 8 videos, seeds s..s+7), its LATENT equals histream_core's toy
pipeline, what the saved mp4 shows (colour, motion direction per video) is what the core's own decode shows, and
the mp4's videos show the prompted colour. How often prompts are followed in general is tested on random pairs in
test_toy_behaviour.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from nodes_support import saved_latent
from workflow_convert import ui_to_api

pytestmark = pytest.mark.comfy
WORKFLOW = Path(__file__).resolve().parent.parent / "workflows" / "histream_toy_demo.json"


def test_demo_nodes_and_embedded_weights_are_listed(comfy_server):
    info = comfy_server.object_info(refresh=True)
    for name in ("HiStreamToyPrompt", "HiStreamToyDecode"):
        assert info[name]["category"] == "HiStream/demo"
    assert "histream_toy_dit.safetensors" in info["LoadHiStreamModel"]["input"]["required"]["model_name"][0]
    assert "histream_toy_dit.safetensors" in info["UNETLoader"]["input"]["required"]["unet_name"][0]


BATCH = 8


@pytest.fixture(scope="module")
def demo_run(comfy_server):
    api = ui_to_api(json.loads(WORKFLOW.read_text()), comfy_server.object_info())
    node_of(api, "AnchorCacheChunker")["inputs"]["batch_size"] = BATCH
    refine = next(nid for nid, n in api.items() if n["class_type"] == "CachedUpsampleRefine")
    api["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [refine, 0], "filename_prefix": "toy/latent"}}
    decode = next(nid for nid, n in api.items() if n["class_type"] == "HiStreamToyDecode")
    api["901"] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": "toy/frames"}}
    entry = comfy_server.run(api, timeout=600)
    return api, entry


def node_of(api, class_type):
    return next(n for n in api.values() if n["class_type"] == class_type)


def core_latent(api):
    from histream_toy.sampling import NEGATIVE_PROMPT, TOY_GUIDANCE, generate_latent

    chunker, low = node_of(api, "AnchorCacheChunker")["inputs"], node_of(api, "LowResDenoise")["inputs"]
    prompt = api[low["positive"][0]]["inputs"]["text"]
    # the workflow guides like the core toy sampler: the empty prompt as negative, at the toy's scale
    assert api[low["negative"][0]]["inputs"]["text"] == NEGATIVE_PROMPT and low["cfg"] == TOY_GUIDANCE
    return generate_latent(prompt, chunker["frames"], seed=low["seed"], preset="histream", size=chunker["width"],
                           batch_size=BATCH)


def test_demo_latent_equals_the_core_toy_pipeline(comfy_server, comfy_modules, demo_run):
    import comfy.latent_formats

    api, entry = demo_run
    frames = node_of(api, "AnchorCacheChunker")["inputs"]["frames"]
    got = comfy.latent_formats.Wan21().process_in(saved_latent(comfy_server, entry, "900").float())
    want = core_latent(api)
    assert got.shape == want.shape == (BATCH, 16, 1 + (frames - 1) // 4, 16, 16)
    # the host's layers vs the core's, fp32: ~1e-6 per forward, compounded over 17 chunks x 8 Euler steps
    assert torch.allclose(got, want, atol=1e-3, rtol=1e-3), (got - want).abs().max()


def _frames_of_pngs(files) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    rgb = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))) for f in sorted(files)]
    return torch.stack(rgb).permute(3, 0, 1, 2).float() / 127.5 - 1  # [3, B*F, H, W] in [-1, 1]


def _direction_margin(track: torch.Tensor, frames: int = 3) -> float:
    """How far the dominant axis of detect_direction's displacement leads the other one (0 = a diagonal tie)."""
    d = torch.nan_to_num(track[frames] - track[0]).abs()
    return float((d[0] - d[1]).abs())


def test_demo_video_shows_what_the_core_generated(comfy_server, demo_run):
    """What the host encodes is the core's video to 8 bits, and the saved mp4 shows it up to h264's loss.

    SaveVideo encodes h264 yuv420p at the encoder's default quality on both hosts (lossy, chroma at half
    resolution): on a small object the codec moves the centroid by up to a few hundredths of the frame, so a
    direction whose two axes are nearly tied (a diagonal) can flip in the mp4 while the frames the host encoded are
    right. The lossless frames (a SaveImage beside it) carry the exact check; the mp4 is checked where its codec
    error cannot decide the direction."""
    import av

    from histream_toy import centroid_track, detect_color, detect_direction, load_toy_ae, object_area
    from histream_toy.data import parse_prompt

    api, entry = demo_run
    frames = node_of(api, "AnchorCacheChunker")["inputs"]["frames"]
    save = next(nid for nid, n in api.items() if n["class_type"] == "SaveVideo")
    files = comfy_server.output_files(entry, save)
    assert len(files) == 1 and files[0].suffix == ".mp4"
    with av.open(str(files[0])) as container:
        decoded = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    video = torch.stack(decoded).permute(3, 0, 1, 2).float() / 127.5 - 1  # [3, B*F, H, W] in [-1, 1]
    assert video.shape == (3, BATCH * frames, 128, 128)  # CreateVideo strings the batch's videos together
    encoded = _frames_of_pngs(comfy_server.output_files(entry, "901"))  # the IMAGE SaveVideo was given
    assert encoded.shape == video.shape
    with torch.no_grad():
        reference = load_toy_ae().decode(core_latent(api)).clamp(-1, 1)  # [B, 3, F, H, W]
    # the host's frames are the core's to 8 bits (the save nodes truncate to uint8: at most 1/127.5 below)
    core_frames = torch.cat(list(reference.unbind(0)), dim=1)
    assert (encoded - core_frames).abs().max() <= 1 / 127.5 + 2e-3, (encoded - core_frames).abs().max()
    asked = parse_prompt(api[node_of(api, "LowResDenoise")["inputs"]["positive"][0]]["inputs"]["text"])
    colours, mp4_directions_checked = [], 0
    for b in range(BATCH):
        mp4, lossless, ref = (v[:, b * frames:(b + 1) * frames] for v in (video, encoded, core_frames))
        colours.append(detect_color(mp4))
        assert colours[-1] == detect_color(lossless) == detect_color(ref), b
        if object_area(ref)[:4].min() < 0.01:  # a faint object's centroid is noise even in lossless frames
            continue
        track = centroid_track(ref)
        assert detect_direction(centroid_track(lossless)) == detect_direction(track), b
        codec_shift = float(torch.nan_to_num(centroid_track(mp4)[:4] - centroid_track(lossless)[:4]).abs().max())
        if _direction_margin(track) > 2 * codec_shift:  # the codec cannot flip this one
            assert detect_direction(centroid_track(mp4)) == detect_direction(track), b
            mp4_directions_checked += 1
    assert mp4_directions_checked >= BATCH // 2, mp4_directions_checked  # the mp4 check must not vanish
    # the saved videos satisfy the prompt's colour (8/8 with the committed weights and the workflow's fixed seed;
    # direction for this prompt and seed is 3/8 right - direction accuracy is tested on random pairs instead)
    assert colours.count(asked["color"]) >= 6, colours
