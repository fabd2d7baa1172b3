"""`Bench`: device, model, context, timing and memory shared by the parts of one process."""

from __future__ import annotations

import contextlib
import gc
import os
import time
from pathlib import Path

import torch

from histream_core import CausalWanModel, HiStreamConfig, HiStreamPipeline, WanConfig
from histream_core import attention as attn

from .common import GIB, SCALES, TEXT_LEN, pixel_frames


class Bench:
    """Device, model and context shared by every part of one process; results land in `self.results`."""

    def __init__(self, scale: str, device: str, dtype: torch.dtype, out: Path, log, *, seed: int = 0,
                 inject_oom: dict | None = None, comfyui: str | None = None, deadline_s: float | None = None,
                 sf_long_max_s: float | None = None, wan_repeats: int = 1):
        self.scale_name, self.scale = scale, SCALES[scale]
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.dtype, self.out, self.log, self.seed = dtype, out, log, seed
        self.inject_oom = inject_oom or {}
        self.comfyui, self.deadline_s, self.sf_long_max_s = comfyui, deadline_s, sf_long_max_s
        self.wan_repeats = wan_repeats
        self.t_start = time.perf_counter()
        self.results: dict = {}
        self._model: CausalWanModel | None = None
        self._ctx: torch.Tensor | None = None
        self.model_bytes = 0
        self.warm_backends: set[str] = set()

    # ---- timing and memory --------------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def mem_reset(self) -> int | None:
        """Start a configuration's memory record; returns what is allocated now (weights, context)."""
        if not self.cuda:
            return None
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        return torch.cuda.memory_allocated(self.device)

    def mem_now(self) -> dict:
        if self.cuda:
            return {"allocated": torch.cuda.memory_allocated(self.device),
                    "peak_allocated": torch.cuda.max_memory_allocated(self.device)}
        return {"rss": rss_bytes()}

    def mem_peaks(self) -> dict:
        if self.cuda:
            return {"peak_allocated_bytes": torch.cuda.max_memory_allocated(self.device),
                    "peak_reserved_bytes": torch.cuda.max_memory_reserved(self.device)}
        return {"peak_allocated_bytes": None, "peak_reserved_bytes": None, "rss_bytes": rss_bytes()}

    def free_memory(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    # ---- model ----------------------------------------------------------------------------------------------------
    @property
    def model(self) -> CausalWanModel:
        if self._model is None:
            t0 = time.perf_counter()
            torch.manual_seed(self.seed)
            wan = WanConfig.preset(self.scale.model)
            # random init straight on the device: on a GPU the 1.3B init takes well under a second
            self._model = CausalWanModel(wan, device=self.device, dtype=self.dtype).eval().requires_grad_(False)
            self.model_bytes = sum(p.numel() * p.element_size() for p in self._model.parameters())
            g = torch.Generator(self.device).manual_seed(self.seed + 1)
            self._ctx = torch.randn(1, TEXT_LEN, wan.text_dim, generator=g, device=self.device, dtype=self.dtype)
            self.sync()
            self.log(f"model {self.scale.model} ({self.model_bytes / GIB:.2f} GiB {self.dtype}) on {self.device} "
                     f"in {time.perf_counter() - t0:.1f} s")
        return self._model

    @property
    def ctx(self) -> torch.Tensor:
        _ = self.model
        return self._ctx

    def video(self, preset: str, latent_frames: int, **kw) -> HiStreamConfig:
        s = self.scale
        if preset == "self_forcing":
            kw.setdefault("position_mode", "absolute")  # Self-Forcing stores keys rotated; no eviction → same output
        return HiStreamConfig.preset(preset, width=s.width, height=s.height, num_frames=pixel_frames(latent_frames),
                                     chunk_frames=s.chunk, **kw)

    def warmup(self, backend: str = "sdpa") -> None:
        """One short histream stream at the benchmark resolution (both resolutions, cache writes, an eviction) per
        attention backend, so kernel selection and Triton JIT (sageattention) are not charged to chunk 0."""
        if backend in self.warm_backends:
            return
        t0 = time.perf_counter()
        with set_backend(backend):
            for _ in HiStreamPipeline(self.model, self.video("histream", self.scale.warmup)).stream(self.ctx, seed=99):
                pass
        self.sync()
        self.free_memory()
        self.warm_backends.add(backend)
        self.log(f"warm-up stream [{backend}] ({self.scale.warmup} latent frames) {time.perf_counter() - t0:.1f} s")


def rss_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def set_backend(name: str):
    attn.set_backend(name)
    try:
        yield
    finally:
        attn.set_backend("sdpa")

