"""The shipped UI workflows: every node type exists in the running ComfyUI, every link is type-consistent, and each
one really runs (sizes overridden to tiny) through stock VAEDecode → CreateVideo → SaveVideo into a video file."""

from __future__ import annotations

import json
from pathlib import Path

import nodes_support
import pytest
import torch
from nodes_support import saved_latent, tiny_state_dict, write_comfy_safetensors, write_lora, write_self_forcing_pt
from safetensors.torch import load_file, save_file
from vace_helpers import tiny_vace_tensors, write_control_video
from workflow_convert import ui_to_api

pytestmark = pytest.mark.comfy
WORKFLOWS = sorted((Path(__file__).resolve().parent.parent / "workflows").glob("*.json"))
VIRTUAL = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def random_wan21_vae(comfy_modules) -> dict:
    """A Wan2.1-VAE-shaped state dict with random weights, built from the host's own VAE module."""
    from comfy.ldm.wan.vae import WanVAE

    torch.manual_seed(0)
    vae = WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True])
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
            elif p.ndim == 1:
                p.zero_()
            else:
                p.normal_(0, 0.02)
    return {k: v.to(torch.float16).contiguous() for k, v in vae.state_dict().items()}


@pytest.fixture(scope="module")
def server(comfy_server_factory, comfy_modules):
    srv = comfy_server_factory()
    weights = tiny_state_dict(seed=0)
    write_self_forcing_pt(srv.model_dir("diffusion_models") / "self_forcing_dmd.pt", weights)
    write_lora(srv.model_dir("loras") / "tiny_lora.safetensors", weights)
    save_file(random_wan21_vae(comfy_modules), str(srv.model_dir("vae") / "tiny_wan21_vae.safetensors"))
    # a full VACE checkpoint (other main blocks + vace_*), of which the loader takes the vace_* tensors only
    write_comfy_safetensors(srv.model_dir("diffusion_models") / "tiny_vace_full.safetensors",
                            {**tiny_state_dict(seed=9), **tiny_vace_tensors()})
    write_control_video(srv.input_dir / "control_video.mp4", frames=9, size=64)
    write_family_files(srv, weights)
    write_prefix_inputs(srv)
    if host_has_taehv(comfy_modules):  # the Wan 2.1 TAE under its released name, random weights (bf16: Wan 2.1's)
        from stream_decode_support import random_tae_state_dict

        save_file(random_tae_state_dict(dtype=torch.bfloat16), str(srv.model_dir("vae_approx") / TAE_FILE))
    return srv


def write_prefix_inputs(srv) -> None:
    """The image-to-video workflow's start image (80x48: the node center-crops it) and the extension workflow's
    previous latent (one latent frame at 64x64, in stock SaveLatent's layout)."""
    from PIL import Image

    g = torch.Generator().manual_seed(2)
    pixels = (torch.rand(48, 80, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(srv.input_dir / "start_image.png")
    save_file({"latent_tensor": torch.randn(1, 16, 1, 8, 8, generator=g) * 0.5,
               "latent_format_version_0": torch.tensor([])}, str(srv.input_dir / "histream_previous.latent"))


TAE_FILE = "lighttaew2_1.safetensors"


def host_has_taehv(comfy_modules) -> bool:
    return (Path(comfy_modules.root) / "comfy" / "taesd" / "taehv.py").is_file()  # ComfyUI >= v0.8.0


def needs_taehv(path: Path) -> bool:
    return TAE_FILE in path.read_text()


FAMILY_FILES = ("causal_forcing.pt", "framewise-2step.pt", "longlive_base.pt", "krea-realtime-video-14b.safetensors")
SAMPLER_MODEL = "causal_forcing-framewise.safetensors"


def write_family_files(srv, weights: dict) -> None:
    """The model families' files under their released names, in their layouts, with the tiny weights."""
    from checkpoint_factory import causal_forcing_pt, longlive_base_pt, longlive_lora_pt, peft_lora

    from histream_core.config import WanConfig

    dm = srv.model_dir("diffusion_models")
    torch.save(causal_forcing_pt(weights), dm / "causal_forcing.pt")
    torch.save(causal_forcing_pt(weights, fsdp=True), dm / "framewise-2step.pt")
    torch.save(longlive_base_pt(weights, critic=weights), dm / "longlive_base.pt")
    torch.save(longlive_lora_pt(peft_lora(WanConfig.preset("tiny"), rank=4, device="cpu")),
               srv.model_dir("loras") / "lora.pt")
    save_file(weights, str(dm / "krea-realtime-video-14b.safetensors"))
    write_comfy_safetensors(dm / SAMPLER_MODEL, weights)  # core's repack, for the stock UNETLoader


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_nodes_exist_and_links_are_typed(server, path):
    wf = json.loads(path.read_text())
    info = server.object_info(refresh=True)
    nodes = {n["id"]: n for n in wf["nodes"]}
    for n in wf["nodes"]:
        assert n["type"] in VIRTUAL or n["type"] in info, f"{path.name}: unknown node type {n['type']}"
        for m in n.get("properties", {}).get("models", []):
            assert m["name"] and m["directory"], m
    for lid, src, src_slot, dst, dst_slot, type_ in wf["links"]:
        s, d = nodes[src], nodes[dst]
        out_type = info[s["type"]]["output"][src_slot]
        in_name = d["inputs"][dst_slot]["name"]
        spec = {**info[d["type"]]["input"]["required"], **info[d["type"]]["input"].get("optional", {})}[in_name]
        assert out_type == type_ == spec[0], f"{path.name}: link {lid} {s['type']}→{d['type']}.{in_name}"
    assert any(n["type"] == "Note" for n in wf["nodes"]), "each workflow explains its stages in a Note"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_sockets_are_the_node_definitions(server, path):
    """Each node lists every socket of its definition in order (tools/make_workflows.py sizes nodes from them, as the
    frontend does), and its outputs are the definition's."""
    from workflow_convert import _is_widget

    info = server.object_info()
    for n in json.loads(path.read_text())["nodes"]:
        if n["type"] in VIRTUAL:
            continue
        spec, order = info[n["type"]]["input"], info[n["type"]].get("input_order", {})
        sockets = [(name, group[name][0]) for kind in ("required", "optional")
                   for group in [spec.get(kind) or {}] for name in order.get(kind) or list(group)
                   if not _is_widget(group[name])]
        assert [(i["name"], i["type"]) for i in n["inputs"]] == sockets, (path.name, n["type"])
        assert [o["type"] for o in n["outputs"]] == list(info[n["type"]]["output"]), (path.name, n["type"])


def tiny_api(server, path: Path) -> dict:
    """UI → API, then: tiny sizes, test model files, test conditioning in place of the umT5 text encoder."""
    api = ui_to_api(json.loads(path.read_text()), server.object_info())
    by_type = {}
    for nid, node in api.items():
        by_type.setdefault(node["class_type"], []).append(nid)
    for nid in by_type.pop("CLIPLoader", []):
        del api[nid]
    for nid in by_type.get("CLIPTextEncode", []):
        api[nid] = {"class_type": "HiStreamTestConditioning", "inputs": {"seed": 1, "tokens": 8, "batch": 1}}
    for nid in by_type["AnchorCacheChunker"]:
        api[nid]["inputs"].update(width=64, height=64, frames=9)
    for nid in by_type.get("HiStreamPromptSchedule", []):  # 9 frames are one chunk: the first prompt only
        inputs = api[nid]["inputs"]
        api[nid]["inputs"] = {k: v for k, v in inputs.items() if k[:-1] != "conditioning_" or k[-1] == "1"}
    for nid in by_type.get("VAELoader", []):  # the TAE's file is written under its own name
        if api[nid]["inputs"]["vae_name"] != TAE_FILE:
            api[nid]["inputs"]["vae_name"] = "tiny_wan21_vae.safetensors"
    for nid in by_type.get("LoraLoaderModelOnly", []):
        api[nid]["inputs"]["lora_name"] = "tiny_lora.safetensors"
    for nid in by_type.get("UNETLoader", []):  # the SamplerCustomAdvanced workflow
        assert api[nid]["inputs"]["unet_name"] == SAMPLER_MODEL
    for nid in by_type.get("LoadHiStreamModel", []):  # the toy demo ships its own (embedded) weights
        assert api[nid]["inputs"]["model_name"] in ("self_forcing_dmd.pt", "histream_toy_dit.safetensors",
                                                    *FAMILY_FILES)
        if api[nid]["inputs"].get("vace_model", "none") != "none":
            api[nid]["inputs"]["vace_model"] = "tiny_vace_full.safetensors"
    for nid in by_type.get("WanVaceToVideo", []):
        api[nid]["inputs"].update(width=64, height=64, length=9)
    for nid in by_type.get("LoadVideo", []):
        assert api[nid]["inputs"]["file"] == "control_video.mp4"
    for nid in by_type.get("LoadImage", []):
        assert api[nid]["inputs"]["image"] == "start_image.png"
    for nid in by_type.get("LoadLatent", []):
        assert api[nid]["inputs"]["latent"] == "histream_previous.latent"
    # extension: the previous latent's one frame is the prefix (9 frames = 3 latent: the prefix and 2 new), the
    # join drops it from the new output and puts the previous latent first: 1 + 2 latent frames, 9 frames again
    for nid in by_type.get("HiStreamVideoPrefix", []):
        api[nid]["inputs"]["frames"] = 1
    for nid in by_type.get("LatentCut", []):
        api[nid]["inputs"]["index"] = 1
    return api


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_shipped_workflow_runs_to_a_video_file(server, path, comfy_modules):
    if needs_taehv(path) and not host_has_taehv(comfy_modules):
        pytest.skip("a tiny decoder (TAE) needs ComfyUI v0.8.0 or newer (tests/test_stream_decode_tae.py checks the "
                    "refusal here)")
    api = tiny_api(server, path)
    save_id = next(nid for nid, n in api.items() if n["class_type"] == "SaveVideo")
    entry = server.run(api, timeout=600)
    files = server.output_files(entry, save_id)
    assert len(files) == 1 and files[0].suffix == ".mp4" and files[0].stat().st_size > 1000, files
    import av

    with av.open(str(files[0])) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream)]
        assert (stream.width, stream.height) == (64, 64)
        assert len(frames) == 9
        assert float(stream.average_rate) == 16.0


def latent_graph(server, workflow: str, source: str, filename_prefix: str) -> tuple[dict, dict]:
    """A shipped workflow as `tiny_api` makes it, with its decode-and-save nodes replaced by a SaveLatent ("90") of
    the (one) `source` node's LATENT; returns (api, class_type → node id)."""
    api = tiny_api(server, WORKFLOWS[0].parent / workflow)
    ids = {n["class_type"]: nid for nid, n in api.items()}
    api["90"] = {"class_type": "SaveLatent", "inputs": {"samples": [ids[source], 0],
                                                        "filename_prefix": filename_prefix}}
    for nid in [ids["VAEDecode"], ids["CreateVideo"], ids["SaveVideo"]]:
        del api[nid]
    return api, ids


def test_vace_workflow_equals_the_core_run_and_control_changes_it(server, comfy_modules):
    """The shipped VACE workflow's latent equals the same run straight through the core (the control the graph's
    WanVaceToVideo made, mapped as the host maps it), and differs from the same graph without WanVaceToVideo."""
    api, ids = latent_graph(server, "histream_vace_control_1080p.json", "CachedUpsampleRefine", "histream_test/vace_on")
    api["91"] = {"class_type": "HiStreamTestSaveConditioning",
                 "inputs": {"conditioning": [ids["WanVaceToVideo"], 0], "filename": "vace_conditioning"}}
    with_control = saved_latent(server, server.run(api, timeout=600), "90")
    saved = load_file(str(server.output_dir / "vace_conditioning.safetensors"))
    want = nodes_support.core_vace_run(api, ids, saved, comfy_modules.latent_formats.Wan21())
    assert torch.allclose(with_control, want, atol=1e-5, rtol=1e-5), (with_control - want).abs().max()
    low = api[ids["LowResDenoise"]]["inputs"]
    assert low["positive"][0] == ids["WanVaceToVideo"]
    low["positive"] = [ids["HiStreamTestConditioning"], 0]  # the text alone: no control
    api["90"]["inputs"]["filename_prefix"] = "histream_test/vace_off"
    del api["91"]
    without = saved_latent(server, server.run(api, timeout=600), "90")
    assert with_control.shape == without.shape == (1, 16, 3, 8, 8)
    assert (with_control - without).norm() > 1e-2 * without.norm()


def test_extend_workflow_starts_with_the_loaded_latent(server):
    """The shipped extension graph's joined latent is the loaded latent followed by the new frames."""
    api, _ = latent_graph(server, "histream_extend_video.json", "LatentConcat", "histream_test/extended")
    joined = saved_latent(server, server.run(api, timeout=600), "90")
    loaded = load_file(str(server.input_dir / "histream_previous.latent"))["latent_tensor"]
    assert joined.shape == (1, 16, 3, 8, 8) and torch.equal(joined[:, :, :1], loaded)
    assert torch.isfinite(joined).all() and (joined[:, :, 1:] - loaded).abs().max() > 1e-3


def test_i2v_workflow_equals_emulated_ar_video_i2v_and_starts_with_the_image(server):
    """The shipped image-to-video graph's latent is the same with core's ARVideoI2V (emulated: no matrix host has it)
    in place of HiStream Start Image, and its first frame is the encoded start image (saved by a stock VAEEncode of
    the same resize)."""
    api, ids = latent_graph(server, "histream_i2v_1080p.json", "CachedUpsampleRefine", "histream_test/i2v_pack")
    start = api[ids["HiStreamStartImage"]]["inputs"]
    # the start image as ARVideoI2V sees it: stock ImageScale (common_upscale, bilinear, center) → VAEEncode
    api["91"] = {"class_type": "ImageScale", "inputs": {"image": start["start_image"], "upscale_method": "bilinear",
                                                        "width": 64, "height": 64, "crop": "center"}}
    api["92"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["91", 0], "vae": start["vae"]}}
    api["93"] = {"class_type": "SaveLatent", "inputs": {"samples": ["92", 0], "filename_prefix": "histream_test/img"}}
    entry = server.run(api, timeout=600)
    pack, encoded = saved_latent(server, entry, "90"), saved_latent(server, entry, "93")
    api[ids["HiStreamStartImage"]] = {"class_type": "HiStreamTestEmulatedARVideoI2V", "inputs": {
        "model": start["model"], "vae": start["vae"], "start_image": start["start_image"], "width": 64, "height": 64,
        "length": 9, "batch_size": 1}}
    for nid in ("91", "92", "93"):
        del api[nid]
    api["90"]["inputs"]["filename_prefix"] = "histream_test/i2v_emulated"
    emulated = saved_latent(server, server.run(api, timeout=600), "90")
    assert pack.shape == (1, 16, 3, 8, 8) and torch.equal(pack, emulated)
    assert torch.allclose(pack[:, :, :1], encoded, atol=1e-5), (pack[:, :, :1] - encoded).abs().max()


def test_sampler_workflow_equals_the_five_nodes_on_the_server(server):
    """The SamplerCustomAdvanced workflow's latent equals the same plan, model, prompt and seed through the five
    HiStream stage nodes, both in one prompt on the real server."""
    api, ids = latent_graph(server, "histream_sampler_custom_advanced.json", "SamplerCustomAdvanced",
                            "histream_test/sampler_node")
    hs, guider = api[ids["HiStreamSampler"]]["inputs"], api[ids["CFGGuider"]]["inputs"]
    chunker = hs["cache"][0]
    api["91"] = {"class_type": "SparseStepSampler", "inputs": {
        "preset": hs["step_plan"], "shift": hs["shift"], "first_chunk_steps": 4, "first_chunk_low_steps": 2,
        "later_chunk_steps": 2, "later_chunk_low_steps": 1, "sampler": hs["sampler"]}}
    api["92"] = {"class_type": "LowResDenoise", "inputs": {
        "model": guider["model"], "positive": guider["positive"], "cache": [chunker, 0], "steps": ["91", 0],
        "latent": [chunker, 1], "seed": api[ids["RandomNoise"]]["inputs"]["noise_seed"],
        "low_res_scale": hs["low_res_scale"]}}
    api["93"] = {"class_type": "CachedUpsampleRefine", "inputs": {"low_res": ["92", 0], **{
        k: hs[k] for k in ("upsample_method", "downsample_method", "rope_ntk_scale", "cache_update")}}}
    api["94"] = {"class_type": "SaveLatent", "inputs": {"samples": ["93", 0],
                                                        "filename_prefix": "histream_test/five_nodes"}}
    entry = server.run(api, timeout=600)
    via_sampler, five = saved_latent(server, entry, "90"), saved_latent(server, entry, "94")
    assert via_sampler.shape == five.shape == (1, 16, 3, 8, 8)
    assert torch.equal(via_sampler, five)
