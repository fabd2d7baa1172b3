"""Keep what was made: the finished chunks of a stopped or failed run, saved where stock nodes can read them.

The latent goes to ComfyUI's output folder as a `.latent` file in stock SaveLatent's layout (`latent_tensor` plus the
`latent_format_version_0` marker, so stock LoadLatent reads it unscaled once it is copied to the input folder);
decoded frames, where a VAE was on the sampler, go beside it as PNGs. Files are written under a temporary name and
renamed when complete, so no half-written file is ever left.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import folder_paths
import torch
from PIL import Image
from safetensors.torch import save_file

SUBFOLDER_PREFIX = "histream_partial/HiStream"


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".part")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_partial(raw_latent: torch.Tensor, chunks_done: int, num_chunks: int, frames: torch.Tensor | None = None,
                 prefix: str = SUBFOLDER_PREFIX) -> Path:
    """Write the finished chunks' latent [B, 16, t, h, w] (the VAE's latent space, as a LATENT holds it) and, if
    given, their decoded frames [B, f, H, W, 3]; returns the `.latent` path."""
    folder, name, counter, _sub, _ = folder_paths.get_save_image_path(prefix, folder_paths.get_output_directory())
    base = Path(folder) / f"{name}_{counter:05}_chunks-{chunks_done}-of-{num_chunks}"
    latent_path = base.with_suffix(".latent")
    meta = {"histream_partial": json.dumps({"chunks_done": chunks_done, "num_chunks": num_chunks,
                                            "latent_frames": int(raw_latent.shape[2])})}
    tensors = {"latent_tensor": raw_latent.detach().float().cpu().contiguous(),
               "latent_format_version_0": torch.tensor([])}
    _atomic(latent_path, lambda p: save_file(tensors, str(p), metadata=meta))
    if frames is not None:
        out = base.with_name(base.name + "_frames")
        out.mkdir(parents=True, exist_ok=True)
        pixels = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        for b in range(pixels.shape[0]):
            for i in range(pixels.shape[1]):
                target = out / f"video{b}_frame{i:05}.png"
                _atomic(target, lambda p, img=pixels[b, i]: Image.fromarray(img.numpy()).save(p, format="PNG"))
    return latent_path
