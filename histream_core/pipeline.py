"""The HiStream chunk loop (paper §3): per chunk, low-res steps against the low-res cache → latent upsample →
re-noise → high-res steps against the high-res cache → t=0 passes writing both caches → window eviction.

Flow matching: the model predicts v = ε - x0, so x0 = x_t - σ·v; between steps x0 is re-noised to the next σ:
x = (1-σ')·x0 + σ'·ε with fresh noise ε (sampler "renoise", Self-Forcing's few-step sampler) or with the predicted
noise ε̂ = (x - (1-σ)·x0)/σ (sampler "euler": x' = x + (σ'-σ)·v, the deterministic flow ODE step). The DRC
hand-over changes the latent size, so it always draws fresh noise at full resolution. With classifier-free
guidance (guidance_scale != 1) every forward runs the positive and negative rows together (guidance.py).

Exactness anchors (tests/test_pipeline.py): with no low-res steps and a window covering the video the loop is plain
Self-Forcing inference, and chunked cached inference equals one block-causal masked forward of the whole sequence.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .cache import KVCache, TextCache
from .config import HiStreamConfig
from .finite import check_input, check_step
from .guidance import paired_context
from .kv_quant import FP8
from .model import CausalWanModel
from .noise import NoiseSource
from .prefix import checked_prefix
from .prompt_schedule import PromptSchedule
from .recache import WindowLatents, switch_prompt
from .resample import resize_latent
from .rope import Rope3D
from .step import StepInfo, predict_x0
from .vace import VaceControl, VaceInput, vace_text_cache

log = logging.getLogger("histream")


@dataclass
class ChunkResult:
    index: int  # the generated chunk's index; -1 for the prefix (prefix.py), yielded first as given
    frame_start: int
    latent: torch.Tensor  # [B, 16, frames, H/8, W/8], float32, model (normalised) latent space

    @property
    def is_prefix(self) -> bool:
        return self.index < 0


@dataclass
class Resolution:
    """One of Dual-Resolution Caching's two resolutions and what the loop keeps for it during a run: the main
    blocks' KV cache, the VACE blocks' KV cache (only with control) and this chunk's resized control context."""

    name: str  # "low" | "high" (StepInfo.stage)
    latent_size: tuple[int, int]  # (h, w) of the latent at this resolution
    rope_ntk_scale: float
    cache: KVCache | None = None
    vace_cache: KVCache | None = None
    vace_context: tuple[int, torch.Tensor] | None = None  # (chunk's first latent frame, control context)

    @property
    def low(self) -> bool:
        return self.name == "low"


class HiStreamPipeline:
    def __init__(self, model: CausalWanModel, config: HiStreamConfig, device=None, cache_dtype=None,
                 rotate_on_read: bool = False, output_device="cpu", parallel=None):
        """`rotate_on_read` selects the slow reference path of cache_relative positions (see cache.py);
        finished chunks are moved to `output_device` as they complete, so nothing grows on the GPU.
        `parallel` (parallel.SequenceParallel, e.g. `parallel_from_environment()`): this process is one rank of a
        sequence-parallel group; its caches hold its share of the heads and every rank yields the whole video.
        None = one process."""
        self.model, self.config = model, config
        self.parallel = parallel
        self.device = torch.device(device) if device is not None else model.device
        self.cache_dtype = cache_dtype or (FP8 if config.cache_dtype == "fp8_e4m3fn" else model.compute_dtype)
        self.rotate_on_read, self.output_device = rotate_on_read, output_device
        # NTK scaling is a property of the grid size: the half-size grid needs proportionally less stretch
        self.low = Resolution("low", config.low_latent_size, max(1.0, config.rope_ntk_scale * config.low_res_scale))
        self.high = Resolution("high", config.latent_size, config.rope_ntk_scale)
        if parallel is not None:  # refuse a group that does not divide the heads or outnumbers a frame's tokens
            tokens = {f"{r.name}-res": math.prod(self._grid_hw(r)) for r in self.resolutions()}
            parallel.check(model.config.num_heads, tokens)
        self.control: VaceControl | None = None  # set by stream() for the run; VACE caches exist only then
        self._vace_text: TextCache | None = None
        self.window_latents: WindowLatents | None = None  # kept only while a prompt schedule has switches
        self._steps_done = 0  # denoising steps of this run so far (StepInfo.global_step)

    @property
    def low_cache(self) -> KVCache | None:
        return self.low.cache

    @property
    def high_cache(self) -> KVCache | None:
        return self.high.cache

    def resolutions(self) -> list[Resolution]:
        """The resolutions this config runs steps at (and keeps a cache for), low first."""
        cfg = self.config
        return [r for r, used in ((self.low, cfg.uses_low_res), (self.high, cfg.uses_high_res)) if used]

    # ---- caches ----------------------------------------------------------------------------------------------
    def _grid_hw(self, res: Resolution) -> tuple[int, int]:
        """The patch-token grid of one latent frame at the resolution."""
        (h, w), p = res.latent_size, self.model.config.patch_size
        return h // p[1], w // p[2]

    def _new_cache(self, res: Resolution, vace_entries: int = 0) -> KVCache:
        cfg = self.config
        return self.model.new_cache(
            rope=Rope3D(self.model.config.rope_axes, ntk_scale=res.rope_ntk_scale),
            rotate_on_read=self.rotate_on_read, batch=cfg.model_batch, grid_hw=self._grid_hw(res),
            anchor_frames=cfg.anchor, window_chunks=cfg.window_chunks, chunk_frames=cfg.chunk_frames,
            total_frames=cfg.latent_frames, position_mode=cfg.position_mode, device=self.device,
            dtype=self.cache_dtype, name=f"{res.name}-res" + (" VACE cache" if vace_entries else " cache"),
            vace_entries=vace_entries, parallel=self.parallel)

    def plan_caches(self) -> list[KVCache]:
        """The caches this config needs (not yet allocated), low-res first; the VACE blocks' caches (same layout as
        the main ones) while a run with control is on."""
        used = self.resolutions()
        for res in used:
            res.cache = res.cache or self._new_cache(res)
        if self.control is not None:
            for res in used:
                res.vace_cache = res.vace_cache or self._new_cache(res, vace_entries=self.control.entries)
        return [r.cache for r in used] + [r.vace_cache for r in used if r.vace_cache is not None]

    def cache_nbytes(self, control: VaceControl | None = None) -> int:
        """Bytes of all KV caches a run needs: the main ones plus, with `control` (default: the running one), the
        VACE blocks' - the same number before and during the run."""
        total = sum(c.planned_nbytes() for c in self.plan_caches())
        if control is not None and self.control is None:
            total += sum(self._new_cache(r, control.entries).planned_nbytes() for r in self.resolutions())
        return total

    def allocate(self) -> None:
        caches = self.plan_caches()
        for c in caches:
            c.allocate()
        log.info("HiStream KV caches: %s", ", ".join(f"{c.name} {c.nbytes / 2**30:.2f} GiB "
                                                     f"({c.capacity_frames} frames)" for c in caches))

    def release(self) -> None:
        for res in (self.low, self.high):
            for c in (res.cache, res.vace_cache):
                if c is not None:
                    c.release()
            res.vace_cache = res.vace_context = None
        self._vace_text = None

    # ---- generation ------------------------------------------------------------------------------------------
    def generate(self, context: torch.Tensor | PromptSchedule, seed: int = 0,
                 callback: Callable[[StepInfo], None] | None = None, noise: Callable | None = None,
                 control: VaceControl | None = None, negative: torch.Tensor | None = None,
                 prefix_latent: torch.Tensor | None = None) -> torch.Tensor:
        """The whole video latent [B, 16, T, H/8, W/8] (float32, normalised latent space), the prefix first."""
        chunks = [c.latent for c in self.stream(context, seed, callback, noise, control, negative, prefix_latent)]
        return torch.cat(chunks, dim=2)

    @torch.no_grad()
    def stream(self, context: torch.Tensor | PromptSchedule, seed: int = 0,
               callback: Callable[[StepInfo], None] | None = None, noise: Callable | None = None,
               control: VaceControl | None = None, negative: torch.Tensor | None = None,
               prefix_latent: torch.Tensor | None = None) -> Iterator[ChunkResult]:
        """Yield each finished chunk as soon as it is done. Caches are allocated here and always released.
        `context`: one text context [B, L, text_dim], or a PromptSchedule switching prompts at given chunks.
        `control`: VACE control (WanVaceToVideo's conditioning); None skips the VACE blocks entirely.
        `negative`: the negative text context, used (and required) when config.guidance_scale != 1.
        `prefix_latent`: the clean prefix [1 or B, 16, config.prefix_frames, H/8, W/8] (prefix.py), required when
        config.prefix_frames > 0; it is written into every cache first and yielded first (index -1)."""
        cfg = self.config
        prefix = checked_prefix(prefix_latent, cfg, self.model.config.in_dim)
        noise = noise or NoiseSource(seed, cfg.batch_size)
        prompts = PromptSchedule.of(context).checked(cfg.num_chunks, self._check_context)
        if cfg.guided:
            if negative is None:
                raise ValueError(f"guidance_scale {cfg.guidance_scale:g} needs a negative prompt (an empty prompt "
                                 f"works): connect one, or set the guidance scale to 1")
            neg = self._check_context(negative)
            prompts = prompts.map(lambda c: paired_context(c, neg.to(c.device), cfg.batch_size))
        switches = prompts.switches()
        if switches and control is not None:  # the VACE caches would need their own re-cache at each switch
            raise ValueError("a prompt schedule that switches prompts cannot be combined with VACE control yet: "
                             "use one prompt with WanVaceToVideo, or schedule prompts without control")
        self._check_control(control)
        self.control = control
        try:
            self.allocate()  # inside the try: an OOM on the second buffer still releases the first
            first = prompts.entries[0][1].to(self.device)
            text = self.model.text_cache(first)
            if control is not None:
                self._vace_text = vace_text_cache(self.model, first, control.entries, cfg.model_batch)
            self.window_latents = WindowLatents(cfg.window_chunks) if switches else None
            self._steps_done = 0
            if prefix is not None:
                self._write_prefix(prefix, text, callback)
                yield ChunkResult(-1, 0, self._to_output(prefix))
            for k, (start, frames) in enumerate(cfg.chunks):
                if k in switches:
                    text = switch_prompt(self, k, switches[k], callback)
                yield ChunkResult(k, start, self._to_output(self._chunk(k, start, frames, text, noise, callback)))
        finally:
            self.window_latents = None
            self.release()
            self.control = None

    def _to_output(self, latent: torch.Tensor) -> torch.Tensor:
        """A finished latent on `output_device` (kept where it is with None, or on meta: FLOP counting)."""
        keep = self.output_device is None or latent.device.type == "meta"
        return latent if keep else latent.to(self.output_device)

    def _check_context(self, context: torch.Tensor) -> torch.Tensor:
        b, td = self.config.batch_size, self.model.config.text_dim
        if context.ndim != 3 or context.shape[-1] != td:
            raise ValueError(f"text context must be [batch, tokens, {td}], got {tuple(context.shape)}: "
                             f"use the Wan text encoder (umT5-XXL) output")
        if context.shape[0] not in (1, b):
            raise ValueError(f"text context batch {context.shape[0]} does not match batch_size {b} (or 1)")
        if context.shape[1] == 0:
            raise ValueError("the text context has 0 tokens: encode a prompt (an empty prompt still gives tokens)")
        return check_input(context, "the text context", "re-encode the prompt (fp16 text encoders can overflow: "
                                                         "use bf16/fp32)")

    def _check_control(self, control: VaceControl | None) -> None:
        if control is None:
            return
        if not self.model.has_vace:
            raise ValueError("the conditioning carries VACE control (WanVaceToVideo) but the model has no VACE "
                             "blocks: choose a VACE module in Load HiStream Model's vace_model input")
        cfg = self.config
        control.validate(cfg.batch_size, cfg.latent_frames, cfg.latent_size)

    def _vace_input(self, res: Resolution, start: int, frames: int) -> VaceInput | None:
        """This chunk's control at the resolution (the 96-channel context, resized once per chunk)."""
        if self.control is None:
            return None
        if res.vace_context is None or res.vace_context[0] != start:
            cfg = self.config
            ctx = self.control.chunk_context(start, frames, res.latent_size, cfg.batch_size, cfg.downsample_method)
            if cfg.guided:  # entry-major [entries·B] → [entries·2B]: each entry's rows for both prompts
                ctx = ctx.unflatten(0, (self.control.entries, cfg.batch_size)).repeat(1, 2, 1, 1, 1, 1).flatten(0, 1)
            res.vace_context = (start, ctx.to(self.device))
        return VaceInput(res.vace_context[1], self.control.strengths, self._vace_text, res.vace_cache)

    def _commit(self, res: Resolution) -> None:
        res.cache.commit()
        if res.vace_cache is not None:
            res.vace_cache.commit()

    def _predict(self, x, sigma, text, res: Resolution, start) -> torch.Tensor:
        vace = self._vace_input(res, start, x.shape[2])
        return predict_x0(self.model, x, sigma, text, res.cache, start, self.device, self.config.guidance_scale,
                          vace)

    def _draw(self, noise, frames, res: Resolution) -> torch.Tensor:
        return noise((self.model.config.in_dim, frames, *res.latent_size)).to(self.device)

    def _next_noise(self, x, x0, sigma, noise, frames, res: Resolution) -> torch.Tensor:
        if self.config.sampler == "euler" and sigma > 0:
            return (x - (1 - sigma) * x0) / sigma  # ε̂: what the last step's input was made of
        return self._draw(noise, frames, res)

    def _chunk(self, k, start, frames, text: TextCache, noise, callback) -> torch.Tensor:
        cfg = self.config
        sched = cfg.steps.for_chunk(k)
        sig = sched.sigmas
        total = cfg.steps.total_steps(cfg.num_chunks)
        x0 = x0_low = None
        x = sig[0] * self._draw(noise, frames, self.low if sched.n_low > 0 else self.high)
        for i, s in enumerate(sig):
            res = self.low if i < sched.n_low else self.high
            if i == sched.n_low and i > 0:  # DRC hand-over: upsample the low-res x0, re-noise at full res
                x0_low = x0
                x = (1 - s) * resize_latent(x0, cfg.latent_size, cfg.upsample_method) + s * self._draw(
                    noise, frames, self.high)
            elif i > 0:
                x = (1 - s) * x0 + s * self._next_noise(x, x0, sig[i - 1], noise, frames, res)
            x0 = self._predict(x, s, text, res, start)
            check_step(x0, k, i, res.name, self.model.compute_dtype)  # one scalar sync per step
            self._steps_done += 1
            if callback:
                callback(StepInfo("denoise", k, i, self._steps_done, total, res.name, s, x, x0))
        if sched.n_high == 0:  # all steps at low res: naive upsample for the output
            x0_low = x0
            x0 = resize_latent(x0, cfg.latent_size, cfg.upsample_method)
        if k < cfg.num_chunks - 1:  # the last chunk is never attended to: no cache write
            self._update_caches(k, start, sched, x0, x0_low, text, callback)
        return x0

    def _write_prefix(self, prefix: torch.Tensor, text: TextCache, callback) -> None:
        """The prefix at σ = 0 into every cache, at t = 0, before any chunk: the full-res latent into the high-res
        cache, its downsample (the method the loop shrinks finished chunks with) into the low-res one. Each cache
        is empty, so the prefix sits at frame positions 0..k-1 and fills the anchor (config.anchor = k)."""
        cfg = self.config
        full = prefix.to(self.device)
        for res in self.resolutions():
            clean = resize_latent(full, cfg.low_latent_size, cfg.downsample_method) if res.low else full
            self._write_clean(-1, 0, clean, text, res, callback)
            self._commit(res)

    def _update_caches(self, k, start, sched, x0, x0_low, text, callback) -> None:
        """Write the finished chunk into every cache (paper §3.2: both resolutions keep their own cache)."""
        cfg = self.config
        for res in (self.low, self.high):
            if res.cache is None:
                continue
            # last_step reuses K/V only where the chunk's *final* step ran (else they would be of a noisy input)
            finished_here = (sched.n_high == 0) if res.low else (sched.n_high > 0)
            write = not (cfg.cache_update == "last_step" and finished_here)
            if write or self.window_latents is not None:
                if res.low:
                    clean = x0_low if sched.n_high == 0 else resize_latent(x0, cfg.low_latent_size,
                                                                             cfg.downsample_method)
                else:
                    clean = x0
                if self.window_latents is not None:  # a later prompt switch re-encodes the window from these
                    self.window_latents.keep(res.name, start, clean)
            if write:
                self._write_clean(k, start, clean, text, res, callback)
            self._commit(res)

    def _write_clean(self, k, start, clean, text, res: Resolution, callback) -> None:
        """The t = 0 pass over chunk `k`'s clean latent (-1: the prefix): its K/V land in the cache (committed by
        the caller)."""
        self._predict(clean, 0.0, text, res, start)
        if callback:
            callback(StepInfo("cache", k, -1, -1, -1, res.name, 0.0, clean, None))
