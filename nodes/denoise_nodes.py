"""LowResDenoise (spatial stage 1) and CachedUpsampleRefine (spatial stage 2, runs the per-chunk loop)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from ..histream_core import ConfigError, HiStreamConfig, HiStreamPipeline, ScheduleError, WanConfig
from ..histream_core.config import CACHE_UPDATES, DOWNSAMPLE_METHODS, UPSAMPLE_METHODS
from ..histream_core.memory import output_bytes
from ..histream_core.parallel import parallel_from_environment
from ..histream_core.schedule import build_step_plan
from ..histream_core.vace import VaceControl
from . import host_model, partial_save, prefix_nodes, stream_decode
from .conditioning import TextInputs, text_inputs, vace_control
from .stage_types import CACHE_TYPE, CATEGORY, LOWRES_TYPE, STEPS_TYPE, LowResStage

log = logging.getLogger("histream")

# the inputs Low-Res Denoise / Cached Upsample Refine share with the HiStream Sampler (one home for their widgets)
LOW_RES_SCALE_INPUT = {
    "low_res_scale": ("FLOAT", {"default": 0.5, "min": 0.125, "max": 1.0, "step": 0.125,
                                "tooltip": "Side scale of the low-res stage (0.5: 960×544 for 1080p)."}),
}
REFINE_INPUTS = {
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
}


def refine_options(upsample_method, downsample_method, rope_ntk_scale, cache_update) -> dict:
    """The REFINE_INPUTS' widget values as HiStreamConfig keywords."""
    return dict(upsample_method=upsample_method, downsample_method=downsample_method,
                rope_ntk_scale=float(rope_ntk_scale), cache_update=cache_update)


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
            **LOW_RES_SCALE_INPUT,
        }, "optional": {
            "negative": ("CONDITIONING", {"tooltip": "Negative prompt, used when cfg is not 1."}),
            "cfg": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 30.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance. 1 = off: Self-Forcing's distilled weights need "
                                         "1. Models trained with prompt dropout (e.g. the embedded toy model: 3) "
                                         "follow the prompt better above 1; each step then runs twice the rows."}),
        }}

    RETURN_TYPES = (LOWRES_TYPE,)
    RETURN_NAMES = ("low_res",)
    FUNCTION = "stage"
    TITLE = "Low-Res Denoise (spatial 1)"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Spatial compression, stage 1: each chunk's first steps run at low resolution against the "
                   "low-res KV cache. Runs inside CachedUpsampleRefine, interleaved per chunk.")

    def stage(self, model, positive, cache, steps, latent, seed, low_res_scale, negative=None, cfg=1.0):
        # the pipeline refuses this too, but only when the loop node runs, after the model is loaded
        if float(cfg) != 1.0 and negative is None:
            raise ValueError(f"LowResDenoise: cfg {cfg:g} needs a negative prompt: connect the negative input (an "
                             f"empty prompt works), or set cfg to 1")
        stage = LowResStage(model, positive, cache, steps, latent, int(seed), float(low_res_scale), negative,
                            float(cfg))
        video_config(stage)  # validate sizes now, with the nearest valid values in the message
        return (stage,)


def video_config(stage: LowResStage, **extra) -> HiStreamConfig:
    st = stage.steps
    shift = host_model.resolve_shift(stage.model, st.shift)
    try:
        plan = build_step_plan(st.first_steps, st.first_low, st.later_steps, st.later_low, shift, st.sigmas)
        return HiStreamConfig(**stage.cache.core_kwargs(), low_res_scale=stage.low_res_scale, steps=plan,
                              sampler=st.sampler, guidance_scale=stage.cfg,
                              prefix_frames=prefix_nodes.prefix_frames(stage.model), **extra)
    except (ConfigError, ScheduleError) as exc:
        raise ValueError(f"HiStream: {exc}") from None


class CachedUpsampleRefine:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "low_res": (LOWRES_TYPE,),
            **REFINE_INPUTS,
        }, "optional": {
            "vae": ("VAE", {"tooltip": "Wan2.1 VAE (or its tiny decoder lighttaew2_1, ComfyUI 0.8.0+: fast drafts): "
                                       "decode each chunk while the next is generated (the IMAGE output, equal to "
                                       "VAEDecode of the LATENT). Leave empty to decode afterwards."}),
            "preview_vae": ("VAE", {"tooltip": "Wan 2.1 tiny decoder (lighttaew2_1, ComfyUI 0.8.0+): decodes only "
                                               "each finished chunk's preview, fast; the IMAGE output still comes "
                                               "from vae. A TAE on vae instead makes the IMAGE itself fast."}),
        }, "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("LATENT", "IMAGE")
    OUTPUT_TOOLTIPS = ("The video latent (for VAEDecode / VAEDecodeTiled).",
                       "The decoded frames; needs the vae input (without it this output must stay unconnected).")
    FUNCTION = "run"
    TITLE = "Cached Upsample Refine (spatial 2)"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Spatial compression, stage 2: upsample each chunk's low-res x0, re-noise, finish at full "
                   "resolution against the high-res cache, then write both caches. Runs the whole chunk loop; with "
                   "a VAE connected, each finished chunk is decoded before the next one starts.")

    def run(self, low_res: LowResStage, upsample_method, downsample_method, rope_ntk_scale, cache_update, vae=None,
            preview_vae=None, prompt=None, unique_id=None):
        plan = resolve_plan(low_res, refine_options(upsample_method, downsample_method, rope_ntk_scale, cache_update))
        if vae is None and stream_decode.image_output_used(prompt, unique_id):
            raise ValueError(stream_decode.NO_VAE_MESSAGE)
        cfg, patcher = plan.config, plan.patcher
        decoder = None if vae is None else stream_decode.StreamingDecode(vae, cfg.batch_size, cfg.latent_frames)
        previewer = None
        if preview_vae is not None:
            stream_decode.check_preview_vae(preview_vae)
            if stream_decode.previews_enabled():  # decided once: the TAE's causal memory needs every chunk
                previewer = stream_decode.StreamingDecode(preview_vae, cfg.batch_size, cfg.latent_frames,
                                                          keep_video=False)
            else:
                log.info("HiStream: previews are off (ComfyUI's preview method): preview_vae is not used")
        latent = host_model.to_latent_output(patcher, run_plan(plan, decoder, previewer=previewer))
        # without a VAE the IMAGE output blocks whatever reads it (e.g. after a cached run that left it unconnected)
        return (latent, stream_decode.no_images() if decoder is None else decoder.images())


@dataclass(frozen=True)
class RunPlan:
    """Everything the loop needs, resolved and checked before anything is loaded."""

    patcher: Any  # comfy ModelPatcher
    config: HiStreamConfig
    text: TextInputs
    control: VaceControl | None
    seed: int
    device_bytes: int  # what the run needs on the device besides the weights
    wan: WanConfig  # the MODEL's architecture
    prefix: torch.Tensor | None = None  # the clean prefix (model latent space) the MODEL carries (prefix_nodes.py)
    conditionings: tuple = ()  # the positive and negative CONDITIONING (for the unapplied-patch warning)


def resolve_plan(stage: LowResStage, refine_options: dict) -> RunPlan:
    cfg = video_config(stage, **refine_options)
    shape = tuple(stage.latent["samples"].shape)
    if shape != cfg.latent_shape():
        raise ValueError(f"the latent {shape} does not match the cache plan {cfg.latent_shape()}: connect "
                         f"AnchorCacheChunker's latent output to LowResDenoise (with HiStream Sampler: to "
                         f"SamplerCustomAdvanced's latent_image)")
    patcher = stage.model
    wan = host_model.wan_config_of(patcher.model.diffusion_model)
    text = text_inputs(stage.positive, stage.negative, cfg, wan.text_dim)
    control = vace_control(patcher, stage.positive, cfg)  # VACE (WanVaceToVideo), validated; None without
    prefix = prefix_nodes.prefix_of(patcher, cfg, wan.in_dim)
    return RunPlan(patcher, cfg, text, control, stage.seed, host_model.run_device_bytes(patcher, wan, cfg, control),
                   wan, prefix, (stage.positive, stage.negative))


def build_pipeline(plan: RunPlan) -> HiStreamPipeline:
    """The run's pipeline over the MODEL's own layers, on the host's load device: the one place where both entries
    to the loop (Cached Upsample Refine and HiStream Sampler) build it. In a process whose torch.distributed world
    has a sequence-parallel group (registered with histream_core.parallel.use_sequence_parallel_group, yunchang's
    Ulysses group, or HISTREAM_SEQUENCE_PARALLEL=world), e.g. a multi-GPU worker, the run is sharded over it."""
    patcher = plan.patcher
    return HiStreamPipeline(host_model.causal_model(patcher, plan.conditionings), plan.config,
                            device=patcher.load_device, parallel=parallel_from_environment())


def run_plan(plan: RunPlan, decoder=None, preview=None, previewer=None) -> torch.Tensor:
    """Load with room for the caches (and the decoders), build the pipeline and run the chunk loop; returns the
    whole video latent [B, 16, T, h, w] in the model's (normalised) latent space. `decoder`: the VAE's streaming
    decode (the IMAGE output); `preview`: a host sampler callback (step, x0, x, total_steps) for the per-step
    previews, else the pack's own; `previewer`: the preview TAE's streaming decode."""
    cfg = plan.config
    load_with_room_for_caches(plan, decoder, previewer)
    pipeline = build_pipeline(plan)
    log.info("HiStream: %d chunks, %d steps, caches %.2f GiB", cfg.num_chunks,
             cfg.steps.total_steps(cfg.num_chunks), pipeline.cache_nbytes(plan.control) / 2**30)
    return torch.cat(run_chunk_loop(pipeline, plan, decoder, preview, previewer), dim=2)


def load_with_room_for_caches(plan: RunPlan, decoder=None, previewer=None) -> None:
    """ComfyUI's model management makes room for the weights and the run's caches (and the decoders' decode); then
    the preflight refuses a run that still does not fit, before any of its buffers exists."""
    cfg, reserve = plan.config, 0
    vaes = [d.vae for d in (decoder, previewer) if d is not None]
    if not vaes:
        host_model.load_for_sampling(plan.patcher, plan.device_bytes)
    else:
        reserve = sum(stream_decode.decode_reserve_bytes(v, cfg.batch_size, cfg.latent_size, cfg.chunk_frames)
                      for v in vaes)
        stream_decode.load_with_vae(plan.patcher, *vaes, extra_bytes=plan.device_bytes, decode_bytes=reserve)
    host_model.check_room_for_run(plan.patcher, plan.wan, cfg, plan.device_bytes + reserve,
                                  output_bytes(cfg, decoded=decoder is not None))


def keep_finished_chunks(plan: RunPlan, chunks: list[torch.Tensor], decoder) -> str:
    """After a Stop or an error: save the finished chunks (and their decoded frames) where stock LoadLatent can read
    them, after the prefix where the run has one (so the file is this run's output so far); returns a sentence for
    the message ('' when nothing was finished)."""
    cfg = plan.config
    done = len(chunks) - (plan.prefix is not None)  # the prefix is no finished chunk
    if done <= 0:
        return ""
    frames = None if decoder is None or decoder.video is None else decoder.video[:, :decoder.written]
    try:
        path = partial_save.save_partial(host_model.to_raw_latent(plan.patcher, torch.cat(chunks, dim=2)),
                                         done, cfg.num_chunks, frames)
    except Exception as exc:  # noqa: BLE001 - a failed save must not hide the run's own error
        log.error("HiStream: could not save the finished chunks: %s", exc)
        return ""
    log.warning("HiStream: stopped after %d of %d chunks; the finished chunks were saved to %s (copy it to ComfyUI's "
                "input folder to load it with Load Latent)", done, cfg.num_chunks, path)
    return f". The {done} finished chunk(s) of {cfg.num_chunks} were saved to {path}"


def with_note(exc: Exception, note: str) -> Exception:
    """The same error with a sentence appended (a plain RuntimeError where its type takes other arguments)."""
    try:
        return type(exc)(f"{exc}{note}")
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{exc}{note}")


def run_chunk_loop(pipeline: HiStreamPipeline, plan: RunPlan, decoder, preview=None,
                   previewer=None) -> list[torch.Tensor]:
    """The chunk loop with progress, previews, Stop and (with a VAE) each chunk decoded before the next one starts;
    with a `previewer` (a preview TAE) each chunk's preview is its frames, shown before the final decode; the
    caches, the decoders' state and the host's cache are released however it ends."""
    patcher, cfg = plan.patcher, plan.config
    progress = host_model.ProgressReporter(patcher, cfg.steps.total_steps(cfg.num_chunks), preview)
    text, chunks = plan.text.to(patcher.load_device), []
    stream = pipeline.stream(text.context, seed=plan.seed, callback=progress, control=plan.control,
                             negative=text.negative, prefix_latent=plan.prefix)
    try:
        for chunk in stream:  # chunk k is decoded (and previewed) before chunk k+1's first step
            chunks.append(chunk.latent)
            raw = None if decoder is None and previewer is None else host_model.to_raw_latent(patcher, chunk.latent)
            if previewer is not None:
                progress.chunk_done(chunk.latent, previewer.decode(raw))
            frames = None if decoder is None else decoder.decode(raw)
            if previewer is None:
                progress.chunk_done(chunk.latent, frames)
    except BaseException as exc:  # Stop (a BaseException on newer hosts), out of memory, a non-finite step
        kept = keep_finished_chunks(plan, chunks, decoder)
        if host_model.is_out_of_memory(exc):
            raise MemoryError(f"HiStream ran out of memory on {patcher.load_device} "
                              f"({pipeline.cache_nbytes(plan.control) / 2**30:.1f} GiB of KV cache planned): lower "
                              f"window_chunks, batch_size or the resolution, {host_model.MEMORY_FIXES}{kept}") from exc
        if kept and not host_model.is_interrupt(exc) and isinstance(exc, Exception):
            raise with_note(exc, kept) from exc
        raise
    finally:
        stream.close()
        for d in (decoder, previewer):
            if d is not None:
                d.release()
        pipeline.release()
        host_model.free_memory_after_run()
        log.info("HiStream: released the KV caches")
    return chunks
