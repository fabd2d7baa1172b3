"""Typed configs: the Wan2.1 DiT shape (`WanConfig`) and a HiStream generation plan (`HiStreamConfig`).

Field names of `WanConfig` are Wan2.1's own, so a config can be read off a checkpoint and compared with the
official `config.json`. `HiStreamConfig` validates everything a user can type and names the nearest valid value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .schedule import STEP_PRESETS, StepPlan

VAE_STRIDE_T = 4  # pixel frames per latent frame (after the first)
VAE_STRIDE_S = 8  # pixels per latent cell
ROPE_TABLE_FRAMES = 1024  # Self-Forcing's absolute RoPE table length (latent frames)
TRAINING_SIZE = (832, 480)  # width, height the public Self-Forcing weights were trained at


def latent_frames_of(pixel_frames: int) -> int:
    """Latent frames of a 1 + 4k pixel-frame video (Wan's VAE: the first frame alone, then 4 per latent frame)."""
    return 1 + (pixel_frames - 1) // VAE_STRIDE_T


def pixel_frames_of(latent_frames: int) -> int:
    """Pixel frames decoded from `latent_frames` latent frames (0 from none)."""
    return 1 + VAE_STRIDE_T * (latent_frames - 1) if latent_frames > 0 else 0


class ConfigError(ValueError):
    """A user-facing configuration error; the message names the fix."""


@dataclass(frozen=True)
class WanConfig:
    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    in_dim: int = 16
    out_dim: int = 16
    num_heads: int = 12
    num_layers: int = 30
    patch_size: tuple[int, int, int] = (1, 2, 2)
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ConfigError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim {self.head_dim} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_axes(self) -> tuple[int, int, int]:
        """Per-axis RoPE widths (t, h, w): 44/42/42 for head_dim 128, as in Wan2.1."""
        d = self.head_dim
        return d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)

    def kv_bytes_per_token(self, bytes_per_elem: int = 2) -> int:
        """Self-attention K+V bytes one token costs in the cache, over all layers."""
        return 2 * self.num_layers * self.dim * bytes_per_elem

    @classmethod
    def preset(cls, name: str) -> WanConfig:
        try:
            return WAN_PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown Wan preset {name!r}; choose one of {sorted(WAN_PRESETS)}") from None


WAN_PRESETS = {
    "1.3B": WanConfig(),
    "14B": WanConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    # loadable by ComfyUI: its detector fixes num_heads = dim // 128, freq_dim 256 and text_dim 4096
    "tiny": WanConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2),
    # the smallest model for exactness tests (not loadable by ComfyUI: 2 heads of 32)
    "micro": WanConfig(dim=64, ffn_dim=128, freq_dim=32, text_dim=32, num_heads=2, num_layers=2),
}

POSITION_MODES = ("cache_relative", "absolute")
UPSAMPLE_METHODS = ("nearest-exact", "bilinear", "bicubic", "area", "nearest")
DOWNSAMPLE_METHODS = ("area", "bilinear", "bicubic", "nearest-exact")
CACHE_UPDATES = ("clean_pass", "last_step")
# how x0 goes to the next σ: "renoise" = fresh noise (Self-Forcing's few-step sampler, for distilled weights);
# "euler" = reuse the predicted noise (the deterministic flow/DDIM step, for models trained by flow matching only)
SAMPLERS = ("renoise", "euler")
# KV cache storage: "default" = the model's compute dtype (bf16/fp16; the reference); "fp8_e4m3fn" = e4m3 with a
# float32 scale per token and head (histream_core/kv_quant.py), about half the memory
CACHE_DTYPES = ("default", "fp8_e4m3fn")


def _nearest_valid(value: int, ok, limit: int = 4096) -> tuple[int, int]:
    lo = value
    while lo > 0 and not ok(lo) and value - lo < limit:
        lo -= 1
    hi = value
    while not ok(hi) and hi - value < limit:
        hi += 1
    return lo, hi


@dataclass(frozen=True)
class HiStreamConfig:
    """One generation: the video, the chunk plan (temporal), the resolutions (spatial) and the steps (timestep)."""

    width: int = 1920
    height: int = 1088
    num_frames: int = 81  # pixel frames, 1 + 4k
    batch_size: int = 1
    chunk_frames: int = 3  # latent frames per chunk
    anchor_frames: int | None = None  # latent frames kept forever; None = the first chunk
    window_chunks: int | None = 1  # most recent chunks kept besides the anchor; None = unbounded
    low_res_scale: float = 0.5
    steps: StepPlan = field(default_factory=lambda: StepPlan.preset("histream"))
    upsample_method: str = "bilinear"
    downsample_method: str = "area"
    position_mode: str = "cache_relative"
    rope_ntk_scale: float = 1.0  # >1 stretches spatial RoPE (NTK-style); 1 = plain positions
    cache_update: str = "clean_pass"  # clean_pass: extra t=0 forward (Self-Forcing); last_step: reuse final step K/V
    sampler: str = "renoise"  # see SAMPLERS
    # classifier-free guidance: v = v_neg + g (v_pos - v_neg); 1 = off (Self-Forcing's distilled weights need 1)
    guidance_scale: float = 1.0
    cache_dtype: str = "default"  # see CACHE_DTYPES
    # latent frames of a clean prefix (a start image, or frames of an earlier video: prefix.py) at the start of the
    # output; 0 = none. The prefix is the anchor (RoPE positions 0..k-1) and chunking starts after it.
    prefix_frames: int = 0

    def __post_init__(self):
        self.validate()

    # ---- derived sizes -------------------------------------------------------------------------------------
    @property
    def latent_frames(self) -> int:
        return latent_frames_of(self.num_frames)

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.height // VAE_STRIDE_S, self.width // VAE_STRIDE_S

    @property
    def low_latent_size(self) -> tuple[int, int]:
        h, w = self.latent_size
        return round(h * self.low_res_scale), round(w * self.low_res_scale)

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    @property
    def model_batch(self) -> int:
        """Rows the model runs per forward (and the caches hold): the videos, twice with guidance (+ negative)."""
        return self.batch_size * (2 if self.guided else 1)

    @property
    def anchor(self) -> int:
        if self.prefix_frames:  # the prefix is the anchor (anchor_frames does not apply)
            return self.prefix_frames
        a = self.chunk_frames if self.anchor_frames is None else self.anchor_frames
        return min(a, self.latent_frames)

    @property
    def uses_low_res(self) -> bool:
        return any(self.steps.for_chunk(k).n_low > 0 for k in range(self.num_chunks))

    @property
    def uses_high_res(self) -> bool:
        return any(self.steps.for_chunk(k).n_high > 0 for k in range(self.num_chunks))

    @property
    def chunks(self) -> list[tuple[int, int]]:
        """(first latent frame, frame count) per generated chunk, after the prefix; the last one may be shorter."""
        out, start = [], self.prefix_frames
        while start < self.latent_frames:
            n = min(self.chunk_frames, self.latent_frames - start)
            out.append((start, n))
            start += n
        return out

    @property
    def num_chunks(self) -> int:
        return math.ceil((self.latent_frames - self.prefix_frames) / self.chunk_frames)

    def latent_shape(self, low: bool = False) -> tuple[int, int, int, int, int]:
        h, w = self.low_latent_size if low else self.latent_size
        return self.batch_size, 16, self.latent_frames, h, w

    def with_(self, **changes) -> HiStreamConfig:
        return replace(self, **changes)

    # ---- validation ----------------------------------------------------------------------------------------
    def validate(self) -> None:
        if not isinstance(self.steps, StepPlan):
            raise ConfigError("steps must be a StepPlan (see histream_core.schedule)")
        for name in ("width", "height", "num_frames", "batch_size", "chunk_frames"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not 0 < self.low_res_scale <= 1 or abs(self.low_res_scale * 16 - round(self.low_res_scale * 16)) > 1e-9:
            raise ConfigError(f"low_res_scale must be a multiple of 1/16 in (0, 1] (e.g. 0.5, 0.625, 0.75), "
                              f"got {self.low_res_scale}")
        if (self.num_frames - 1) % VAE_STRIDE_T:
            lo = self.num_frames - (self.num_frames - 1) % VAE_STRIDE_T
            raise ConfigError(f"num_frames must be 1 + 4k (the Wan VAE packs 4 frames per latent frame): "
                              f"{self.num_frames} is not; use {lo} or {lo + VAE_STRIDE_T}")
        for name, side in (("width", self.width), ("height", self.height)):
            if not self._side_ok(side):
                lo, hi = _nearest_valid(side, self._side_ok)
                low = f" and at low-res scale {self.low_res_scale}" if self.uses_low_res else ""
                use = f"use {lo} or {hi}" if lo > 0 else f"use {hi}"  # 0 is no size
                raise ConfigError(f"{name} {side} does not fit: sides must be multiples of {self.side_multiple} "
                                  f"(whole 2x2 patches of 8x VAE cells at full res{low}); {use}")
        if not isinstance(self.prefix_frames, int) or self.prefix_frames < 0:
            raise ConfigError(f"prefix_frames must be a whole number >= 0 (0 = no prefix), got {self.prefix_frames!r}")
        if self.prefix_frames >= self.latent_frames:
            raise ConfigError(f"a prefix of {self.prefix_frames} latent frames leaves nothing to generate in "
                              f"{self.latent_frames} latent frames ({self.num_frames} frames): make the video "
                              f"longer than the prefix (at least {pixel_frames_of(self.prefix_frames + 1)} frames) "
                              f"or take fewer prefix frames")
        if self.anchor_frames is not None and self.anchor_frames < 0:
            raise ConfigError(f"anchor_frames must be >= 0, got {self.anchor_frames}")
        if self.window_chunks is not None and self.window_chunks < 0:
            raise ConfigError(f"window_chunks must be >= 0 (or None for unbounded), got {self.window_chunks}")
        for name, allowed in (("upsample_method", UPSAMPLE_METHODS), ("downsample_method", DOWNSAMPLE_METHODS),
                              ("position_mode", POSITION_MODES), ("cache_update", CACHE_UPDATES),
                              ("sampler", SAMPLERS), ("cache_dtype", CACHE_DTYPES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} {getattr(self, name)!r} is unknown; choose one of {list(allowed)}")
        if not (isinstance(self.guidance_scale, (int, float)) and math.isfinite(self.guidance_scale)
                and self.guidance_scale > 0):
            raise ConfigError(f"guidance_scale must be a positive number (1 = no guidance), got {self.guidance_scale!r}")
        if self.rope_ntk_scale < 1:
            raise ConfigError(f"rope_ntk_scale must be >= 1 (1 = off), got {self.rope_ntk_scale}")
        if self.position_mode == "absolute" and self.latent_frames > ROPE_TABLE_FRAMES:
            raise ConfigError(f"position_mode 'absolute' covers {ROPE_TABLE_FRAMES} latent frames "
                              f"({pixel_frames_of(ROPE_TABLE_FRAMES)} pixel frames); this video has "
                              f"{self.latent_frames}: use position_mode 'cache_relative' for longer videos")

    @property
    def side_multiple(self) -> int:
        m = 16  # low_res_scale = k/16 makes 256 always valid
        while not self._side_ok(m) and m < 256:
            m += 16
        return m

    def _side_ok(self, side: int) -> bool:
        if side <= 0 or side % 16:
            return False
        if not self.uses_low_res:
            return True
        low = side * self.low_res_scale
        return abs(low - round(low)) < 1e-9 and round(low) % 16 == 0

    # ---- presets --------------------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> HiStreamConfig:
        """self_forcing (all steps at full res, unbounded cache), histream or histream_plus (schedule.STEP_PRESETS)."""
        if name not in STEP_PRESETS:
            raise ConfigError(f"unknown HiStream preset {name!r}; choose one of {', '.join(STEP_PRESETS)}")
        base = dict(steps=StepPlan.preset(name))
        if name == "self_forcing":
            base["window_chunks"] = None
        base.update(overrides)
        return cls(**base)
