"""Wan2.1-VACE control modules: only the `vace_*` tensors of a VACE module file or of a full Wan2.1-VACE checkpoint,
validated against the main (Self-Forcing) model's config. The file formats are read by `loading`."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .config import WanConfig
from .loading import (
    CheckpointError,
    expected_wan_shapes,
    find_prefix,
    read_state_dict,
    strip_wrapper_segments,
    unwrap_checkpoint,
)
from .vace import VACE_IN_DIM, vace_layer_map

log = logging.getLogger(__name__)

VACE_ANCHOR = "vace_patch_embedding.weight"


def expected_vace_shapes(config: WanConfig, vace_layers: int, in_dim: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Wan2.1-VACE control module for a main model of this config: name → shape."""
    d = config.dim
    blocks = expected_wan_shapes(replace(config, num_layers=vace_layers))
    shapes = {f"vace_{k}": s for k, s in blocks.items() if k.startswith("blocks.")}
    for i in range(vace_layers):
        projs = ("before_proj", "after_proj") if i == 0 else ("after_proj",)
        for proj in projs:
            shapes[f"vace_blocks.{i}.{proj}.weight"] = (d, d)
            shapes[f"vace_blocks.{i}.{proj}.bias"] = (d,)
    shapes[VACE_ANCHOR] = (d, in_dim, *config.patch_size)
    shapes["vace_patch_embedding.bias"] = (d,)
    return shapes


def load_vace_state_dict(path: str | Path, main: WanConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Only the `vace_*` tensors of a VACE module file or of a full Wan2.1-VACE checkpoint (bare or prefixed
    `model.diffusion_model.` etc.), validated against the main model's config → (tensors, info)."""
    path = Path(path)
    raw, _ = read_state_dict(path)
    sd = unwrap_checkpoint(raw)
    cleaned = strip_wrapper_segments(sd)
    prefix = find_prefix(cleaned, VACE_ANCHOR)
    if prefix is None:
        diffusers = any(k.startswith("vace_blocks.") and ".attn1." in k for k in cleaned)
        what = ("a diffusers-layout VACE model (use the ComfyUI repack instead)" if diffusers else
                "no VACE tensors (vace_blocks.*, vace_patch_embedding.*)")
        raise CheckpointError(f"{path.name} has {what}: choose a Wan2.1 VACE module or a full Wan2.1-VACE-1.3B "
                              f"checkpoint as the VACE file, or 'none'")
    out = {k[len(prefix):]: v for k, v in cleaned.items()
           if k.startswith((prefix + "vace_blocks.", prefix + "vace_patch_embedding."))}
    main_keys = [k for k in cleaned if k.startswith(prefix + "blocks.")]
    pe = out[VACE_ANCHOR]
    layers = {int(m[1]) for k in out if (m := re.match(r"^vace_blocks\.(\d+)\.", k))}
    if not layers:
        raise CheckpointError(f"{path.name} has a vace_patch_embedding but no vace_blocks.*: the file looks "
                              f"truncated or partial; re-download it")
    if pe.ndim != 5 or pe.shape[0] != main.dim:
        raise CheckpointError(f"{path.name}: its VACE module is for a model of dim {pe.shape[0]}, the main model "
                              f"has dim {main.dim}; use the VACE module of the same size (Wan2.1-VACE-1.3B for "
                              f"the 1.3B Self-Forcing model)")
    vace_layers = max(layers) + 1
    try:
        vace_layer_map(main.num_layers, vace_layers)
    except ValueError as e:
        raise CheckpointError(f"{path.name}: {e}") from None
    if pe.shape[1] != VACE_IN_DIM:
        raise CheckpointError(f"{path.name}: vace_patch_embedding takes {pe.shape[1]} channels, Wan2.1 VACE (what "
                              f"WanVaceToVideo feeds) takes {VACE_IN_DIM}; use a Wan2.1 VACE module")
    shapes = expected_vace_shapes(main, vace_layers, pe.shape[1])
    missing = [k for k in shapes if k not in out]
    wrong = [(k, tuple(out[k].shape), s) for k, s in shapes.items() if k in out and tuple(out[k].shape) != s]
    if missing or wrong:
        first = f"missing {missing[0]}" if missing else f"{wrong[0][0]} is {wrong[0][1]}, expected {wrong[0][2]}"
        raise CheckpointError(f"{path.name} is not a complete Wan2.1 VACE module for this model ({first}): "
                              f"re-download it or use the VACE module of the main model's size")
    keep = {k: v for k, v in out.items() if k in shapes}
    full = bool(main_keys)
    if full:
        log.info("%s is a full Wan2.1-VACE checkpoint: only its %d vace_* tensors are used; its main blocks "
                 "(the ordinary 50-step model) are not", path.name, len(keep))
    info = {"path": str(path), "vace_layers": vace_layers, "vace_in_dim": pe.shape[1], "prefix": prefix,
            "full_checkpoint": full, "ignored": len(cleaned) - len(keep)}
    return keep, info
