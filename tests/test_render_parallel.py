"""The headless render script under torchrun (2 CPU processes, gloo) writes the single-process latent, and a
render request survives the round trip to disk."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from core_helpers import context, video_config
from parallel_helpers import SEED, SIX_HEADS_VACE, six_head_model
from safetensors.torch import load_file, save_file
from vace_helpers import random_control, vace_model

from histream_core import HiStreamPipeline, PromptSchedule
from histream_core.render_request import RenderRequest, load_render_request, save_render_request

ROOT = Path(__file__).resolve().parents[1]


def _request(model):
    cfg = video_config("histream_plus", num_frames=33, window_chunks=1, batch_size=2, guidance_scale=2.0)
    sched = PromptSchedule(((0, context(model, seed=1)), (2, context(model, seed=2))))
    return RenderRequest(cfg, sched, SEED, negative=context(model, seed=5))


def test_render_request_round_trip(tmp_path):
    model = six_head_model()
    req = _request(model)
    back = load_render_request(save_render_request(tmp_path / "r.pt", req, "histream_plus"))
    assert back.config == req.config and back.seed == SEED
    assert [s for s, _ in back.context.entries] == [0, 2]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(back.context.entries, req.context.entries))
    assert torch.equal(back.negative, req.negative) and back.control is None
    with pytest.raises(ValueError, match="not the 'histream' preset's"):
        save_render_request(tmp_path / "x.pt", req, "histream")
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="is not a HiStream render request"):
        load_render_request(tmp_path / "bad.pt")


def test_render_request_refuses_a_prefix_run(tmp_path):
    model = six_head_model()
    req = _request(model)
    req.config = req.config.with_(prefix_frames=1)
    with pytest.raises(ValueError, match="prefix runs are not supported by the headless renderer yet"):
        save_render_request(tmp_path / "p.pt", req, "histream_plus")
    assert not (tmp_path / "p.pt").exists()


@pytest.mark.parametrize("with_vace", [False, True], ids=["prompt_switch_cfg_batch2", "vace"])
def test_torchrun_two_cpu_processes_write_the_single_process_latent(tmp_path, with_vace):
    if with_vace:  # the main weights and the VACE module in two files, as a user has them
        model = vace_model(SIX_HEADS_VACE, vace_layers=2, seed=3)
        cfg = video_config("histream", num_frames=33, window_chunks=1)
        req = RenderRequest(cfg, context(model), SEED, control=random_control(9, cfg.latent_size, seed=4))
        preset = "histream"
    else:
        model = six_head_model()
        req, preset = _request(model), "histream_plus"
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file({k: v for k, v in sd.items() if not k.startswith("vace_")}, str(tmp_path / "model.safetensors"))
    extra = []
    if with_vace:
        save_file({k: v for k, v in sd.items() if k.startswith("vace_")}, str(tmp_path / "vace.safetensors"))
        extra = ["--vace", str(tmp_path / "vace.safetensors")]
    save_render_request(tmp_path / "request.pt", req, preset)
    back = load_render_request(tmp_path / "request.pt")
    with torch.no_grad():
        pipe = HiStreamPipeline(model, req.config)
        want = pipe.generate(back.context, seed=SEED, negative=back.negative, control=back.control)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", str(ROOT / "tools" / "render_parallel.py"),
           "--model", str(tmp_path / "model.safetensors"), "--request", str(tmp_path / "request.pt"),
           "--out", str(tmp_path / "latent.safetensors"), "--num-heads", "6", *extra]
    done = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"reports"')]
    assert len(lines) == 1, done.stdout[-3000:]
    reports = json.loads(lines[0])["reports"]
    assert [r["rank"] for r in reports] == [0, 1] and all(r["ranks"] == 2 for r in reports)
    single_gib = pipe.cache_nbytes(back.control) / 2**30
    assert all(abs(r["cache_gib_this_rank"] * 2 - single_gib) < 1e-5 for r in reports)
    got = load_file(str(tmp_path / "latent.safetensors"))["latent"]
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5
