"""HiStream Sampler through stock SamplerCustomAdvanced (CFGGuider + RandomNoise), in process on a host-loaded MODEL:
the same latent as the five stage nodes for the same plan and seed, previews and Stop through the host's callback,
and a pickled sampler that restores and runs in a fresh process."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from comfy_test_nodes import fake_wan_text
from nodes_support import chunker_and_steps, run_pack_nodes, tiny_state_dict, write_comfy_safetensors
from test_vace_nodes import FRAMES as VACE_FRAMES
from test_vace_nodes import SIZE as VACE_SIZE
from test_vace_nodes import host, load, run_nodes  # noqa: F401  (host: the VACE fixture, built once here too)

pytestmark = pytest.mark.comfy
ROOT = Path(__file__).resolve().parent.parent
IGNORED_SIGMAS = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])  # what BasicScheduler would give; the plan wins
TEXT, NEG = [[fake_wan_text(1, 8, 1), {}]], [[fake_wan_text(2, 8, 1), {}]]


def histream_sampler(pack, cache, step_plan="HiStream", steps=None, sigmas_low_steps=2, sampler="renoise"):
    return pack.NODE_CLASS_MAPPINGS["HiStreamSampler"]().build(
        cache=cache, step_plan=step_plan, shift=5.0, sigmas_low_steps=sigmas_low_steps, sampler=sampler,
        low_res_scale=0.5, upsample_method="bilinear", downsample_method="area", rope_ntk_scale=1.0,
        cache_update="clean_pass", steps=steps)[0]


def guider_of(patcher, positive, negative, cfg=1.0):
    import comfy.samplers

    guider = comfy.samplers.CFGGuider(patcher)  # what the stock CFGGuider node returns
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider


def custom_advanced(sampler, patcher, positive, latent, *, seed=7, sigmas=IGNORED_SIGMAS, negative=None, cfg=1.0):
    """Stock RandomNoise + CFGGuider → SamplerCustomAdvanced, as a graph runs them; returns both LATENT outputs."""
    from comfy_extras import nodes_custom_sampler as stock

    args = dict(noise=stock.Noise_RandomNoise(seed), guider=guider_of(patcher, positive, negative or positive, cfg),
                sampler=sampler, sigmas=sigmas, latent_image=latent)
    node = stock.SamplerCustomAdvanced
    out = node().sample(**args) if hasattr(node, "sample") else node.execute(**args).args  # classic / V3 node
    return out[0]["samples"], out[1]["samples"]


@pytest.mark.parametrize("preset", ["Self-Forcing full-res", "HiStream", "HiStream+"])
def test_sampler_equals_the_five_nodes(pack, patcher, preset):
    """The widget preset and a connected Sparse Step Sampler both win over the SIGMAS; both give the five-node
    latent bit for bit (the same loop, the same CPU noise from the RandomNoise seed, process_out on the CPU)."""
    five = run_pack_nodes(pack, patcher, TEXT, frames=13, preset=preset)["samples"]
    cache, latent, steps = chunker_and_steps(pack, frames=13, preset=preset)
    by_widget, denoised = custom_advanced(histream_sampler(pack, cache, preset), patcher, TEXT, latent)
    by_input, _ = custom_advanced(histream_sampler(pack, cache, "SIGMAS", steps=steps), patcher, TEXT, latent)
    assert five.shape == (1, 16, 4, 8, 8)
    assert torch.equal(by_widget, five) and torch.equal(by_input, five)
    assert torch.equal(denoised, five)  # the host's denoised_output is the whole video too
    other_seed, _ = custom_advanced(histream_sampler(pack, cache, preset), patcher, TEXT, latent, seed=8)
    assert not torch.allclose(other_seed, five, atol=1e-3)  # the seed is RandomNoise's


def test_sigmas_plan_equals_sparse_step_sampler_sigmas(pack, patcher):
    """step_plan SIGMAS: SamplerCustomAdvanced's SIGMAS on every chunk, as Sparse Step Sampler's sigmas input."""
    m = pack.NODE_CLASS_MAPPINGS
    sigmas = torch.tensor([1.0, 0.9, 0.7, 0.4, 0.0])
    cache, latent, _ = chunker_and_steps(pack, frames=13)
    (steps,) = m["SparseStepSampler"]().build(preset="custom", shift=5.0, first_chunk_steps=4,
                                              first_chunk_low_steps=1, later_chunk_steps=4, later_chunk_low_steps=1,
                                              sigmas=sigmas)
    (low,) = m["LowResDenoise"]().stage(model=patcher, positive=TEXT, cache=cache, steps=steps, latent=latent,
                                        seed=7, low_res_scale=0.5)
    five = m["CachedUpsampleRefine"]().run(low_res=low, upsample_method="bilinear", downsample_method="area",
                                           rope_ntk_scale=1.0, cache_update="clean_pass")[0]["samples"]
    got, _ = custom_advanced(histream_sampler(pack, cache, "SIGMAS", sigmas_low_steps=1), patcher, TEXT, latent,
                             sigmas=sigmas)
    assert torch.equal(got, five)
    preset, _ = custom_advanced(histream_sampler(pack, cache, "HiStream"), patcher, TEXT, latent, sigmas=sigmas)
    assert not torch.allclose(preset, five, atol=1e-3)  # the SIGMAS really were used


def test_prompt_schedule_and_guidance_equal_the_five_nodes(pack, patcher):
    schedule = pack.NODE_CLASS_MAPPINGS["HiStreamPromptSchedule"]().schedule(
        unit="chunk", start_1=0.0, start_2=1.0, start_3=2.0, start_4=3.0, conditioning_1=TEXT,
        conditioning_2=[[fake_wan_text(3, 6, 1), {}]])[0]
    cache, latent, _ = chunker_and_steps(pack, frames=13, preset="HiStream+")
    sampler = histream_sampler(pack, cache, "HiStream+")
    five = run_pack_nodes(pack, patcher, schedule, frames=13, preset="HiStream+")["samples"]
    got, _ = custom_advanced(sampler, patcher, schedule, latent)
    assert torch.equal(got, five)
    assert not torch.allclose(five, run_pack_nodes(pack, patcher, TEXT, frames=13, preset="HiStream+")["samples"],
                              atol=1e-3)  # the switch at chunk 1 took effect
    # CFGGuider's cfg and negative guide as LowResDenoise's cfg and negative do
    five_cfg = run_pack_nodes(pack, patcher, TEXT, frames=13, preset="HiStream+", negative=NEG, cfg=2.0)["samples"]
    got_cfg, _ = custom_advanced(sampler, patcher, TEXT, latent, negative=NEG, cfg=2.0)
    assert torch.equal(got_cfg, five_cfg)


def test_vace_control_equals_the_five_nodes(host):  # noqa: F811
    pack, _, _, cond = host
    vace_patcher = load(pack, "vace_test_full.safetensors")
    five = run_nodes(pack, vace_patcher, cond)  # WanVaceToVideo's conditioning, HiStream (4, 2, 4, 2)
    cache, latent, _ = chunker_and_steps(pack, size=VACE_SIZE, frames=VACE_FRAMES)
    got, _ = custom_advanced(histream_sampler(pack, cache, "HiStream"), vace_patcher, cond, latent)
    assert torch.equal(got, five)
    plain = run_nodes(pack, vace_patcher, TEXT)
    assert (got - plain).norm() > 1e-2 * plain.norm()  # the control reached the loop


def test_previews_and_stop_go_through_the_host_callback(pack, patcher, comfy_modules):
    """Every step of every chunk reaches the callback SamplerCustomAdvanced passes (its progress bar and previews);
    a Stop pressed during the run interrupts at the next step and the next run is unaffected."""
    import comfy.samplers

    cache, latent, _ = chunker_and_steps(pack, frames=13, preset="HiStream+")
    sampler, calls = histream_sampler(pack, cache, "HiStream+"), []
    guider = guider_of(patcher, TEXT, TEXT)
    noise = torch.zeros(latent["samples"].shape)
    out = guider.sample(noise, latent["samples"], sampler, IGNORED_SIGMAS, seed=7,
                        callback=lambda step, x0, x, total: calls.append((step, tuple(x0.shape), total)))
    total = 4 + 2  # HiStream+: 4 steps on chunk 0, 2 on chunk 1
    # each step (its newest frame), each finished chunk (its frames side by side), then the whole video
    assert [c[0] for c in calls] == [0, 1, 2, 3, 3, 4, 5, 5, 5] and all(c[2] == total for c in calls)
    assert [c[1] for c in calls if c[0] in (1, 2)] == [(1, 16, 1, 4, 4), (1, 16, 1, 8, 8)]  # low res, then full
    assert calls[4][1] == (1, 16, 1, 8, 3 * 8)  # chunk 0: 3 latent frames side by side
    assert calls[-1] == (total - 1, tuple(out.shape), total)  # the last x0 the host keeps: the whole video
    assert isinstance(sampler, comfy.samplers.Sampler)

    mm, seen = comfy_modules.model_management, []

    def hook(value, total_, preview, node_id=None):
        seen.append(value)
        if value == 2:
            mm.interrupt_current_processing(True)

    comfy_modules.utils.set_progress_bar_global_hook(hook)  # the server's Stop acts through this hook
    try:
        with pytest.raises(mm.InterruptProcessingException):
            custom_advanced(sampler, patcher, TEXT, latent)
    finally:
        comfy_modules.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert seen == [1, 2]
    again, _ = custom_advanced(sampler, patcher, TEXT, latent)
    assert torch.equal(again, run_pack_nodes(pack, patcher, TEXT, frames=13, preset="HiStream+")["samples"])


def test_bad_inputs_get_one_clear_error(pack, patcher):
    cache, latent, _ = chunker_and_steps(pack, frames=13)
    sampler = histream_sampler(pack, cache)
    wrong = {"samples": torch.zeros(1, 16, 3, 8, 8)}
    with pytest.raises(ValueError, match="does not match the cache plan.*SamplerCustomAdvanced's latent_image"):
        custom_advanced(sampler, patcher, TEXT, wrong)
    with pytest.raises(ValueError, match="noise mask.*not supported"):
        custom_advanced(sampler, patcher, TEXT, {**latent, "noise_mask": torch.ones(1, 1, 4, 8, 8)})
    with pytest.raises(ValueError, match="step_plan 'fast' is unknown"):
        histream_sampler(pack, cache, "fast")
    odd, _, _ = chunker_and_steps(pack, size=48, frames=13)
    with pytest.raises(ValueError, match="48"):  # the size check at the node, before anything runs
        histream_sampler(pack, odd)


CHILD = """
import pickle, sys
sys.path[:0] = [{comfy_root!r}, {pack_root!r}]
import histream_core  # the core by its plain name, without ComfyUI
assert "comfy" not in sys.modules
import comfy.options
from comfy.cli_args import args
args.cpu, args.base_directory = True, {base!r}
with open({payload!r}, "rb") as f:
    data = pickle.load(f)  # imports histream_pickle, which loads the pack
sampler = data["sampler"]
import comfy.samplers, comfy.sd, torch
from comfy_extras import nodes_custom_sampler as stock
assert type(sampler).__module__ == {pack_name!r} + ".nodes.sampler_node", type(sampler).__module__
assert isinstance(sampler, comfy.samplers.Sampler)
patcher = comfy.sd.load_diffusion_model({weights!r})
guider = comfy.samplers.CFGGuider(patcher)
guider.set_conds(data["positive"], data["positive"])
guider.set_cfg(1.0)
kw = dict(noise=stock.Noise_RandomNoise(data["seed"]), guider=guider, sampler=sampler, sigmas=data["sigmas"],
          latent_image=data["latent"])
node = stock.SamplerCustomAdvanced
out = node().sample(**kw) if hasattr(node, "sample") else node.execute(**kw).args
torch.save(out[0]["samples"], {result!r})
print("path:", [p for p in sys.path if "site-packages" not in p and "lib/python" not in p])
"""


def test_pickled_sampler_runs_in_a_fresh_process(pack, comfy_modules, tmp_path):
    """Engines ship a SAMPLER to worker processes: pickled here, restored in a process that has only the ComfyUI root
    and the pack on its path, it gives the same latent."""
    weights = write_comfy_safetensors(tmp_path / "tiny.safetensors", tiny_state_dict(seed=0))
    patcher = comfy_modules.sd.load_diffusion_model(str(weights))
    cache, latent, steps = chunker_and_steps(pack, frames=13, preset="HiStream+")
    sampler = histream_sampler(pack, cache, "SIGMAS", steps=steps)
    restored = pickle.loads(pickle.dumps(sampler))
    assert type(restored) is type(sampler) and restored.plan == sampler.plan
    (with_sigmas,) = pack.NODE_CLASS_MAPPINGS["SparseStepSampler"]().build(
        preset="HiStream", shift=5.0, first_chunk_steps=4, first_chunk_low_steps=2, later_chunk_steps=2,
        later_chunk_low_steps=1, sigmas=torch.tensor([1.0, 0.5, 0.0]))
    for other in (histream_sampler(pack, cache, "SIGMAS"), histream_sampler(pack, cache, steps=with_sigmas)):
        assert pickle.loads(pickle.dumps(other)).plan == other.plan
    want, _ = custom_advanced(sampler, patcher, TEXT, latent)
    payload, result = tmp_path / "sampler.pkl", tmp_path / "result.pt"
    payload.write_bytes(pickle.dumps({"sampler": sampler, "positive": TEXT, "latent": latent, "seed": 7,
                                      "sigmas": IGNORED_SIGMAS}))
    assert b"histream_pickle" in payload.read_bytes() and pack.__name__.encode() not in payload.read_bytes()
    script = textwrap.dedent(CHILD).format(comfy_root=str(comfy_modules.root), pack_root=str(ROOT),
                                           base=str(tmp_path / "base"), payload=str(payload), weights=str(weights),
                                           result=str(result), pack_name=ROOT.name)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    proc = subprocess.run([sys.executable, "-I", "-B", "-c", script], check=False, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert torch.equal(torch.load(result), want)


def test_both_entries_shard_over_a_sequence_parallel_group_from_the_environment(pack, patcher, monkeypatch):
    """A worker whose torch.distributed world has a sequence-parallel group (parallel_from_environment finds it):
    HiStream Sampler and the five nodes run the sharded loop (its exchanges are used) and give the plain latent. A
    group of one with a local transport stands in for the ranks here; tests/test_parallel.py spawns real ones."""
    import importlib

    from test_parallel import _LocalTransport

    nodes_mod = importlib.import_module(pack.__name__ + ".nodes.denoise_nodes")
    parallel = importlib.import_module(pack.__name__ + ".histream_core.parallel")
    plain = run_pack_nodes(pack, patcher, TEXT, frames=13, preset="HiStream")["samples"]
    cache, latent, _ = chunker_and_steps(pack, frames=13, preset="HiStream")
    contexts = []

    def from_environment():
        contexts.append(parallel.SequenceParallel(0, 1, _LocalTransport()))
        return contexts[-1]

    monkeypatch.setattr(nodes_mod, "parallel_from_environment", from_environment)
    five = run_pack_nodes(pack, patcher, TEXT, frames=13, preset="HiStream")["samples"]
    via_sampler, _ = custom_advanced(histream_sampler(pack, cache, "HiStream"), patcher, TEXT, latent)
    assert len(contexts) == 2 and all(sum(sp.calls.values()) > 0 for sp in contexts)
    assert torch.equal(five, plain) and torch.equal(via_sampler, plain)


def test_a_prefix_on_the_model_gives_the_five_node_video(pack, patcher):
    """Extension through SamplerCustomAdvanced: a MODEL from HiStream Video Prefix (the same key core's ARVideoI2V
    writes) gives the sampler the five nodes' prefixed video, which starts with the prefix frames."""
    previous = run_pack_nodes(pack, patcher, TEXT, frames=13, preset="HiStream")
    (model,) = pack.NODE_CLASS_MAPPINGS["HiStreamVideoPrefix"]().apply(patcher, previous, 2)
    five = run_pack_nodes(pack, model, TEXT, frames=13, preset="HiStream")["samples"]
    cache, latent, _ = chunker_and_steps(pack, frames=13, preset="HiStream")
    via_sampler, _ = custom_advanced(histream_sampler(pack, cache, "HiStream"), model, TEXT, latent)
    assert torch.equal(via_sampler, five)
    assert torch.allclose(five[:, :, :2], previous["samples"][:, :, -2:], atol=1e-5)
    plain = run_pack_nodes(pack, patcher, TEXT, frames=13, preset="HiStream")["samples"]
    assert (five[:, :, 2:] - plain[:, :, 2:]).abs().max() > 1e-3  # the prefix changed what follows
