"""The node pack inside a real headless ComfyUI (CPU): real prompts through POST /prompt, tiny random Wan weights."""

from __future__ import annotations

import os
import pickle
import time

import pytest
import torch
from comfy_host import QueueError, WorkflowError
from nodes_support import (
    core_reference,
    histream_prompt,
    merge_lora,
    saved_latent,
    tiny_state_dict,
    write_comfy_safetensors,
    write_lora,
    write_self_forcing_pt,
)

pytestmark = pytest.mark.comfy
NODES = ["LoadHiStreamModel", "AnchorCacheChunker", "SparseStepSampler", "LowResDenoise", "CachedUpsampleRefine"]


@pytest.fixture(scope="module")
def weights():
    return tiny_state_dict(seed=0)


@pytest.fixture(scope="module")
def server(comfy_server_factory, weights):
    srv = comfy_server_factory()
    dm = srv.model_dir("diffusion_models")
    write_self_forcing_pt(dm / "tiny_self_forcing.pt", weights)
    write_comfy_safetensors(dm / "tiny_wan_comfy.safetensors", weights)
    srv.lora = write_lora(srv.model_dir("loras") / "tiny_lora.safetensors", weights)
    return srv


@pytest.fixture(scope="module")
def wan21_format(comfy_modules):
    return comfy_modules.latent_formats.Wan21()


def test_object_info_lists_the_five_nodes(server):
    info = server.object_info(refresh=True)
    for name in NODES:
        assert name in info, f"{name} missing; import failures: {server.import_failures()}"
        assert info[name]["category"] == "HiStream"
    chunker = info["AnchorCacheChunker"]["input"]["required"]
    assert {"width", "height", "frames", "batch_size", "chunk_frames", "anchor_frames", "window_chunks",
            "position_mode"} <= set(chunker)
    assert info["AnchorCacheChunker"]["output"] == ["HISTREAM_CACHE", "LATENT"]
    assert "tiny_self_forcing.pt" in info["LoadHiStreamModel"]["input"]["required"]["model_name"][0]
    assert info["SparseStepSampler"]["input"]["optional"]["sigmas"][0] == "SIGMAS"
    assert info["CachedUpsampleRefine"]["output"] == ["LATENT", "IMAGE"]  # IMAGE: with the optional vae input


@pytest.mark.parametrize("preset", ["HiStream", "HiStream+"])
def test_node_pack_equals_core(server, weights, wan21_format, preset):
    """The adapter adds nothing to the math: output LATENT == core result mapped by process_out."""
    entry = server.run(histream_prompt("tiny_self_forcing.pt", preset=preset, frames=13))
    got = saved_latent(server, entry)
    assert got.shape == (1, 16, 4, 8, 8)
    want = core_reference(weights, wan21_format, preset=preset, frames=13)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()


def test_safetensors_variant_and_self_forcing_pt_agree(server):
    a = saved_latent(server, server.run(histream_prompt("tiny_self_forcing.pt", seed=11)))
    b = saved_latent(server, server.run(histream_prompt("tiny_wan_comfy.safetensors", seed=11)))
    assert torch.equal(a, b)


def test_same_graph_twice_is_identical_after_free(server):
    prompt = histream_prompt("tiny_self_forcing.pt", seed=5, prefix="histream_test/repeat")
    a = saved_latent(server, server.run(prompt))
    server.free()
    b = saved_latent(server, server.run(prompt))
    assert torch.equal(a, b)


def test_lora_half_strength_equals_hand_merged_weights(server, weights, wan21_format):
    entry = server.run(histream_prompt("tiny_self_forcing.pt", lora="tiny_lora.safetensors", lora_strength=0.5))
    got = saved_latent(server, entry)
    merged = merge_lora(weights, server.lora, 0.5)
    want = core_reference(merged, wan21_format)
    plain = core_reference(weights, wan21_format)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()
    assert not torch.allclose(got, plain, atol=1e-3)  # the LoRA really took effect


def test_batch_of_two_equals_two_seeds(server):
    both = saved_latent(server, server.run(histream_prompt("tiny_self_forcing.pt", batch=2, seed=20)))
    one = saved_latent(server, server.run(histream_prompt("tiny_self_forcing.pt", seed=20)))
    two = saved_latent(server, server.run(histream_prompt("tiny_self_forcing.pt", seed=21)))
    assert both.shape[0] == 2
    assert torch.allclose(both, torch.cat([one, two]), atol=1e-5)


def test_several_conditioning_entries_are_joined_along_tokens(server, weights, wan21_format):
    prompt = histream_prompt("tiny_self_forcing.pt", tokens=5)
    prompt["9"] = {"class_type": "HiStreamTestConditioning", "inputs": {"seed": 2, "tokens": 3, "batch": 1}}
    prompt["10"] = {"class_type": "ConditioningCombine",
                    "inputs": {"conditioning_1": ["3", 0], "conditioning_2": ["9", 0]}}
    prompt["6"]["inputs"]["positive"] = ["10", 0]
    got = saved_latent(server, server.run(prompt))
    from comfy_test_nodes import fake_wan_text
    from nodes_support import TINY

    from histream_core import CausalWanModel, HiStreamConfig, HiStreamPipeline
    from histream_core.schedule import build_step_plan

    model = CausalWanModel(TINY)
    model.load_state_dict(weights)
    cfg = HiStreamConfig(width=64, height=64, num_frames=9, steps=build_step_plan(4, 2, 4, 2))
    ctx = torch.cat([fake_wan_text(1, 5, 1), fake_wan_text(2, 3, 1)], dim=1)
    want = wan21_format.process_out(HiStreamPipeline(model, cfg).generate(ctx, seed=7))
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)


def test_model_sampling_patch_shift_wins(server, weights, wan21_format):
    prompt = histream_prompt("tiny_self_forcing.pt", shift=5.0)
    prompt["11"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 3.0}}
    prompt["6"]["inputs"]["model"] = ["11", 0]
    got = saved_latent(server, server.run(prompt))
    want = core_reference(weights, wan21_format, shift=3.0)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)


def _error_text(server, prompt) -> str:
    try:
        server.run(prompt)
    except QueueError as exc:  # rejected by validation: HTTP 400 with node_errors
        return str(exc) + str(exc.response)
    except WorkflowError as exc:  # raised while executing
        return str(exc)
    raise AssertionError("the bad prompt ran")


@pytest.mark.parametrize("change,expect", [
    (dict(width=70), "width 70 does not fit: sides must be multiples of 32"),
    (dict(width=48), "multiples of 32"),  # fine for the chunker, too small a grid for the 0.5 low-res stage
    (dict(frames=10), "1 + 4k"),
    (dict(window=0), "window_chunks"),
    (dict(preset="custom", counts=(0, 0, 2, 1)), "first_chunk_steps"),
    (dict(preset="custom", counts=(2, 3, 2, 1)), "low-res steps"),
])
def test_bad_inputs_give_one_clear_error(server, change, expect):
    text = _error_text(server, histream_prompt("tiny_self_forcing.pt", **change))
    assert expect in text, text[:2000]


def test_a_bad_frame_count_is_reported_once(server):
    """ComfyUI repeats a failed custom validation once per input the check names: the chunker names only frames."""
    with pytest.raises(QueueError) as err:
        server.run(histream_prompt("tiny_self_forcing.pt", frames=10))
    assert str(err.value.response).count("frames must be 1 + 4k") == 1, err.value.response


def test_bad_checkpoints_are_refused_clearly(server, weights):
    dm = server.model_dir("diffusion_models")
    (dm / "garbage.safetensors").write_bytes(b"\x00" * 100)
    i2v = dict(weights)
    i2v["img_emb.proj.0.bias"] = torch.zeros(1280)
    write_comfy_safetensors(dm / "tiny_i2v.safetensors", i2v)
    (dm / "notes.txt").write_text("not a model")
    lora_as_model = server.model_dir("loras") / "tiny_lora.safetensors"
    (dm / "lora_in_wrong_folder.safetensors").write_bytes(lora_as_model.read_bytes())
    nan = dict(weights)
    nan["blocks.1.ffn.0.weight"] = nan["blocks.1.ffn.0.weight"].clone()
    nan["blocks.1.ffn.0.weight"][0, 0] = float("nan")  # one element is enough
    write_comfy_safetensors(dm / "tiny_nan.safetensors", nan)
    evil = dm / "evil.pt"
    evil.write_bytes(pickle.dumps({"x": _Shell(f"touch {dm / 'MARKER'}")}))
    server.object_info(refresh=True)
    cases = {"garbage.safetensors": "corrupt", "tiny_i2v.safetensors": "image-to-video",
             "notes.txt": "notes.txt", "lora_in_wrong_folder.safetensors": "LoRA",
             "tiny_nan.safetensors": "NaN/inf values in blocks.1.ffn.0.weight",
             "evil.pt": f"contains code ({os.system.__module__}.system): not a plain checkpoint; nothing was executed"}
    for name, expect in cases.items():
        text = _error_text(server, histream_prompt(name))
        assert expect in text, (name, text[:2000])
        assert "Traceback (most recent call last)" not in text.split("raised", 1)[-1][:200]
    assert not (dm / "MARKER").exists()


class _Shell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _rss_kib(server) -> int:
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_interrupt_stops_releases_and_next_run_succeeds(server):
    long = histream_prompt("tiny_self_forcing.pt", width=128, height=128, frames=1 + 4 * 599, window=2)
    pid = server.queue(long)
    time.sleep(3.0)
    server.interrupt()
    entry = server.wait(pid, timeout=120, check=False)
    assert entry["status"]["status_str"] == "error"
    assert any(ev == "execution_interrupted" for ev, _ in entry["status"]["messages"])
    assert "HiStream: released" in server.log_text()
    assert saved_latent(server, server.run(histream_prompt("tiny_self_forcing.pt", seed=3))).shape[2] == 3


def test_repeated_runs_do_not_grow_memory(server):
    prompt = histream_prompt("tiny_self_forcing.pt", width=128, height=128, frames=49, seed=9)
    server.run(prompt)
    server.free()
    before = _rss_kib(server)
    for _ in range(5):
        server.run(prompt)
        server.free()
    grown = _rss_kib(server) - before
    assert grown < 64 * 1024, f"resident memory grew by {grown} KiB over 5 runs"


def test_stock_load_diffusion_model_feeds_the_histream_nodes(server):
    ours = saved_latent(server, server.run(histream_prompt("tiny_wan_comfy.safetensors", seed=4)))
    prompt = histream_prompt("tiny_wan_comfy.safetensors", seed=4)
    prompt["1"] = {"class_type": "UNETLoader",
                   "inputs": {"unet_name": "tiny_wan_comfy.safetensors", "weight_dtype": "default"}}
    stock = saved_latent(server, server.run(prompt))
    assert torch.equal(ours, stock)
