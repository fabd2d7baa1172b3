"""VACE through the node pack: the loader attaches only vace_* tensors (module file or full VACE checkpoint), the
CONDITIONING of stock WanVaceToVideo reaches the loop as the host itself would feed it, and control / strength 0 /
no control behave at the node level as in the core."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import pytest
import torch
from comfy_host import load_pack
from comfy_test_nodes import fake_wan_text
from nodes_support import TINY, run_pack_nodes, tiny_state_dict, write_comfy_safetensors
from safetensors.torch import save_file
from test_workflows_server import random_wan21_vae
from vace_helpers import tiny_vace_tensors

from histream_core import CausalWanModel, HiStreamConfig, HiStreamPipeline, WanConfig
from histream_core.loading import CheckpointError
from histream_core.schedule import build_step_plan
from histream_core.vace_loading import load_vace_state_dict


# ---- loading (no host) -------------------------------------------------------------------------------------------
def test_vace_module_file_gives_only_its_vace_tensors(tmp_path):
    vace = tiny_vace_tensors()
    save_file(vace, str(tmp_path / "vace_module.safetensors"))
    got, info = load_vace_state_dict(tmp_path / "vace_module.safetensors", TINY)
    assert got.keys() == vace.keys() and all(torch.equal(got[k], vace[k]) for k in vace)
    assert info["vace_layers"] == 2 and not info["full_checkpoint"]
    assert "vace_blocks.0.before_proj.weight" in got and "vace_blocks.1.before_proj.weight" not in got


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_full_vace_checkpoint_gives_only_vace_tensors_and_says_so(tmp_path, caplog, prefix):
    vace, main = tiny_vace_tensors(), tiny_state_dict(seed=9)
    full = {f"{prefix}{k}": v for k, v in {**main, **vace}.items()}
    full["first_stage_model.decoder.conv1.weight"] = torch.zeros(1)  # e.g. a bundled VAE: ignored as well
    save_file(full, str(tmp_path / "wan2.1_vace_1.3B_fp16.safetensors"))
    with caplog.at_level(logging.INFO):
        got, info = load_vace_state_dict(tmp_path / "wan2.1_vace_1.3B_fp16.safetensors", TINY)
    assert got.keys() == vace.keys() and all(torch.equal(got[k], vace[k]) for k in vace)
    assert info["full_checkpoint"] and info["prefix"] == prefix
    assert "main blocks" in caplog.text and "not" in caplog.text


def test_file_without_vace_keys_is_refused_clearly(tmp_path):
    path = write_comfy_safetensors(tmp_path / "self_forcing.safetensors", tiny_state_dict())
    with pytest.raises(CheckpointError, match="no VACE tensors.*VACE file, or 'none'"):
        load_vace_state_dict(path, TINY)


def test_vace_module_of_another_size_is_refused(tmp_path):
    save_file(tiny_vace_tensors(), str(tmp_path / "vace.safetensors"))
    with pytest.raises(CheckpointError, match="dim 128.*dim 256"):
        load_vace_state_dict(tmp_path / "vace.safetensors", WanConfig(dim=256, ffn_dim=256, num_heads=2,
                                                                      num_layers=2))


# ---- in the host ---------------------------------------------------------------------------------------------
FRAMES, SIZE = 5, 32  # 2 latent frames of 4x4 (one chunk), low-res 2x2: the VAE encodes stay cheap on a CPU
LATENT = (1 + (FRAMES - 1) // 4, SIZE // 8, SIZE // 8)


@pytest.fixture(scope="module")
def host(comfy_modules, tmp_path_factory):
    pack = load_pack()
    folder = Path(comfy_modules.folder_paths.get_folder_paths("diffusion_models")[0])
    folder.mkdir(parents=True, exist_ok=True)
    main, vace = tiny_state_dict(seed=0), tiny_vace_tensors()
    write_comfy_safetensors(folder / "vace_test_main.safetensors", main)
    write_comfy_safetensors(folder / "vace_test_full.safetensors", {**tiny_state_dict(seed=9), **vace})
    import comfy.sd

    vae = comfy.sd.VAE(sd=random_wan21_vae(comfy_modules), dtype=torch.float32)  # CPU bf16 conv3d is slow
    return pack, main, vace, vace_conditioning(vae)  # the VAE encodes are the slow part: once per module


def glue(pack):
    return importlib.import_module(pack.__name__ + ".nodes.conditioning")


def load(pack, vace_file):
    return pack.NODE_CLASS_MAPPINGS["LoadHiStreamModel"]().load(
        model_name="vace_test_main.safetensors", weight_dtype="default", attention="sdpa", vace_model=vace_file)[0]


def with_strength(positive, strength):
    """The same conditioning as WanVaceToVideo gives for another strength (only vace_strength differs)."""
    return [[c, {**o, "vace_strength": [strength]}] for c, o in positive]


def vace_conditioning(vae, strength=1.0, seed=3):
    from comfy_extras.nodes_wan import WanVaceToVideo

    g = torch.Generator().manual_seed(seed)
    video = torch.rand(FRAMES, SIZE, SIZE, 3, generator=g)
    masks = (torch.rand(FRAMES, SIZE, SIZE, generator=g) > 0.5).float()
    text = [[fake_wan_text(1, 8, 1), {}]]
    out = WanVaceToVideo.execute(text, text, vae, SIZE, SIZE, FRAMES, 1, strength, control_video=video,
                                 control_masks=masks)
    return out.args[0]


def run_nodes(pack, patcher, positive):
    return run_pack_nodes(pack, patcher, positive, size=SIZE, frames=FRAMES, counts=(4, 2, 4, 2))["samples"]


@pytest.mark.comfy
def test_loader_attaches_vace_of_full_checkpoint_only(host):
    pack, main, vace, _ = host
    dm = load(pack, "vace_test_full.safetensors").model.diffusion_model
    assert type(dm).__name__ == "VaceWanModel" and len(dm.vace_blocks) == 2
    assert torch.equal(dm.vace_blocks[1].after_proj.weight, vace["vace_blocks.1.after_proj.weight"])
    assert torch.equal(dm.blocks[0].self_attn.q.weight, main["blocks.0.self_attn.q.weight"])  # not the full file's
    plain = load(pack, "none").model.diffusion_model
    assert getattr(plain, "vace_blocks", None) is None
    with pytest.raises(ValueError, match="no VACE tensors"):
        load(pack, "vace_test_main.safetensors")


@pytest.mark.comfy
def test_conditioning_reaches_the_core_as_the_host_feeds_its_vace_model(host):
    """Our control context at full resolution equals the host's own WAN21_Vace.extra_conds 'vace_context'."""
    pack, *_, cond = host
    patcher = load(pack, "vace_test_full.safetensors")
    positive = with_strength(cond, 0.7)
    cfg = HiStreamConfig(width=SIZE, height=SIZE, num_frames=FRAMES)
    control = glue(pack).vace_control(patcher, positive, cfg)
    opts = positive[0][1]
    noise = torch.zeros(1, 16, *LATENT)
    conds = patcher.model.extra_conds(noise=noise, vace_frames=opts["vace_frames"], vace_mask=opts["vace_mask"],
                                      vace_strength=opts["vace_strength"])
    want = conds["vace_context"].cond  # [B, entries, 96, T, H, W]
    got = control.chunk_context(0, LATENT[0], LATENT[1:], batch=1)
    assert torch.allclose(got, want[:, 0], atol=1e-6)
    assert control.strengths == [0.7] == conds["vace_strength"].cond


@pytest.mark.comfy
def test_node_run_with_control_equals_core_and_strength_zero_is_plain(host):
    pack, main, vace, cond = host
    patcher = load(pack, "vace_test_full.safetensors")
    text = [[fake_wan_text(1, 8, 1), {}]]
    plain = run_nodes(pack, patcher, text)
    controlled = run_nodes(pack, patcher, with_strength(cond, 1.0))
    zero = run_nodes(pack, patcher, with_strength(cond, 0.0))
    assert torch.equal(zero, plain)
    assert (controlled - plain).norm() > 1e-2 * plain.norm()
    # the same run straight through the core over our own modules
    cfg = HiStreamConfig(width=SIZE, height=SIZE, num_frames=FRAMES, anchor_frames=3, window_chunks=1,
                         steps=build_step_plan(4, 2, 4, 2, shift=5.0))
    control = glue(pack).vace_control(patcher, with_strength(cond, 1.0), cfg)
    model = CausalWanModel(TINY, vace_layers=2)
    model.load_state_dict({**main, **vace})
    x = HiStreamPipeline(model.eval(), cfg).generate(fake_wan_text(1, 8, 1), seed=7, control=control)
    want = patcher.model.latent_format.process_out(x)
    assert torch.allclose(controlled, want, atol=1e-5, rtol=1e-5)


@pytest.mark.comfy
def test_control_without_vace_model_is_refused_before_loading(host):
    pack, *_, cond = host
    patcher = load(pack, "none")
    with pytest.raises(ValueError, match="no VACE blocks.*vace_model"):
        run_nodes(pack, patcher, cond)
