"""The vae part: the host's Wan2.1 VAE decoder (ComfyUI), random weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from .common import REPO, pixel_frames
from .state import Bench


def find_comfyui(explicit: str | None) -> Path | None:
    if explicit == "none":
        return None
    cands = [explicit, os.environ.get("COMFYUI_PATH"), REPO / ".comfy_host", REPO / "shared" / "comfyui",
             REPO.parent / "shared" / "comfyui"]
    for c in cands:
        if c and (Path(c) / "comfy" / "ldm" / "wan" / "vae.py").is_file():
            return Path(c).resolve()
    return None


def load_wan_vae_class(b: Bench):
    """`comfy.ldm.wan.vae.WanVAE` from the host (only its `comfy/` package is needed); None when absent."""
    if b.comfyui == "none":
        return None
    if "comfy" in sys.modules:  # already imported (tests import it through tests/comfy_host.import_comfy)
        import comfy.ldm.wan.vae as wan_vae

        return wan_vae.WanVAE
    root = find_comfyui(b.comfyui)
    if root is None:
        return None
    sys.dont_write_bytecode = True  # never write into the host tree
    sys.path.insert(0, str(root))
    import comfy.options  # noqa: F401 - args come from an empty command line
    from comfy.cli_args import args

    if not b.cuda:
        args.cpu = True
    import comfy.ldm.wan.vae as wan_vae

    return wan_vae.WanVAE


def part_vae(b: Bench) -> dict:
    s = b.scale
    frames = s.vae_frames
    try:
        WanVAE = load_wan_vae_class(b)
    except Exception as exc:  # noqa: BLE001 - the host may not import on this machine: report
        return {"configs": [], "status": "skipped", "reason": f"ComfyUI import failed: {type(exc).__name__}: {exc}"}
    if WanVAE is None:
        return {"configs": [], "status": "skipped",
                "reason": "no ComfyUI host (give --comfyui PATH, $COMFYUI_PATH or carry <repo>/.comfy_host/comfy)"}
    torch.manual_seed(b.seed)
    vae = WanVAE(dim=s.vae_dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    with torch.no_grad():  # the host's ops skip weight init: fill every parameter
        for name, p in vae.named_parameters():
            if p.ndim > 1:
                p.normal_(0, p[0].numel() ** -0.5)
            elif name.endswith("gamma"):
                p.fill_(1.0)
            else:
                p.zero_()
    vae = vae.to(b.device, b.dtype).eval()
    h, w = s.height // 8, s.width // 8
    g = torch.Generator("cpu").manual_seed(b.seed)
    z = torch.randn(1, 16, frames, h, w, generator=g).to(b.device, b.dtype)
    rec = {"id": f"vae_decode@{frames}", "label": (f"Wan2.1 VAE decode (ComfyUI WanVAE dim {s.vae_dim}, random "
                                                   f"{str(b.dtype).replace('torch.', '')}, untiled), {s.width}x"
                                                   f"{s.height}, {frames} latent / {pixel_frames(frames)} px frames"),
           "latent_frames": frames, "pixel_frames": pixel_frames(frames), "status": "ok",
           "params": sum(p.numel() for p in vae.decoder.parameters())}
    rec["base_allocated_bytes"] = b.mem_reset()
    try:
        with torch.no_grad():
            t0 = b.now()
            vae.decode(z[:, :, :2])  # warm-up: first frame + one causal step
            rec["warmup_seconds"] = b.now() - t0
            rec["base_allocated_bytes"] = b.mem_reset()
            t0 = b.now()
            out = vae.decode(z)
            rec["decode_seconds"] = b.now() - t0
            rec["output_shape"] = list(out.shape)
            del out
        rec["s_per_frame"] = rec["decode_seconds"] / rec["pixel_frames"]
    except torch.cuda.OutOfMemoryError as exc:
        rec["status"], rec["oom"] = "oom", {"message": str(exc).splitlines()[0][:300]}
    rec.update(b.mem_peaks())
    del vae, z
    b.free_memory()
    if rec["status"] == "ok":
        b.log(f"  vae: {rec['decode_seconds']:.2f} s for {frames} latent frames → {rec['s_per_frame']:.4f} s/frame")
    return {"configs": [rec], "status": "ok"}
