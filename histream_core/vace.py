"""VACE control for the causal Wan DiT: a second, causal token stream whose hints are added to the main blocks.

The math (Wan2.1-VACE, as the host runs it): the 96-channel control context (16 inactive + 16 reactive latent
channels + a 64-channel mask) is patch-embedded by `vace_patch_embedding`; VACE block 0 adds `before_proj(c)` to
the main stream's embedded tokens; every VACE block is an ordinary Wan block (its own weights) followed by
`after_proj`, whose output, times the entry's strength, is added to the output of main block
`range(0, num_layers, num_layers // vace_layers)[j]`. The VACE blocks see the same timesteps (per frame), the same
text and the same RoPE positions as the main blocks. Causally, each VACE block also attends only to the anchor +
window + current chunk: it gets its own KV cache, written by the same t=0 pass as the main cache.

The 64 mask channels are an 8x8 pixel mask packed into channels (channel = 8·row + column inside a latent cell),
so resizing them means unpacking to pixels, resizing, repacking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVCache, TextCache
from .config import WanConfig
from .layers import WanBlock
from .resample import resize_latent

LATENT_CHANNELS = 32  # inactive + reactive control latents (16 each)
MASK_PACK = 8  # VAE spatial stride: a latent cell covers 8x8 pixels
MASK_CHANNELS = MASK_PACK * MASK_PACK
VACE_IN_DIM = LATENT_CHANNELS + MASK_CHANNELS  # 96
VACE_SUBMODULES = ("vace_blocks", "vace_patch_embedding")


# ---- parameter containers (Wan2.1-VACE names) ----------------------------------------------------------------
class VaceBlock(WanBlock):
    """A Wan block plus `after_proj` (the hint) and, for block 0 only, `before_proj` (mixes in the main tokens)."""

    def __init__(self, cfg: WanConfig, block_id: int, **kw):
        super().__init__(cfg, **kw)
        if block_id == 0:
            self.before_proj = nn.Linear(cfg.dim, cfg.dim, **kw)
        self.after_proj = nn.Linear(cfg.dim, cfg.dim, **kw)


def build_vace_modules(cfg: WanConfig, vace_layers: int, in_dim: int = VACE_IN_DIM, device=None, dtype=None,
                       ) -> dict[str, nn.Module]:
    kw = {"device": device, "dtype": dtype}
    blocks = nn.ModuleList(VaceBlock(cfg, i, **kw) for i in range(vace_layers))
    if device is None or torch.device(device).type != "meta":
        with torch.no_grad():
            for blk in blocks:
                blk.modulation.normal_(0, cfg.dim ** -0.5)
    embed = nn.Conv3d(in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size, **kw)
    return {"vace_blocks": blocks, "vace_patch_embedding": embed}


def vace_layer_map(num_layers: int, vace_layers: int) -> dict[int, int]:
    """Main block index → VACE block index whose hint is added after it (every num_layers // vace_layers)."""
    if not 0 < vace_layers <= num_layers:
        raise ValueError(f"{vace_layers} VACE blocks do not fit a model with {num_layers} blocks: the VACE module "
                         f"belongs to another model size")
    mapping = {layer: j for j, layer in enumerate(range(0, num_layers, num_layers // vace_layers))}
    if len(mapping) != vace_layers:
        raise ValueError(f"{vace_layers} VACE blocks cannot be spread evenly over {num_layers} blocks; the VACE "
                         f"module belongs to another model size")
    return mapping


# ---- the packed 8x8 mask -------------------------------------------------------------------------------------
def unpack_mask(packed: torch.Tensor) -> torch.Tensor:
    """[B, 64, T, H, W] → pixel mask [B, T, 8H, 8W] (channel 8·r + c holds pixel (8y + r, 8x + c))."""
    b, ch, t, h, w = packed.shape
    if ch != MASK_CHANNELS:
        raise ValueError(f"a packed VACE mask has {MASK_CHANNELS} channels, got {ch}")
    x = packed.view(b, MASK_PACK, MASK_PACK, t, h, w).permute(0, 3, 4, 1, 5, 2)  # b t h r w c
    return x.reshape(b, t, h * MASK_PACK, w * MASK_PACK)


def pack_mask(pixels: torch.Tensor) -> torch.Tensor:
    """Pixel mask [B, T, 8H, 8W] → [B, 64, T, H, W] (inverse of `unpack_mask`)."""
    b, t, hp, wp = pixels.shape
    if hp % MASK_PACK or wp % MASK_PACK:
        raise ValueError(f"pixel mask sides {hp}x{wp} must be multiples of {MASK_PACK}")
    h, w = hp // MASK_PACK, wp // MASK_PACK
    x = pixels.reshape(b, t, h, MASK_PACK, w, MASK_PACK).permute(0, 3, 5, 1, 2, 4)  # b r c t h w
    return x.reshape(b, MASK_CHANNELS, t, h, w)


def resize_packed_mask(packed: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a packed mask to the latent grid `size`: unpack, area-resize the pixels, repack. (Bilinear on the
    packed channels would mix unrelated pixels.) Area = the covered fraction of each new pixel; exact for 1/2."""
    if tuple(packed.shape[-2:]) == tuple(size):
        return packed
    pixels = unpack_mask(packed)
    b, t = pixels.shape[:2]
    out = F.interpolate(pixels.float().reshape(b * t, 1, *pixels.shape[2:]),
                        size=(size[0] * MASK_PACK, size[1] * MASK_PACK), mode="area")
    return pack_mask(out.reshape(b, t, *out.shape[2:]).to(packed.dtype))


# ---- the control of a whole video ----------------------------------------------------------------------------
@dataclass
class VaceControl:
    """What stock WanVaceToVideo puts into the conditioning, one list item per control entry (chained nodes):
    `frames` [B|1, 32, T, H, W] in the model's normalised latent space, `masks` [B|1, 64, T, H, W] (packed),
    `strengths` one float each. T and H, W are the video's latent frames and full-resolution latent size."""

    frames: Sequence[torch.Tensor]
    masks: Sequence[torch.Tensor]
    strengths: Sequence[float]

    @property
    def entries(self) -> int:
        return len(self.frames)

    def validate(self, batch: int, latent_frames: int, latent_size: tuple[int, int]) -> None:
        n = len(self.frames)
        if n == 0 or len(self.masks) != n or len(self.strengths) != n:
            raise ValueError(f"VACE control needs one mask and one strength per control video; got {n} videos, "
                             f"{len(self.masks)} masks, {len(self.strengths)} strengths")
        for i, (f, m) in enumerate(zip(self.frames, self.masks)):
            which = f"VACE control {i + 1}" if n > 1 else "the VACE control"
            if f.ndim != 5 or f.shape[1] != LATENT_CHANNELS or m.ndim != 5 or m.shape[1] != MASK_CHANNELS:
                raise ValueError(f"{which}: expected WanVaceToVideo's {LATENT_CHANNELS}-channel latents and "
                                 f"{MASK_CHANNELS}-channel mask, got {tuple(f.shape)} and {tuple(m.shape)}")
            if f.shape[2] == latent_frames + 1 and f.shape[2:] == m.shape[2:]:
                raise ValueError(f"{which} has one latent frame more than the video: WanVaceToVideo's "
                                 f"reference_image is not supported by causal streaming (the chunks would need a "
                                 f"reference prefix the Self-Forcing weights were not trained with); disconnect "
                                 f"reference_image and pass the control video only")
            if f.shape[2] != latent_frames or tuple(f.shape[3:]) != tuple(latent_size) or f.shape[2:] != m.shape[2:]:
                h, w = latent_size
                raise ValueError(f"{which} covers {f.shape[2]} latent frames of {f.shape[3] * 8}x{f.shape[4] * 8} "
                                 f"but the video has {latent_frames} latent frames of {w * 8}x{h * 8}: set "
                                 f"WanVaceToVideo's width, height and length to the Anchor Cache Chunker's")
            if f.shape[0] not in (1, batch) or m.shape[0] not in (1, batch):
                raise ValueError(f"{which} has batch {f.shape[0]}, the video {batch}: use batch 1 or the same")

    def chunk_context(self, frame_start: int, frames: int, size: tuple[int, int], batch: int,
                      method: str = "area") -> torch.Tensor:
        """The 96-channel context of latent frames [frame_start, +frames) at latent size `size`:
        [entries·batch, 96, frames, *size], entries stacked along the batch (entry-major)."""
        out = []
        for f, m in zip(self.frames, self.masks):
            f = resize_latent(f[:, :, frame_start:frame_start + frames].float(), size, method)
            m = resize_packed_mask(m[:, :, frame_start:frame_start + frames].float(), size)
            out.append(torch.cat([f, m], dim=1).expand(batch, -1, -1, -1, -1))
        return torch.cat(out, dim=0)


# ---- one forward's VACE input and stream ---------------------------------------------------------------------
@dataclass
class VaceInput:
    """The VACE part of one model call: `context` [entries·B, 96, T, H, W] for this call's frames and size,
    `strengths` per entry, `text` the VACE blocks' text K/V (`vace_text_cache`; computed when None) and, for
    `forward_chunk`, the VACE blocks' own KV cache."""

    context: torch.Tensor
    strengths: Sequence[float]
    text: TextCache | None = None
    cache: KVCache | None = None


def vace_text_cache(model, context: torch.Tensor, entries: int, batch: int | None = None) -> TextCache:
    """Cross-attention K/V of the text for every VACE block, for the entries stacked on the batch (a context of
    batch 1 is first expanded to `batch`)."""
    if batch is not None:
        context = context.expand(batch, -1, -1)
    return model.text_cache(context, blocks=model.vace_blocks, repeat=entries)


class VaceStream:
    """Runs the VACE blocks alongside one main forward: call `after_block(i, x)` after every main block."""

    def __init__(self, model, vace: VaceInput, x_tokens: torch.Tensor, e0: torch.Tensor, frames: int,
                 text: TextCache, self_attend, parallel=None):
        self.model, self.frames, self.text, self.self_attend = model, frames, text, self_attend
        self.strengths = [float(s) for s in vace.strengths]
        n = len(self.strengths)
        b = x_tokens.shape[0]
        if vace.context.shape[0] != n * b:
            raise ValueError(f"VACE context batch {vace.context.shape[0]} is not entries ({n}) x batch ({b})")
        self.batch = b
        self.layer_map = vace_layer_map(len(model.blocks), len(model.vace_blocks))
        pe = model.vace_patch_embedding
        w = pe.weight
        in_dtype = w.dtype if w.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64) \
            else torch.float32
        c = pe(vace.context.to(device=x_tokens.device, dtype=in_dtype)).to(x_tokens.dtype)
        self.c = c.flatten(2).transpose(1, 2)  # [n·B, L, dim]
        if parallel is not None:  # this rank's token shard, like the main stream's (parallel.py)
            self.c = parallel.shard_tokens(self.c, frames)
        self.x_in = x_tokens.repeat(n, 1, 1)  # the main stream's embedded tokens, for before_proj
        self.e0 = e0.repeat(n, *([1] * (e0.ndim - 1)))

    def after_block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        j = self.layer_map.get(i)
        if j is None:
            return x
        blk = self.model.vace_blocks[j]
        c = self.c
        if j == 0:
            c = blk.before_proj(c) + self.x_in
        c = self.model._block(j, c, self.e0, self.frames, self.text, self.self_attend, blk=blk)
        self.c = c
        hints = blk.after_proj(c).unflatten(0, (len(self.strengths), self.batch))
        for hint, s in zip(hints, self.strengths):
            x = x + hint * s
        return x
