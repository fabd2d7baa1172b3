"""The committed toy DiT loads as a Wan2.1 model and runs through every HiStream preset (its prompt-following is
tested in test_toy_behaviour.py)."""

from __future__ import annotations

import json

import pytest
import torch

from histream_core.loading import load_wan_state_dict
from histream_toy.sampling import TOY_DIT_PATH, TOY_WAN_CONFIG, load_toy_dit


def test_toy_weights_load_as_a_wan_model():
    _sd, cfg, info = load_wan_state_dict(TOY_DIT_PATH)
    assert cfg == TOY_WAN_CONFIG
    assert cfg.dim % 128 == 0 and cfg.num_heads == cfg.dim // 128  # what ComfyUI's Wan detector assumes
    assert (cfg.text_dim, cfg.freq_dim, cfg.in_dim, cfg.out_dim) == (4096, 256, 16, 16)
    assert info["format"] == "wan_official" and not info["dropped"]
    assert TOY_DIT_PATH.stat().st_size < 12 * 2**20
    meta = json.loads(info["metadata"]["histream_toy_dit"])
    assert meta["steps"] > 0 and meta["train_seconds"] > 0 and "final_loss" in meta
    # stage 2 (train_rollout) on top of stage 1, and the resumed part's record kept
    assert meta["stage2_steps"] > 0 and meta["stage2_coupled_prob"] > 0
    assert meta["stage2_resumed_from"]["stage2_steps"] > 0
    model = load_toy_dit()
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("preset", ["histream_plus", "self_forcing", "low_res_only"])
def test_toy_presets_run(preset):
    from histream_toy.sampling import generate_toy

    video = generate_toy("red circle moving right, fast", frames=13, seed=0, preset=preset, size=64)
    assert video.shape == (3, 13, 64, 64) and torch.isfinite(video).all()
