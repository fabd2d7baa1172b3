"""The model families in the host (real headless server, tiny weights): LongLive base + PEFT LoRA through the
loader's lora input equals the core run on hand-merged weights; stock LoraLoaderModelOnly applies nothing of that
file (bitwise the base's output); a LoRA that fits nothing is refused; the recipe presets run the recipe."""

from __future__ import annotations

import pytest
import torch
from checkpoint_factory import longlive_base_pt, longlive_lora_pt, peft_lora
from comfy_host import QueueError, WorkflowError
from comfy_test_nodes import fake_wan_text
from nodes_support import TINY, core_reference, histream_prompt, saved_latent, tiny_state_dict

from histream_core import CausalWanModel, HiStreamPipeline
from histream_core.recipes import recipe_config

pytestmark = pytest.mark.comfy
BASE, LORA, WRONG = "tiny_longlive_base.pt", "tiny_longlive_trainer_lora.pt", "tiny_longlive_wrong_lora.pt"
RELEASE = "tiny_longlive_lora.pt"  # the released layout: {"generator_lora": PEFT keys}


@pytest.fixture(scope="module")
def weights():
    return tiny_state_dict(seed=0)


@pytest.fixture(scope="module")
def lora():
    return peft_lora(TINY, rank=8, device="cpu", seed=18)


@pytest.fixture(scope="module")
def server(comfy_server, weights, lora):
    critic = {k: v + 1 for k, v in weights.items()}
    torch.save(longlive_base_pt(weights, critic), comfy_server.model_dir("diffusion_models") / BASE)
    loras = comfy_server.model_dir("loras")
    torch.save(longlive_lora_pt(lora, trainer=True), loras / LORA)
    torch.save(longlive_lora_pt(lora), loras / RELEASE)
    torch.save(longlive_lora_pt({k.replace(".blocks.", ".layers."): v for k, v in lora.items()}), loras / WRONG)
    comfy_server.object_info(refresh=True)
    return comfy_server


@pytest.fixture(scope="module")
def wan21_format(comfy_modules):
    return comfy_modules.latent_formats.Wan21()


def merged(weights: dict, lora: dict) -> dict:
    """W + (α/r)·B·A with α = r = 8, by hand."""
    out = dict(weights)
    for k, a in lora.items():
        if k.endswith("lora_A.weight"):
            target = k[len("base_model.model."):-len(".lora_A.weight")] + ".weight"
            out[target] = weights[target] + lora[k.replace("lora_A", "lora_B")].float() @ a.float()
    return out


def with_loader_lora(prompt: dict, name: str) -> dict:
    prompt["1"]["inputs"]["lora"] = name
    return prompt


def test_loader_lora_input_equals_the_hand_merged_core_run(server, weights, lora, wan21_format):
    got = saved_latent(server, server.run(with_loader_lora(histream_prompt(BASE, seed=3), LORA)))
    want = core_reference(merged(weights, lora), wan21_format, seed=3)
    base = core_reference(weights, wan21_format, seed=3)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()
    assert not torch.allclose(got, base, atol=1e-3)


def test_stock_lora_loader_applies_nothing_of_the_peft_file(server):
    """What a new user meets: stock LoraLoaderModelOnly accepts LongLive's lora.pt and changes nothing."""
    plain = saved_latent(server, server.run(histream_prompt(BASE, seed=4)))
    stock = saved_latent(server, server.run(histream_prompt(BASE, seed=4, lora=RELEASE, lora_strength=1.0)))
    ours = saved_latent(server, server.run(with_loader_lora(histream_prompt(BASE, seed=4), RELEASE)))
    assert torch.equal(stock, plain) and not torch.allclose(ours, plain, atol=1e-3)
    assert "lora key not loaded: base_model.model.blocks.0" in server.log_text()


def test_a_lora_that_fits_nothing_is_refused(server):
    with pytest.raises((QueueError, WorkflowError)) as exc:
        server.run(with_loader_lora(histream_prompt(BASE), WRONG))
    assert "none of its targets exist" in str(exc.value) and WRONG in str(exc.value)


def test_longlive_presets_run_the_longlive_recipe(server, weights, lora, wan21_format):
    """Chunker preset (sink 3 + 2 chunks, absolute positions) + sampler preset (4 steps) = the core recipe run; 61
    frames = 6 chunks, so the window evicts."""
    p = with_loader_lora(histream_prompt(BASE, seed=5, frames=61, preset="LongLive-1.3B"), LORA)
    p["4"]["inputs"]["preset"] = "LongLive-1.3B"
    got = saved_latent(server, server.run(p))
    model = CausalWanModel(TINY)
    model.load_state_dict(merged(weights, lora))
    cfg = recipe_config("longlive", width=64, height=64, num_frames=61)
    with torch.no_grad():
        want = wan21_format.process_out(HiStreamPipeline(model.eval(), cfg).generate(fake_wan_text(1, 8, 1), seed=5))
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()
