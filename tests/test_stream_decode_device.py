"""The device rule: every buffer a run allocates (KV caches, noise, decode state) comes from the host's load device,
never from a weight's `.device` (hosts with dynamic VRAM keep the weights on the CPU and cast them per op).

Both tests put the weights on another device than the load device and record the device of every tensor that
torch produces while the run's buffers are made (a dispatch mode sees each op's outputs)."""

from __future__ import annotations

import importlib

import pytest
import torch
from nodes_support import tiny_state_dict
from stream_decode_support import host_vae
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

pytestmark = pytest.mark.comfy


class OutputDevices(TorchDispatchMode):
    """The devices of all tensors produced by torch ops inside the block, with the op that made each."""

    def __init__(self):
        super().__init__()
        self.made: list[tuple[str, torch.device]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.made += [(str(func), t.device) for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        return out

    def off(self, device: torch.device) -> list[tuple[str, torch.device]]:
        return [m for m in self.made if m[1] != device]


def test_run_buffers_follow_the_patchers_load_device_not_the_weights(pack, comfy_modules):
    core = importlib.import_module(pack.__name__ + ".histream_core")
    host_model = importlib.import_module(pack.__name__ + ".nodes.host_model")
    sd = {f"model.diffusion_model.{k}": v for k, v in tiny_state_dict(seed=0).items()}
    patcher = comfy_modules.sd.load_diffusion_model_state_dict(sd)
    patcher.model.diffusion_model.to("meta")  # the weights live elsewhere; the host computes on load_device
    load = torch.device(patcher.load_device)
    assert load.type == "cpu"

    model = host_model.causal_model(patcher)
    assert model.text_embedding[0].weight.device.type == "meta" and model.device == load
    cfg = core.HiStreamConfig(width=64, height=64, num_frames=13, chunk_frames=3, anchor_frames=3, window_chunks=1)
    pipeline = core.HiStreamPipeline(model, cfg)  # no device given: the model's run device
    with OutputDevices() as log:
        pipeline.allocate()
        noise = pipeline._draw(core.NoiseSource(0, cfg.batch_size), cfg.chunk_frames, pipeline.low)
        spare = model.new_cache(batch=1, grid_hw=(2, 2), anchor_frames=3, window_chunks=1, chunk_frames=3,
                                total_frames=4, position_mode="cache_relative").allocate()  # device left default
    caches = pipeline.plan_caches()
    assert caches and all(c.k.device == load and c.v.device == load for c in caches)
    assert noise.device == load and spare.k.device == load
    assert log.made and not log.off(load)
    pipeline.release()


def test_decode_state_lives_on_the_vaes_load_device_not_the_weights(sdec, comfy_modules, monkeypatch):
    """The reverse case runs the whole decode: weights on the CPU, load (and output) device `meta`, each op casting
    its weight per call as a dynamic-VRAM host does. Any tensor made on the CPU would be a buffer that followed
    a weight."""
    vae = host_vae(dim=8, seed=3)
    meta = torch.device("meta")
    vae.device = vae.output_device = meta
    for m in vae.first_stage_model.modules():
        if hasattr(m, "comfy_cast_weights"):
            m.comfy_cast_weights = True  # the host's ops cast the weight to the input's device
    assert next(vae.first_stage_model.parameters()).device.type == "cpu"
    # the host's attention asks for the free memory of its device, which it cannot measure on meta
    monkeypatch.setattr(comfy_modules.model_management, "get_free_memory", lambda *a, **k: 2**40)
    raw = torch.randn(1, 16, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    with OutputDevices() as log:
        dec = sdec.StreamingDecode(vae, 1, 3)
        dec.decode(raw[:, :, :2])
        history = list(dec.decoder.history.values())
        dec.decode(raw[:, :, 2:])
        images = dec.images()
    assert history and all(t.device == meta for t in history)
    assert dec.latent.device == meta and images.device == meta and images.shape == (9, 16, 16, 3)
    # the only CPU tensors: the chunk slices of the CPU input and the weights' own casting
    assert {op for op, _ in log.off(meta)} <= {"aten.slice.Tensor", "aten._to_copy.default", "aten.detach.default"}
    dec.release()


@pytest.fixture(scope="module")
def sdec(pack):
    return importlib.import_module(pack.__name__ + ".nodes.stream_decode")
