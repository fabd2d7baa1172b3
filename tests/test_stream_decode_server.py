"""Streaming decode inside a real headless ComfyUI: the sampler's IMAGE output equals stock VAEDecode of its LATENT
(as saved PNGs), with the Wan VAE and (v0.8.0+) with the Wan 2.1 TAE from models/vae_approx, also with the TAE on
preview_vae beside the Wan VAE; a preview_vae on a host without TAEHV is refused; connecting the IMAGE output without
a VAE gives one clear error, also when the sampler's result comes from ComfyUI's cache."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import numpy as np
import pytest
import torch
from comfy_host import WorkflowError
from nodes_support import histream_prompt, tiny_state_dict, write_self_forcing_pt
from PIL import Image
from safetensors.torch import save_file
from stream_decode_support import random_tae_state_dict, random_wan_vae

pytestmark = pytest.mark.comfy
NO_VAE = "IMAGE output is connected but its vae input is empty"


@pytest.fixture(scope="module")
def server(comfy_server, comfy_modules):
    write_self_forcing_pt(comfy_server.model_dir("diffusion_models") / "stream_decode_model.pt", tiny_state_dict(0))
    vae = {k: v.contiguous() for k, v in random_wan_vae(96, seed=2).state_dict().items()}  # the real architecture
    save_file(vae, str(comfy_server.model_dir("vae") / "stream_decode_vae.safetensors"))
    if has_taehv(comfy_modules):  # bf16: the host reads it as Wan 2.1's lighttaew2_1
        save_file(random_tae_state_dict(seed=3, dtype=torch.bfloat16),
                  str(comfy_server.model_dir("vae_approx") / TAE_FILE))
    comfy_server.object_info(refresh=True)
    return comfy_server


TAE_FILE = "lighttaew2_1.safetensors"


def has_taehv(comfy_modules) -> bool:
    return importlib.util.find_spec("comfy.taesd.taehv") is not None


def pixels(server, entry, node_id) -> list[np.ndarray]:
    return [np.asarray(Image.open(f)) for f in sorted(server.output_files(entry, node_id))]


def test_image_output_equals_stock_vaedecode_in_the_server(server):
    p = histream_prompt("stream_decode_model.pt", frames=5, seed=3, prefix="stream_decode/latent")
    p["10"] = {"class_type": "VAELoader", "inputs": {"vae_name": "stream_decode_vae.safetensors"}}
    p["7"]["inputs"]["vae"] = ["10", 0]
    p["11"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 1], "filename_prefix": "stream_decode/ours"}}
    p["12"] = {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["10", 0]}}
    p["13"] = {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "stream_decode/stock"}}
    entry = server.run(p, timeout=600)
    ours, stock = pixels(server, entry, "11"), pixels(server, entry, "13")
    assert len(ours) == len(stock) == 5 and ours[0].shape == (64, 64, 3)
    assert all(np.array_equal(a, b) for a, b in zip(ours, stock))
    assert len({a.tobytes() for a in ours}) > 1  # frames differ: not a constant image


def decoded_graph(vae_name: str, seed: int, preview_vae: str | None = None) -> dict:
    """The sampler's IMAGE (vae = `vae_name`) and stock VAEDecode of its LATENT with the same file, both saved."""
    p = histream_prompt("stream_decode_model.pt", frames=9, seed=seed, prefix=f"stream_decode/latent{seed}")
    p["10"] = {"class_type": "VAELoader", "inputs": {"vae_name": vae_name}}
    p["7"]["inputs"]["vae"] = ["10", 0]
    if preview_vae:
        p["14"] = {"class_type": "VAELoader", "inputs": {"vae_name": preview_vae}}
        p["7"]["inputs"]["preview_vae"] = ["14", 0]
    p["11"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 1], "filename_prefix": f"stream_decode/o{seed}"}}
    p["12"] = {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["10", 0]}}
    p["13"] = {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": f"stream_decode/s{seed}"}}
    return p


@pytest.mark.parametrize("case", ["tae on vae", "tae on preview_vae"])
def test_tae_decode_in_the_server(server, comfy_modules, case):
    if not has_taehv(comfy_modules):
        pytest.skip("this ComfyUI has no TAEHV (added in v0.8.0)")
    p = (decoded_graph(TAE_FILE, seed=5) if case == "tae on vae" else
         decoded_graph("stream_decode_vae.safetensors", seed=6, preview_vae=TAE_FILE))
    entry = server.run(p, timeout=600)
    ours, stock = pixels(server, entry, "11"), pixels(server, entry, "13")
    assert len(ours) == len(stock) == 9 and all(np.array_equal(a, b) for a, b in zip(ours, stock))
    assert len({a.tobytes() for a in ours}) > 1


def test_preview_vae_without_taehv_is_refused_in_the_server(server, comfy_modules):
    if has_taehv(comfy_modules):
        pytest.skip("this ComfyUI has TAEHV")
    p = decoded_graph("stream_decode_vae.safetensors", seed=7, preview_vae="stream_decode_vae.safetensors")
    with pytest.raises(WorkflowError, match=r"preview_vae: a tiny decoder \(TAE\) needs ComfyUI v0\.8\.0"):
        server.run(p, timeout=600)


def run_listening(server, prompt, timeout=600.0) -> tuple[dict, list[dict]]:
    """Run a prompt while listening on the websocket as the UI does; returns the history entry and the messages."""
    import aiohttp

    async def listen():
        messages = []
        url = server.url.replace("http://", "ws://") + f"/ws?clientId={server.client_id}"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            pid = await asyncio.to_thread(server.queue, prompt)
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                messages.append(data)
                body = data.get("data") or {}
                if body.get("prompt_id") == pid and (data["type"] == "execution_success" or (
                        data["type"] == "executing" and body.get("node") is None)):
                    return pid, messages
        raise AssertionError("the websocket closed")

    pid, messages = asyncio.run(asyncio.wait_for(listen(), timeout))
    return server.wait(pid, timeout=60, check=False), messages


def test_connected_image_without_vae_is_a_clear_error(server):
    p = histream_prompt("stream_decode_model.pt", frames=5, seed=4, prefix="stream_decode/plain")
    p["11"] = {"class_type": "PreviewImage", "inputs": {"images": ["7", 1]}}
    with pytest.raises(WorkflowError, match=NO_VAE):  # the run sees the connection in the graph: fails up front
        server.run(p, timeout=600)
    del p["11"]
    server.run(p, timeout=600)  # IMAGE unconnected, no VAE: fine, and now cached
    p["11"] = {"class_type": "PreviewImage", "inputs": {"images": ["7", 1]}}
    entry, messages = run_listening(server, p)  # node 7 is not run again: its IMAGE output blocks the reader
    errors = [m["data"] for m in messages if m["type"] == "execution_error"]
    assert [(e["node_id"], e["exception_type"]) for e in errors] == [("11", "ExecutionBlocked")]
    assert NO_VAE in errors[0]["exception_message"]
    assert not server.output_files(entry, "11")
