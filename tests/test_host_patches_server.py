"""Patches the HiStream loop does not apply are named in one warning at the start of the run, never ignored
silently: an `attn1_patch` on the MODEL and a hook LoRA on the conditioning, on a real headless server."""

from __future__ import annotations

import pytest
from nodes_support import histream_prompt, saved_latent, tiny_state_dict, write_lora, write_self_forcing_pt

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def server(comfy_server_factory):
    srv = comfy_server_factory()
    weights = tiny_state_dict(seed=0)
    write_self_forcing_pt(srv.model_dir("diffusion_models") / "tiny_self_forcing.pt", weights)
    write_lora(srv.model_dir("loras") / "tiny_lora.safetensors", weights)
    return srv


def _warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if "does not apply these model patches" in line]


def test_attn1_patch_and_hook_lora_are_named_in_one_warning(server):
    plain = saved_latent(server, server.run(histream_prompt("tiny_self_forcing.pt")))
    assert _warnings(server.log_text()) == []  # a plain MODEL warns about nothing

    prompt = histream_prompt("tiny_self_forcing.pt")
    prompt["20"] = {"class_type": "HiStreamTestAttnPatch", "inputs": {"model": ["1", 0], "scale": 2.0}}
    prompt["21"] = {"class_type": "CreateHookLora",
                    "inputs": {"lora_name": "tiny_lora.safetensors", "strength_model": 1.0, "strength_clip": 1.0}}
    prompt["22"] = {"class_type": "ConditioningSetProperties",
                    "inputs": {"cond_NEW": ["3", 0], "strength": 1.0, "set_cond_area": "default",
                               "hooks": ["21", 0]}}
    prompt["6"]["inputs"]["model"] = ["20", 0]
    prompt["6"]["inputs"]["positive"] = ["22", 0]
    patched = saved_latent(server, server.run(prompt))

    found = _warnings(server.log_text())
    assert len(found) == 1, found  # one warning per run, naming everything
    assert "patches (attn1_patch)" in found[0] and "conditioning hooks" in found[0], found[0]
    # what the warning says is true: neither patch reached the loop, so the latent is the plain one
    assert (patched == plain).all()
