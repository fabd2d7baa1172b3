"""AnchorCacheChunker (temporal stage) and SparseStepSampler (timestep stage): they describe, the loop runs."""

from __future__ import annotations

import torch

from ..histream_core.config import CACHE_DTYPES, POSITION_MODES, SAMPLERS, VAE_STRIDE_S, latent_frames_of
from ..histream_core.recipes import RECIPES, VARIANTS, label, recipe_plan, step_counts
from ..histream_core.schedule import STEP_PRESETS, ScheduleError, build_step_plan
from .stage_types import CACHE_TYPE, CATEGORY, STEPS_TYPE, CachePlan, StepSpec

MAX_SIDE = 8192
MAX_WINDOW = 10000  # the chunker's largest window: covers any video (= the full cache)
NODE_PRESETS = {"HiStream": "histream", "HiStream+": "histream_plus", "Self-Forcing full-res": "self_forcing"}
# the model families' recipes: name → (first steps, first low, later steps, later low)
FAMILY_STEPS = {label(n, v): step_counts(n, v) for n in RECIPES for v in VARIANTS}


def _cache_presets() -> dict[str, tuple[int, int, int, str]]:
    """name → (chunk_frames, anchor_frames, window_chunks, position_mode): each family's own window, and HiStream's."""
    out = {}
    for n in RECIPES:
        for v, suffix in (("native", ""), ("histream", " + HiStream window")):
            p = recipe_plan(n, v)
            window = MAX_WINDOW if p["window_chunks"] is None else p["window_chunks"]
            out[label(n) + suffix] = (p["chunk_frames"], p["anchor_frames"], window, p["position_mode"])
    return out


CACHE_PRESETS = _cache_presets()
CUSTOM = "custom"


class AnchorCacheChunker:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 1920, "min": 16, "max": MAX_SIDE, "step": 32,
                              "tooltip": "Video width in pixels (multiple of 16; 32 with the 0.5 low-res stage)."}),
            "height": ("INT", {"default": 1088, "min": 16, "max": MAX_SIDE, "step": 32,
                               "tooltip": "Video height in pixels; 1088 (not 1080) for 1080p."}),
            "frames": ("INT", {"default": 81, "min": 1, "max": 100001, "step": 4,
                               "tooltip": "Pixel frames, 1 + 4k (81 = 5 s at 16 fps). Any length: memory is fixed."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 16,
                                   "tooltip": "Videos per run; video b uses seed + b."}),
            "chunk_frames": ("INT", {"default": 3, "min": 1, "max": 64,
                                     "tooltip": "Latent frames generated together (Self-Forcing: 3)."}),
            "anchor_frames": ("INT", {"default": 3, "min": 0, "max": 64,
                                      "tooltip": "Latent frames from the start kept in the cache for the whole video "
                                                 "(the attention sink). 3 = the first chunk; 1 = the first frame."}),
            "window_chunks": ("INT", {"default": 1, "min": 1, "max": MAX_WINDOW,
                                      "tooltip": "Most recent chunks kept besides the anchor. At 1080p each chunk "
                                                 "costs ~5.3 GB of KV (bf16, both resolutions); 1 fits a 24 GB "
                                                 "card. ≥ the chunk count = unbounded (Self-Forcing)."}),
            "position_mode": (list(POSITION_MODES), {
                "tooltip": "cache_relative: cached keys are rotated by their place in the cache (any length). "
                           "absolute: Self-Forcing's absolute frame positions (≤ 1024 latent frames)."}),
        }, "optional": {
            "cache_dtype": (list(CACHE_DTYPES), {"default": "default", "tooltip": (
                "KV cache storage. default: the model's compute dtype (bf16/fp16), the reference. fp8_e4m3fn: "
                "e4m3 with a scale per token and head, about half the cache memory (the largest item at 1080p), "
                "with a small error in the generated latent (see bench/RESULTS.md).")}),
            "preset": ([CUSTOM] + list(CACHE_PRESETS), {
                "default": CUSTOM,
                "tooltip": "A model family's own chunk size and window (it replaces chunk_frames, anchor_frames, "
                           "window_chunks and position_mode): Causal Forcing(++) full cache, LongLive sink 3 + 2 "
                           "chunks (its local attention of 12 frames), Krea 14B first frame + 1 chunk; '+ HiStream "
                           "window' bounds a full cache to anchor 3 + 3 frames. custom: the numbers above."}),
        }}

    RETURN_TYPES = (CACHE_TYPE, "LATENT")
    RETURN_NAMES = ("cache", "latent")
    FUNCTION = "plan"
    TITLE = "Anchor Cache Chunker (temporal)"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Temporal compression: the video is made chunk by chunk against a fixed anchor + sliding-window "
                   "KV cache, so speed and memory stay constant for any length. Outputs the shared cache and the "
                   "empty video latent.")

    @classmethod
    def VALIDATE_INPUTS(cls, frames):
        # Only `frames` is named here: ComfyUI reports a failed check once per named input, and 1 + 4k is the rule
        # its range check cannot express. Width/height get the host's own range check; their multiples (16, or 32
        # with the low-res stage) are checked by the core's config, which names the nearest valid sizes.
        if frames < 1:
            return f"frames {frames} is out of range: use 1 + 4k frames, e.g. 81"
        if (frames - 1) % 4:
            lo = frames - (frames - 1) % 4
            return f"frames must be 1 + 4k (the Wan VAE packs 4 frames per latent frame): use {lo} or {lo + 4}"
        return True

    def plan(self, width, height, frames, batch_size, chunk_frames, anchor_frames, window_chunks, position_mode,
             cache_dtype="default", preset=CUSTOM):
        if preset != CUSTOM:
            if preset not in CACHE_PRESETS:
                raise ValueError(f"AnchorCacheChunker: preset {preset!r} is unknown; choose one of "
                                 f"{[CUSTOM, *CACHE_PRESETS]}")
            chunk_frames, anchor_frames, window_chunks, position_mode = CACHE_PRESETS[preset]
        plan = CachePlan(width, height, frames, batch_size, chunk_frames, anchor_frames, window_chunks,
                         position_mode, cache_dtype)
        # an empty video latent: only its shape is used, so a broadcast zero (no memory for long videos)
        latent = torch.zeros(()).expand(batch_size, 16, latent_frames_of(frames), height // VAE_STRIDE_S,
                                        width // VAE_STRIDE_S)
        return (plan, {"samples": latent})


class SparseStepSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "preset": (list(NODE_PRESETS) + list(FAMILY_STEPS) + ["custom"], {
                "tooltip": "HiStream: 2 low-res + 2 high-res steps per chunk. HiStream+: first chunk 2+2, later "
                           "chunks 1+1. Self-Forcing full-res: 4 high-res steps (baseline). A model family's name: "
                           "its own steps (Causal Forcing++: 4 on the first frame, then 2 or 1), '+ HiStream' / "
                           "'+ HiStream+' with DRC on top (shift 5 for all). custom: the numbers below."}),
            "shift": ("FLOAT", {"default": 5.0, "min": 0.01, "max": 100.0, "step": 0.01,
                                "tooltip": "Timestep shift (Self-Forcing: 5). A ModelSamplingSD3 patch on the MODEL "
                                           "overrides it."}),
            "first_chunk_steps": ("INT", {"default": 4, "min": 1, "max": 100, "tooltip": "custom only"}),
            "first_chunk_low_steps": ("INT", {"default": 2, "min": 0, "max": 100,
                                              "tooltip": "custom only: how many of them run at low resolution"}),
            "later_chunk_steps": ("INT", {"default": 2, "min": 1, "max": 100, "tooltip": "custom only"}),
            "later_chunk_low_steps": ("INT", {"default": 1, "min": 0, "max": 100, "tooltip": "custom only"}),
        }, "optional": {
            "sigmas": ("SIGMAS", {"tooltip": "A stock SIGMAS schedule used for every chunk (overrides preset "
                                             "steps and shift); the low-step counts still split it."}),
            "sampler": (list(SAMPLERS), {"default": "renoise", "tooltip": (
                "renoise: fresh noise between steps (Self-Forcing's sampler; use it with distilled few-step "
                "weights). euler: deterministic flow-ODE steps (for models trained by flow matching only, e.g. "
                "the embedded toy model; they need more steps).")}),
        }}

    RETURN_TYPES = (STEPS_TYPE,)
    RETURN_NAMES = ("steps",)
    FUNCTION = "build"
    TITLE = "Sparse Step Sampler (timestep)"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Timestep compression (HiStream+): the first chunk gets the full schedule, later chunks — already "
                   "conditioned on a rich cache — fewer steps.")

    def build(self, preset, shift, first_chunk_steps, first_chunk_low_steps, later_chunk_steps,
              later_chunk_low_steps, sigmas=None, sampler="renoise"):
        if preset in NODE_PRESETS:
            counts = STEP_PRESETS[NODE_PRESETS[preset]]
        else:
            counts = FAMILY_STEPS.get(preset, (first_chunk_steps, first_chunk_low_steps, later_chunk_steps,
                                               later_chunk_low_steps))
        if sigmas is not None and preset != "custom":
            counts = (counts[0], counts[1], counts[0], counts[1])
        custom = None if sigmas is None else tuple(float(s) for s in sigmas.flatten().tolist())
        try:
            build_step_plan(*counts, shift=shift, sigmas=custom)  # fail here, naming the fix, not mid-run
        except ScheduleError as exc:
            raise ValueError(f"SparseStepSampler: {exc}") from None
        if sampler not in SAMPLERS:
            raise ValueError(f"SparseStepSampler: sampler {sampler!r} is unknown; choose one of {list(SAMPLERS)}")
        return (StepSpec(preset, float(shift), *counts, sigmas=custom, sampler=sampler),)
