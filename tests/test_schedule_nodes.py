"""HiStream Prompt Schedule in the host: listed by the server, a scheduled prompt equals the core's scheduled run,
clear errors; in-process: how tagged CONDITIONING becomes a prompt schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from comfy_host import QueueError, WorkflowError, load_pack
from comfy_test_nodes import fake_wan_text
from nodes_support import PRESET_COUNTS, TINY, histream_prompt, saved_latent, tiny_state_dict, write_self_forcing_pt

from histream_core import CausalWanModel, HiStreamConfig, HiStreamPipeline, PromptSchedule
from histream_core.schedule import build_step_plan

pytestmark = pytest.mark.comfy
MODEL_FILE = "tiny_schedule_test.pt"


@pytest.fixture(scope="module")
def weights():
    return tiny_state_dict(seed=0)


@pytest.fixture(scope="module")
def server(comfy_server, weights):
    write_self_forcing_pt(comfy_server.model_dir("diffusion_models") / MODEL_FILE, weights)
    comfy_server.object_info(refresh=True)
    return comfy_server


@pytest.fixture(scope="module")
def wan21_format(comfy_modules):
    return comfy_modules.latent_formats.Wan21()


def scheduled_prompt(unit: str, start_2: float, frames: int = 29) -> dict:
    """histream_prompt with two test conditionings (seeds 1 and 2) through the schedule node."""
    p = histream_prompt(MODEL_FILE, frames=frames)
    p["9"] = {"class_type": "HiStreamTestConditioning", "inputs": {"seed": 2, "tokens": 5, "batch": 1}}
    p["10"] = {"class_type": "HiStreamPromptSchedule",
               "inputs": {"unit": unit, "start_1": 0.0, "start_2": start_2, "start_3": 7.0, "start_4": 9.0,
                          "conditioning_1": ["3", 0], "conditioning_2": ["9", 0]}}
    p["6"]["inputs"]["positive"] = ["10", 0]
    return p


def core_scheduled(sd, latent_format, switch_chunk: int | None, frames: int = 29) -> torch.Tensor:
    """The same graph through histream_core directly (histream_prompt's defaults), mapped by process_out."""
    model = CausalWanModel(TINY)
    model.load_state_dict(sd)
    cfg = HiStreamConfig(width=64, height=64, num_frames=frames, chunk_frames=3, anchor_frames=3, window_chunks=1,
                         steps=build_step_plan(*PRESET_COUNTS["HiStream"]))
    first, second = fake_wan_text(1, 8, 1), fake_wan_text(2, 5, 1)
    ctx = first if switch_chunk is None else PromptSchedule(((0, first), (switch_chunk, second)))
    return latent_format.process_out(HiStreamPipeline(model, cfg).generate(ctx, seed=7))


def test_object_info_lists_the_schedule_node(server):
    info = server.object_info()["HiStreamPromptSchedule"]
    assert info["category"] == "HiStream"
    assert info["output"] == ["CONDITIONING"]
    assert info["input"]["required"]["unit"][0] == ["chunk", "second"]
    assert {f"start_{i}" for i in range(1, 5)} <= set(info["input"]["required"])
    assert {f"conditioning_{i}": ["CONDITIONING"] for i in range(1, 5)} == {
        k: list(v) for k, v in info["input"]["optional"].items()}


@pytest.mark.parametrize("unit,start_2,chunk", [
    ("chunk", 1.0, 1),  # window empty at chunk 1 (anchor only): a text swap
    ("chunk", 2.0, 2),  # window = chunk 1: re-encoded under the second prompt
    ("second", 1.5, 2),  # 1.5 s = pixel frame 24 = latent frame 6 = chunk 2
])
def test_scheduled_prompt_equals_core_scheduled_run(server, weights, wan21_format, unit, start_2, chunk):
    got = saved_latent(server, server.run(scheduled_prompt(unit, start_2)))
    want = core_scheduled(weights, wan21_format, chunk)
    assert got.shape == (1, 16, 8, 8, 8)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()
    plain = core_scheduled(weights, wan21_format, None)
    assert torch.allclose(got[:, :, :3 * chunk], plain[:, :, :3 * chunk], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got[:, :, 3 * chunk:], plain[:, :, 3 * chunk:], atol=1e-3)


def _error_text(server, prompt) -> str:
    try:
        server.run(prompt)
    except (QueueError, WorkflowError) as exc:
        return str(exc) + str(getattr(exc, "response", ""))
    raise AssertionError("the bad prompt ran")


@pytest.mark.parametrize("unit,start_2,expect", [
    ("chunk", 3.0, "only 3 chunks"),  # 29 frames = 8 latent frames = chunks 0..2
    ("second", 5.0, "only 3 chunks"),
    ("chunk", 0.0, "strictly increase"),
    ("chunk", 1.5, "whole number"),
    ("second", 0.25, "both fall in chunk 0"),
])
def test_bad_schedules_give_one_clear_error(server, unit, start_2, expect):
    text = _error_text(server, scheduled_prompt(unit, start_2))
    assert expect in text, text[:2000]


# ---- in-process: tagged CONDITIONING → timed contexts → PromptSchedule ------------------------------------------
@pytest.fixture(scope="module")
def pack_nodes(comfy_modules):
    load_pack()
    from comfyui_histream_under_test.nodes import conditioning, schedule_node

    return conditioning, schedule_node


def schedule(schedule_node, unit, starts=(0.0, 1.0, 2.0, 3.0), **conds):
    kw = {f"start_{i}": s for i, s in enumerate(starts, 1)}
    return schedule_node.HiStreamPromptSchedule().schedule(unit, **kw, **conds)[0]


def test_entries_with_one_start_are_joined_and_units_converted(pack_nodes):
    conditioning, schedule_node = pack_nodes
    a, b, c = fake_wan_text(1, 3, 1), fake_wan_text(2, 4, 1), fake_wan_text(3, 2, 1)
    cond = schedule(schedule_node, "second", (0.0, 2.0, 0.0, 0.0), conditioning_1=[[a, {}], [b, {}]],
                    conditioning_2=[[c, {"strength": 1.0}]])
    assert [(o["histream_start"], o["histream_unit"]) for _, o in cond] == [(0.0, "second")] * 2 + [(2.0, "second")]
    cfg = HiStreamConfig(width=64, height=64, num_frames=81, steps=build_step_plan(4, 2, 4, 2))
    sched = conditioning.text_inputs(cond, None, cfg.with_(batch_size=2), 4096).context
    assert sched.starts == [0, 2]  # 2 s = pixel frame 32 = latent frame 8 = chunk 2
    assert torch.equal(sched.entries[0][1], torch.cat([a, b], dim=1).expand(2, -1, -1))  # joined along tokens
    assert torch.equal(sched.entries[1][1], c.expand(2, -1, -1))
    plain = conditioning.text_inputs([[a, {}]], None, cfg, 4096)
    assert torch.equal(plain.context, a) and plain.negative is None  # plain path unchanged


def test_mixed_conditioning_is_refused(pack_nodes):
    conditioning, schedule_node = pack_nodes
    cfg = HiStreamConfig(width=64, height=64, num_frames=81, steps=build_step_plan(4, 2, 4, 2))
    a = fake_wan_text(1, 3, 1)
    sec = schedule(schedule_node, "second", conditioning_1=[[a, {}]])
    chk = schedule(schedule_node, "chunk", conditioning_1=[[a, {}]])
    with pytest.raises(ValueError, match="through the schedule node"):
        conditioning.text_inputs(sec + [[a, {}]], None, cfg, 4096)
    with pytest.raises(ValueError, match="one unit"):
        conditioning.text_inputs(sec + chk, None, cfg, 4096)
    with pytest.raises(ValueError, match="conditioning_1 at 3"):
        schedule(schedule_node, "chunk", (3.0, 1.0, 2.0, 3.0), conditioning_1=[[a, {}]])
    with pytest.raises(ValueError, match="connect at least"):
        schedule(schedule_node, "chunk")


# ---- the shipped workflow -----------------------------------------------------------------------------------
def test_prompt_schedule_workflow_equals_core_schedule_at_seconds_0_5_10(server, wan21_format):
    """workflows/histream_prompt_schedule_long.json at 32x32, its 241 frames and second starts kept (decoding is
    left out: the generic workflow test decodes it): the prompts switch at chunks 6 and 13 (pixel frames 80 and
    160 = latent frames 20 and 40), and the latent equals the core run with that schedule."""
    from workflow_convert import ui_to_api

    path = Path(__file__).resolve().parent.parent / "workflows" / "histream_prompt_schedule_long.json"
    write_self_forcing_pt(server.model_dir("diffusion_models") / "self_forcing_dmd.pt", tiny_state_dict(seed=0))
    api = ui_to_api(json.loads(path.read_text()), server.object_info(refresh=True))
    seeds = {}
    for nid, node in list(api.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind in ("CLIPLoader", "VAELoader", "VAEDecode", "CreateVideo", "SaveVideo"):
            del api[nid]
        elif kind == "CLIPTextEncode":  # a different fake text per prompt
            api[nid] = {"class_type": "HiStreamTestConditioning", "inputs": {"seed": int(nid), "tokens": 8, "batch": 1}}
        elif kind == "AnchorCacheChunker":
            assert inputs["frames"] == 241
            inputs.update(width=32, height=32)
        elif kind == "LowResDenoise":
            seed = inputs["seed"]
        elif kind == "CachedUpsampleRefine":
            refine = nid
        elif kind == "HiStreamPromptSchedule":
            assert inputs["unit"] == "second"
            seeds = {inputs[f"start_{i}"]: int(inputs[f"conditioning_{i}"][0]) for i in (1, 2, 3)}
    assert sorted(seeds) == [0.0, 5.0, 10.0]
    api["99"] = {"class_type": "SaveLatent",
                 "inputs": {"samples": [refine, 0], "filename_prefix": "histream_test/schedule"}}
    log_start = len(server.log_text())
    got = saved_latent(server, server.run(api, timeout=300), "99")
    log = server.log_text()[log_start:]
    assert "new prompt from chunk 6;" in log and "new prompt from chunk 13;" in log, log[-2000:]

    model = CausalWanModel(TINY)
    model.load_state_dict(tiny_state_dict(seed=0))
    cfg = HiStreamConfig(width=32, height=32, num_frames=241, chunk_frames=3, anchor_frames=3, window_chunks=1,
                         steps=build_step_plan(*PRESET_COUNTS["HiStream+"]))
    sched = PromptSchedule(tuple((c, fake_wan_text(seeds[s], 8, 1)) for c, s in ((0, 0.0), (6, 5.0), (13, 10.0))))
    want = wan21_format.process_out(HiStreamPipeline(model, cfg).generate(sched, seed=seed))
    assert got.shape == (1, 16, 61, 4, 4)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()
