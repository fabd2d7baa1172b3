"""Adapters between ComfyUI's host objects (ModelPatcher, CONDITIONING, latent formats, progress) and the core."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.utils
import latent_preview
import torch

from ..histream_core import CausalWanModel, WanConfig
from ..histream_core.memory import cheaper_plans, check_fits, run_bytes, vace_cache_bytes
from ..histream_core.vace import VaceControl
from . import host_patches, stream_decode
from .loader_node import ATTENTION_KEY

log = logging.getLogger("histream")
OOM_ERRORS = (torch.cuda.OutOfMemoryError,) + ((torch.OutOfMemoryError,) if hasattr(torch, "OutOfMemoryError") else ())
CPU_OOM_WORDS = ("can't allocate memory", "not enough memory", "DefaultCPUAllocator")  # torch's CPU allocator
MEMORY_FIXES = ("or leave the vae input empty and decode with VAEDecodeTiled, or load the weights as fp8_e4m3fn, or "
                "set the chunker's cache_dtype to fp8_e4m3fn")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OOM type, or torch's CPU allocator failing (a RuntimeError), are the same thing to a user."""
    return isinstance(exc, OOM_ERRORS) or (isinstance(exc, RuntimeError) and any(
        w in str(exc) for w in CPU_OOM_WORDS))


def is_interrupt(exc: BaseException) -> bool:
    return isinstance(exc, comfy.model_management.InterruptProcessingException)


def check_room_for_run(patcher, wan: WanConfig, cfg, need_bytes: int, output_bytes: int) -> None:
    """The memory preflight, after `load_models_gpu` made room: the run's planned device bytes against the host's
    free memory on the load device (which counts torch's cached blocks), and the outputs (LATENT, decoded frames)
    against the intermediate device's; refuse with the estimate and the fixes that fit, before any buffer exists."""
    device = patcher.load_device
    out_device = comfy.model_management.intermediate_device()
    fixes = cheaper_plans(wan, cfg, cache_elem_bytes(patcher))
    if torch.device(out_device).type == torch.device(device).type:
        need_bytes += output_bytes  # one memory holds both (CPU runs)
    else:
        check_fits(output_bytes, int(comfy.model_management.get_free_memory(out_device)), f"{out_device} (outputs)",
                   others="lower frames, batch_size or the resolution")
    check_fits(need_bytes, int(comfy.model_management.get_free_memory(device)), str(device), fixes,
               others=MEMORY_FIXES)


def wan_config_of(diffusion_model) -> WanConfig:
    dm = diffusion_model
    needed = ("blocks", "head", "patch_embedding", "text_embedding", "time_embedding", "time_projection")
    if not all(hasattr(dm, n) for n in needed) or not hasattr(dm.head, "modulation"):
        raise ValueError(f"HiStream needs a Wan2.1 text-to-video MODEL, got {type(dm).__name__}: load a Wan2.1 "
                         f"T2V / Self-Forcing checkpoint with Load HiStream Model or Load Diffusion Model")
    if getattr(dm, "model_type", "t2v") != "t2v" or getattr(dm, "img_emb", None) is not None:
        raise ValueError("this MODEL is a Wan2.1 image-to-video model; HiStream needs the text-to-video "
                         "(Self-Forcing) weights")
    if getattr(dm, "in_dim", 16) != 16 or getattr(dm, "out_dim", 16) != 16:
        raise ValueError(f"this MODEL works on {dm.in_dim}-channel latents; HiStream needs a Wan2.1 text-to-video "
                         f"model (16 latent channels, e.g. Self-Forcing), not Wan2.2 TI2V or Fun/control models")
    return WanConfig(dim=dm.dim, ffn_dim=dm.ffn_dim, freq_dim=dm.freq_dim, text_dim=dm.text_dim,
                     text_len=dm.text_len, in_dim=dm.in_dim, out_dim=dm.out_dim, num_heads=dm.num_heads,
                     num_layers=dm.num_layers, patch_size=tuple(dm.patch_size), qk_norm=dm.qk_norm,
                     cross_attn_norm=dm.cross_attn_norm, eps=dm.eps)


def causal_model(patcher, conditionings=()) -> CausalWanModel:
    """The core engine running over the patcher's own Wan modules (LoRA / fp8 casting stay the host's).
    Call it after `load_for_sampling`, so object patches that swap modules are already in place. One warning names
    every patch on the MODEL (or hook on the `conditionings`) that the loop does not apply."""
    options = patcher.model_options.get("transformer_options", {})
    host_patches.warn_unapplied(patcher, conditionings)
    dm = patcher.model.diffusion_model
    if getattr(dm, "vace_blocks", None) is not None and not options.get("histream_vace"):
        log.warning("HiStream: this MODEL carries VACE blocks but was not loaded by Load HiStream Model: its main "
                    "blocks must be causal (Self-Forcing) weights; a full Wan2.1-VACE checkpoint's main blocks are "
                    "the 50-step model. Attach a VACE file with Load HiStream Model's vace_model instead")
    model = CausalWanModel.over(dm, wan_config_of(dm), compute_dtype=compute_dtype(patcher),
                                attention_backend=options.get(ATTENTION_KEY))  # Load HiStream Model's choice
    model.device = patcher.load_device  # never a weight's device: dynamic VRAM keeps the weights on the CPU
    return model


def compute_dtype(patcher) -> torch.dtype:
    base = patcher.model
    dtype = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    return dtype if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.bfloat16


def resolve_shift(patcher, node_shift: float) -> float:
    """The schedule node's shift, unless a stock ModelSamplingSD3 (object patch `model_sampling`) set one."""
    ms = patcher.object_patches.get("model_sampling") if hasattr(patcher, "object_patches") else None
    if ms is not None and hasattr(ms, "shift"):
        if not (float(ms.shift) > 0):  # NaN fails too
            raise ValueError(f"the MODEL's ModelSamplingSD3 (or another ModelSampling node) sets shift "
                             f"{float(ms.shift)}; HiStream needs shift > 0 (5 for Self-Forcing): change it there")
        if float(ms.shift) != float(node_shift):
            log.info("HiStream: using shift %.3g from the MODEL's ModelSampling patch (schedule node says %.3g)",
                     ms.shift, node_shift)
        return float(ms.shift)
    return float(node_shift)


def cache_elem_bytes(patcher) -> int:
    """Bytes per cached value the planner counts: fp32 runs keep fp32 caches, every other dtype 2 bytes."""
    return 4 if compute_dtype(patcher).itemsize == 4 else 2


def run_device_bytes(patcher, wan: WanConfig, cfg, control: VaceControl | None) -> int:
    """Device memory a run needs besides the weights: caches, text cache, activations, and the VACE caches."""
    elem = cache_elem_bytes(patcher)
    need = run_bytes(wan, cfg, elem)
    if control is not None:
        vace_layers = len(patcher.model.diffusion_model.vace_blocks)
        need += vace_cache_bytes(wan, cfg, vace_layers, control.entries, elem)
    return need


class ProgressReporter:
    """Per-step progress over all chunks, a latent preview of the current chunk, and the Stop button; when a chunk
    is finished, one more preview of all its frames (decoded pixels where a VAE decodes them as they come)."""

    def __init__(self, patcher, total_steps: int, preview=None):
        # `preview`: a host sampler callback (step, x0, x, total_steps), e.g. SamplerCustomAdvanced's
        self.preview = preview or latent_preview.prepare_callback(patcher, total_steps)
        self.bar = comfy.utils.ProgressBar(total_steps)
        self.done, self.total = 0, total_steps

    def __call__(self, info) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        if info.kind == "denoise":
            self.done = info.global_step
            # newest frame of the chunk, in the model's latent space like stock samplers' x0
            self.preview(info.global_step - 1, info.x0[:, :, -1:], info.x, info.total_steps)

    def chunk_done(self, latent: torch.Tensor, frames: torch.Tensor | None = None, every: int = 4) -> None:
        """`latent` [B, 16, t, h, w] (model space); `frames` its decoded pixels [B, f, H, W, 3] or None. The host's
        preview method decides: none, or its latent previewer over the chunk's frames laid side by side."""
        if frames is not None:
            preview = stream_decode.frames_preview(frames, every) if stream_decode.previews_enabled() else None
            self.bar.update_absolute(self.done, self.total, preview)
        else:
            side_by_side = torch.cat(latent.unbind(2), dim=-1).unsqueeze(2)  # [B, 16, 1, h, t·w]
            self.preview(self.done - 1, side_by_side, side_by_side, self.total)


def free_memory_after_run() -> None:
    comfy.model_management.soft_empty_cache()


def load_for_sampling(patcher, extra_bytes: int) -> None:
    comfy.model_management.load_models_gpu([patcher], memory_required=extra_bytes)


def to_raw_latent(patcher, x: torch.Tensor) -> torch.Tensor:
    """Model (normalised) latent → the VAE's latent space on the CPU, as a LATENT holds it."""
    return patcher.model.latent_format.process_out(x.float().cpu())


def to_latent_output(patcher, x: torch.Tensor) -> dict:
    return {"samples": to_raw_latent(patcher, x).to(comfy.model_management.intermediate_device())}
