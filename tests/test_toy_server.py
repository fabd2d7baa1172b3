"""The embedded toy model in the real ComfyUI, nothing downloaded: the shipped demo workflow runs unmodified through
the five HiStream nodes and the demo nodes, its LATENT equals histream_core's toy pipeline, and the saved video
shows what the prompt asked for."""

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


@pytest.fixture(scope="module")
def demo_run(comfy_server):
    api = ui_to_api(json.loads(WORKFLOW.read_text()), comfy_server.object_info())
    refine = next(nid for nid, n in api.items() if n["class_type"] == "CachedUpsampleRefine")
    api["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [refine, 0], "filename_prefix": "toy/latent"}}
    entry = comfy_server.run(api, timeout=600)
    return api, entry


def node_of(api, class_type):
    return next(n for n in api.values() if n["class_type"] == class_type)


def test_demo_latent_equals_the_core_toy_pipeline(comfy_server, comfy_modules, demo_run):
    import comfy.latent_formats

    from histream_core.toy.sampling import generate_latent

    api, entry = demo_run
    chunker, low = node_of(api, "AnchorCacheChunker")["inputs"], node_of(api, "LowResDenoise")["inputs"]
    prompt = node_of(api, "HiStreamToyPrompt")["inputs"]["text"]
    got = comfy.latent_formats.Wan21().process_in(saved_latent(comfy_server, entry, "900").float())
    want = generate_latent(prompt, chunker["frames"], seed=low["seed"], preset="histream", size=chunker["width"])
    assert got.shape == want.shape == (1, 16, 1 + (chunker["frames"] - 1) // 4, 16, 16)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


def test_demo_video_shows_the_prompt(comfy_server, demo_run):
    import av

    from histream_core.toy import centroid_track, detect_color, detect_direction, parse_prompt

    api, entry = demo_run
    save = next(nid for nid, n in api.items() if n["class_type"] == "SaveVideo")
    files = comfy_server.output_files(entry, save)
    assert len(files) == 1 and files[0].suffix == ".mp4"
    with av.open(str(files[0])) as container:
        frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    video = torch.stack(frames).permute(3, 0, 1, 2).float() / 127.5 - 1  # [3, F, H, W] in [-1, 1]
    assert video.shape == (3, node_of(api, "AnchorCacheChunker")["inputs"]["frames"], 128, 128)
    want = parse_prompt(node_of(api, "HiStreamToyPrompt")["inputs"]["text"])
    assert detect_color(video) == want["color"]
    assert detect_direction(centroid_track(video)) == want["direction"]
