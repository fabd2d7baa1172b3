"""Builders for the VACE tests: tiny models with random VACE blocks and random WanVaceToVideo-like control."""

from __future__ import annotations

import torch

from histream_core import CausalWanModel, WanConfig
from histream_core.vace import VaceControl, pack_mask

# 4 main blocks, 2 VACE blocks: hints go after main blocks 0 and 2 (the real 1.3B: 30 and 15)
MICRO4 = WanConfig(dim=64, ffn_dim=128, freq_dim=32, text_dim=32, num_heads=2, num_layers=4)


def vace_model(config: WanConfig = MICRO4, vace_layers: int = 2, seed: int = 0) -> CausalWanModel:
    torch.manual_seed(seed)
    model = CausalWanModel(config, vace_layers=vace_layers).eval()
    with torch.no_grad():  # larger-than-default biases so every path matters numerically
        for p in model.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)
    return model


def random_control(frames: int, size: tuple[int, int], entries: int = 1, strengths=None, seed: int = 5,
                   batch: int = 1) -> VaceControl:
    """Control latents and a binary pixel mask (packed as WanVaceToVideo packs it)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    lat = [torch.randn(batch, 32, frames, h, w, generator=g) for _ in range(entries)]
    masks = [pack_mask((torch.rand(batch, frames, 8 * h, 8 * w, generator=g) > 0.5).float()) for _ in range(entries)]
    return VaceControl(lat, masks, list(strengths or [1.0] * entries))


def without_vace(model: CausalWanModel) -> CausalWanModel:
    """The same main modules (shared), VACE left out."""
    from histream_core.model import WAN_SUBMODULES

    return CausalWanModel(model.config, modules={n: getattr(model, n) for n in WAN_SUBMODULES})


def tiny_vace_tensors(config: WanConfig | None = None, vace_layers: int = 2, seed: int = 11) -> dict:
    """Only the vace_* tensors of a random VACE model of `config` (the ComfyUI-loadable `tiny` preset)."""
    config = config or WanConfig.preset("tiny")
    model = vace_model(config, vace_layers, seed)
    return {k: v.contiguous() for k, v in model.state_dict().items() if k.startswith("vace_")}


def write_control_video(path, frames: int = 9, size: int = 64, fps: int = 16):
    """A small moving-square mp4 (a stand-in for a depth/pose/edge control video)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.zeros((size, size, 3), dtype=np.uint8)
            x = (4 * i) % (size // 2)
            img[size // 4: size // 2, x: x + size // 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
