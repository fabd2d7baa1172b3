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


STOCK_FILES = {  # file → (writer, whether stock Load Diffusion Model reads it)
    "tiny_cf_chunkwise.pt": ("causal_forcing", False),  # {generator_ema, generator}: the host sees two entries
    "tiny_cf_framewise-causal_ar.safetensors": ("causal_ar", True),  # core's repack (metadata causal_ar)
    "tiny_longlive_generator_only.pt": ("longlive", True),  # {generator}: the host unwraps a one-entry dict
    BASE: (None, False),  # {generator, critic}
    "tiny_krea_bare.safetensors": ("bare", True),  # bare Wan names
}


def test_which_formats_stock_load_diffusion_model_reads(server, weights):
    """Stock UNETLoader on each family's layout: where it loads, its MODEL gives our loader's output bitwise."""
    from checkpoint_factory import causal_forcing_pt
    from safetensors.torch import save_file

    dm = server.model_dir("diffusion_models")
    for name, (kind, _) in STOCK_FILES.items():
        if kind == "causal_forcing":
            torch.save(causal_forcing_pt(weights), dm / name)
        elif kind == "longlive":
            torch.save(longlive_base_pt(weights), dm / name)
        elif kind == "causal_ar":
            save_file({f"model.diffusion_model.{k}": v for k, v in weights.items()}, str(dm / name),
                      metadata={"config": '{"transformer": {"causal_ar": true}}'})
        elif kind == "bare":
            save_file(weights, str(dm / name))
    server.object_info(refresh=True)
    ours = saved_latent(server, server.run(histream_prompt(BASE, seed=6)))
    for name, (_, readable) in STOCK_FILES.items():
        assert torch.equal(saved_latent(server, server.run(histream_prompt(name, seed=6))), ours), name
        prompt = histream_prompt(name, seed=6)
        prompt["1"] = {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}}
        try:
            stock = saved_latent(server, server.run(prompt))
        except (QueueError, WorkflowError):
            assert not readable, f"stock Load Diffusion Model failed on {name}"
            continue
        assert readable, f"stock Load Diffusion Model read {name}"
        assert torch.equal(stock, ours), name


def test_every_family_preset_in_process(pack):
    """Each chunker preset is the recipe's window (full cache = the largest window); each sampler preset builds the
    recipe's step plan; an unknown preset names the choices."""
    from histream_core.recipes import RECIPES, VARIANTS, label, recipe_plan
    from histream_core.schedule import build_step_plan

    m = pack.NODE_CLASS_MAPPINGS
    for name in RECIPES:
        for variant in VARIANTS:
            (spec,) = m["SparseStepSampler"]().build(label(name, variant), 5.0, 1, 0, 1, 0)
            counts = (spec.first_steps, spec.first_low, spec.later_steps, spec.later_low)
            assert build_step_plan(*counts) == recipe_plan(name, variant)["steps"], (name, variant)
        for variant, suffix in (("native", ""), ("histream", " + HiStream window")):
            plan, _ = m["AnchorCacheChunker"]().plan(
                width=64, height=64, frames=9, batch_size=1, chunk_frames=2, anchor_frames=0, window_chunks=7,
                position_mode="cache_relative", preset=label(name) + suffix)
            want = recipe_plan(name, variant)
            assert (plan.chunk_frames, plan.anchor_frames, plan.position_mode) == (
                want["chunk_frames"], want["anchor_frames"], want["position_mode"])
            assert plan.window_chunks == (want["window_chunks"] or 10000)
    with pytest.raises(ValueError, match="LongLive-1.3B"):
        m["AnchorCacheChunker"]().plan(width=64, height=64, frames=9, batch_size=1, chunk_frames=3, anchor_frames=3,
                                       window_chunks=1, position_mode="cache_relative", preset="LongLive")
