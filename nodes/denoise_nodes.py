"""LowResDenoise (spatial stage 1) and CachedUpsampleRefine (spatial stage 2, runs the per-chunk loop)."""

from __future__ import annotations

import logging

from ..histream_core import ConfigError, HiStreamConfig, HiStreamPipeline, ScheduleError
from ..histream_core.attention import set_backend
from ..histream_core.config import CACHE_UPDATES, DOWNSAMPLE_METHODS, UPSAMPLE_METHODS
from ..histream_core.memory import run_bytes
from ..histream_core.schedule import build_step_plan
from . import host_model
from .loader_node import ATTENTION_KEY
from .schedule_node import prompts_for_plan
from .stage_types import CACHE_TYPE, CATEGORY, LOWRES_TYPE, STEPS_TYPE, LowResStage

log = logging.getLogger("histream")


class LowResDenoise:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "From Load HiStream Model or Load Diffusion Model (+ LoRA loaders)."}),
            "positive": ("CONDITIONING", {"tooltip": "Wan umT5 text (CLIPLoader type wan → CLIPTextEncode). "
                                                     "Several entries are joined along the tokens."}),
            "cache": (CACHE_TYPE,),
            "steps": (STEPS_TYPE,),
            "latent": ("LATENT", {"tooltip": "The empty video latent from AnchorCacheChunker."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Noise is drawn on the CPU, so a seed gives the same video on any GPU."}),
            "low_res_scale": ("FLOAT", {"default": 0.5, "min": 0.125, "max": 1.0, "step": 0.125,
                                        "tooltip": "Side scale of the low-res stage (0.5: 960×544 for 1080p)."}),
        }}

    RETURN_TYPES = (LOWRES_TYPE,)
    RETURN_NAMES = ("low_res",)
    FUNCTION = "stage"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Spatial compression, stage 1: each chunk's first steps run at low resolution against the "
                   "low-res KV cache. Runs inside CachedUpsampleRefine, interleaved per chunk.")

    def stage(self, model, positive, cache, steps, latent, seed, low_res_scale):
        stage = LowResStage(model, positive, cache, steps, latent, int(seed), float(low_res_scale))
        video_config(stage)  # validate sizes now, with the nearest valid values in the message
        return (stage,)


def video_config(stage: LowResStage, **extra) -> HiStreamConfig:
    st = stage.steps
    shift = host_model.resolve_shift(stage.model, st.shift)
    try:
        plan = build_step_plan(st.first_steps, st.first_low, st.later_steps, st.later_low, shift, st.sigmas)
        return HiStreamConfig(**stage.cache.core_kwargs(), low_res_scale=stage.low_res_scale, steps=plan, **extra)
    except (ConfigError, ScheduleError) as exc:
        raise ValueError(f"HiStream: {exc}") from None


class CachedUpsampleRefine:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "low_res": (LOWRES_TYPE,),
            "upsample_method": (list(UPSAMPLE_METHODS), {"default": "bilinear",
                                                         "tooltip": "Latent upsampling of the low-res x0."}),
            "downsample_method": (list(DOWNSAMPLE_METHODS), {
                "tooltip": "How the finished full-res chunk is shrunk for the low-res cache."}),
            "rope_ntk_scale": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 8.0, "step": 0.05,
                                         "tooltip": "NTK-style spatial RoPE scaling; 1 = plain positions. ~2.3 maps "
                                                    "1080p onto the 832×480 training grid."}),
            "cache_update": (list(CACHE_UPDATES), {
                "tooltip": "clean_pass: one extra t=0 pass per chunk writes clean K/V (Self-Forcing). last_step: "
                           "reuse the final step's K/V (faster, approximate)."}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Spatial compression, stage 2: upsample each chunk's low-res x0, re-noise, finish at full "
                   "resolution against the high-res cache, then write both caches. Runs the whole chunk loop.")

    def run(self, low_res: LowResStage, upsample_method, downsample_method, rope_ntk_scale, cache_update):
        stage = low_res
        cfg = video_config(stage, upsample_method=upsample_method, downsample_method=downsample_method,
                           rope_ntk_scale=float(rope_ntk_scale), cache_update=cache_update)
        shape = tuple(stage.latent["samples"].shape)
        if shape != cfg.latent_shape():
            raise ValueError(f"the latent {shape} does not match the cache plan {cfg.latent_shape()}: connect "
                             f"AnchorCacheChunker's latent output to LowResDenoise")
        patcher = stage.model
        wan = host_model.wan_config_of(patcher.model.diffusion_model)
        context = host_model.conditioning_to_context(stage.positive, cfg.batch_size, wan.text_dim)
        context = prompts_for_plan(context, cfg)  # a prompt schedule's starts → chunks of this plan
        elem = 4 if host_model.compute_dtype(patcher).itemsize == 4 else 2
        host_model.load_for_sampling(patcher, run_bytes(wan, cfg, elem))
        model = host_model.causal_model(patcher)
        pipeline = HiStreamPipeline(model, cfg, device=patcher.load_device)
        log.info("HiStream: %d chunks, %d steps, caches %.2f GiB", cfg.num_chunks,
                 cfg.steps.total_steps(cfg.num_chunks), pipeline.cache_nbytes() / 2**30)
        progress = host_model.ProgressReporter(patcher, cfg.steps.total_steps(cfg.num_chunks))
        stage.cache.live = pipeline
        set_backend(patcher.model_options.get("transformer_options", {}).get(ATTENTION_KEY))
        try:
            x = pipeline.generate(context.to(patcher.load_device), seed=stage.seed, callback=progress)
        except host_model.OOM_ERRORS as exc:
            raise type(exc)(f"HiStream ran out of GPU memory ({pipeline.cache_nbytes() / 2**30:.1f} GiB of KV "
                            f"cache planned): lower window_chunks, batch_size or the resolution, or load the "
                            f"weights as fp8_e4m3fn") from exc
        finally:
            set_backend(None)
            pipeline.release()
            stage.cache.live = None
            host_model.free_memory_after_run()
            log.info("HiStream: released the KV caches")
        return (host_model.to_latent_output(patcher, x),)
