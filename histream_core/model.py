"""Causal Wan2.1 DiT: the full-sequence forward (bidirectional or block-masked) and the chunk forward against a
KV cache. The math only *calls* Wan-named submodules (`block.self_attn.q(x)`, never `F.linear(x, q.weight)`), so
it runs unchanged over a host's module tree whose layers cast fp8 weights, stream them, or apply LoRA.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .attention import attention, check_backend
from .cache import KVCache, TextCache
from .config import WanConfig
from .layers import build_wan_modules
from .rope import Rope3D, apply_rope
from .vace import VACE_SUBMODULES, VaceInput, VaceStream, build_vace_modules, vace_text_cache

WAN_SUBMODULES = ("patch_embedding", "text_embedding", "time_embedding", "time_projection", "blocks", "head")
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan2.1's timestep embedding: [cos(t·ω), sin(t·ω)] with ω_i = 10000^(-i/half), computed in float32."""
    half = dim // 2
    t = t.float()
    omega = torch.pow(10000.0, -torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = torch.outer(t, omega)
    return torch.cat([ang.cos(), ang.sin()], dim=1)


def frame_mask_to_tokens(frame_mask: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    return frame_mask.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)


class CausalWanModel(nn.Module):
    """Wan2.1 T2V DiT with Wan2.1's parameter names. `state_dict()` keys equal the official checkpoint's."""

    def __init__(self, config: WanConfig, device=None, dtype=None, modules: dict[str, nn.Module] | None = None,
                 compute_dtype: torch.dtype | None = None, rope_ntk_scale: float = 1.0,
                 vace_layers: int | None = None, attention_backend: str | None = None):
        """`vace_layers` builds that many (random) VACE blocks too; with `modules`, VACE comes from the dict.
        `attention_backend` (attention.BACKENDS) is used by every attention call of this model and its caches;
        None follows the process default (attention.set_backend, else HISTREAM_ATTENTION)."""
        super().__init__()
        self.config = config
        mods = build_wan_modules(config, device, dtype) if modules is None else dict(modules)
        if modules is None and vace_layers:
            mods.update(build_vace_modules(config, vace_layers, device=device, dtype=dtype))
        for name in WAN_SUBMODULES:
            if name not in mods:
                raise ValueError(f"module tree lacks Wan2.1 submodule {name!r}")
            setattr(self, name, mods[name])
        if all(mods.get(n) is not None for n in VACE_SUBMODULES):  # optional: Wan2.1-VACE control blocks
            for name in VACE_SUBMODULES:
                setattr(self, name, mods[name])
        self._compute_dtype = compute_dtype
        self._device: torch.device | None = None
        self.attention_backend = check_backend(attention_backend)
        self.rope = Rope3D(config.rope_axes, ntk_scale=rope_ntk_scale)

    @classmethod
    def over(cls, tree: nn.Module, config: WanConfig, compute_dtype: torch.dtype | None = None,
             attention_backend: str | None = None) -> CausalWanModel:
        """Run over an existing Wan-named module tree (shared, not copied): e.g. ComfyUI's `diffusion_model`."""
        names = WAN_SUBMODULES + tuple(n for n in VACE_SUBMODULES if getattr(tree, n, None) is not None)
        return cls(config, modules={n: getattr(tree, n) for n in names}, compute_dtype=compute_dtype,
                   attention_backend=attention_backend)

    @property
    def has_vace(self) -> bool:
        return getattr(self, "vace_blocks", None) is not None

    # ---- dtypes/devices --------------------------------------------------------------------------------------
    @property
    def compute_dtype(self) -> torch.dtype:
        if self._compute_dtype is not None:
            return self._compute_dtype
        w = self.text_embedding[0].weight
        return w.dtype if w.dtype in _FLOAT_DTYPES else torch.bfloat16

    @compute_dtype.setter
    def compute_dtype(self, value):
        self._compute_dtype = value

    @property
    def device(self) -> torch.device:
        """The run's compute device: the one set by whoever loads the weights (a host may keep them offloaded and
        cast them per op, so a weight's `.device` is not where the run computes), else the weights' own."""
        return self._device if self._device is not None else self.text_embedding[0].weight.device

    @device.setter
    def device(self, value):
        self._device = None if value is None else torch.device(value)

    # ---- shared pieces ---------------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """[B, C, T, H, W] latents → tokens [B, T·h·w, dim] and the patch grid (T, h, w)."""
        w = self.patch_embedding.weight
        in_dtype = w.dtype if w.dtype in _FLOAT_DTYPES else torch.float32
        tok = self.patch_embedding(x.to(in_dtype)).to(self.compute_dtype)
        grid = tuple(tok.shape[2:])
        return tok.flatten(2).transpose(1, 2), grid

    def time_vectors(self, t: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps [B] or [B, T] → (e [B, T', dim] for the head, e0 [B, T', 6, dim] for the blocks)."""
        t = t.reshape(batch, -1)
        emb = sinusoidal_embedding(self.config.freq_dim, t.flatten()).to(self.compute_dtype)
        e = self.time_embedding(emb).unflatten(0, t.shape)
        e0 = self.time_projection(e).unflatten(-1, (6, self.config.dim))
        return e, e0

    def text_cache(self, context: torch.Tensor, blocks=None, repeat: int = 1) -> TextCache:
        """Cross-attention K/V of the text for every block of `blocks` (default: the main blocks), computed once per
        prompt; `repeat` tiles them along the batch (VACE entries stacked on the batch axis)."""
        ctx = self.text_embedding(context.to(self.compute_dtype))
        b, n = ctx.shape[:2]
        hd = (self.config.num_heads, self.config.head_dim)
        kv = []
        for blk in self.blocks if blocks is None else blocks:
            ca = blk.cross_attn
            k, v = ca.norm_k(ca.k(ctx)).view(b, n, *hd), ca.v(ctx).view(b, n, *hd)
            kv.append((k, v) if repeat == 1 else (k.repeat(repeat, 1, 1, 1), v.repeat(repeat, 1, 1, 1)))
        return TextCache(kv)

    def _block(self, i: int, x: torch.Tensor, e0: torch.Tensor, frames: int, text: TextCache, self_attend,
               blk: nn.Module | None = None):
        """Main block i, or (with `blk`) any Wan-shaped block whose text K/V and self-attention are at index i."""
        blk = self.blocks[i] if blk is None else blk
        b, s, d = x.shape
        m = blk.modulation.to(device=x.device, dtype=x.dtype).unsqueeze(0) + e0  # [B, T', 6, dim]
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (m[:, :, j].unsqueeze(2) for j in range(6))

        def per_frame(z):
            return z.view(b, frames, s // frames, d)

        # self-attention (adaLN-modulated input; gate on the residual)
        h = (per_frame(blk.norm1(x)) * (1 + scale_sa) + shift_sa).view(b, s, d)
        sa = blk.self_attn
        hd = (self.config.num_heads, self.config.head_dim)
        q = sa.norm_q(sa.q(h)).view(b, s, *hd)
        k = sa.norm_k(sa.k(h)).view(b, s, *hd)
        v = sa.v(h).view(b, s, *hd)
        y = sa.o(self_attend(i, q, k, v).flatten(2))
        x = (per_frame(x) + per_frame(y) * gate_sa).view(b, s, d)
        # cross-attention to the cached text K/V
        ca = blk.cross_attn
        cq = ca.norm_q(ca.q(blk.norm3(x))).view(b, s, *hd)
        tk, tv = text[i]
        x = x + ca.o(attention(cq, tk.expand(b, -1, -1, -1), tv.expand(b, -1, -1, -1),
                              backend=self.attention_backend).flatten(2))
        # feed-forward
        h = (per_frame(blk.norm2(x)) * (1 + scale_ff) + shift_ff).view(b, s, d)
        return (per_frame(x) + per_frame(blk.ffn(h)) * gate_ff).view(b, s, d)

    def _head(self, x: torch.Tensor, e: torch.Tensor, grid, parallel=None) -> torch.Tensor:
        hd = self.head
        b, s, d = x.shape
        m = hd.modulation.to(device=x.device, dtype=x.dtype).unsqueeze(0) + e.unsqueeze(2)  # [B, T', 2, dim]
        shift, scale = m[:, :, 0].unsqueeze(2), m[:, :, 1].unsqueeze(2)
        y = hd.head((hd.norm(x).view(b, grid[0], -1, d) * (1 + scale) + shift).view(b, s, d))
        if parallel is not None:  # token shards → every token, on every rank (parallel.py)
            y = parallel.gather_tokens(y, grid[0], grid[1] * grid[2])
        return self.unpatchify(y, grid)

    def unpatchify(self, y: torch.Tensor, grid) -> torch.Tensor:
        pt, ph, pw = self.config.patch_size
        f, h, w = grid
        b = y.shape[0]
        y = y.view(b, f, h, w, pt, ph, pw, self.config.out_dim)
        return y.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, self.config.out_dim, f * pt, h * ph, w * pw)

    def _run(self, x, t, text: TextCache, self_attend, vace: VaceInput | None = None, vace_attend=None,
             parallel=None) -> torch.Tensor:
        """`parallel` (parallel.SequenceParallel): every block runs on this rank's token shard; `self_attend` then
        exchanges tokens for heads itself."""
        b = x.shape[0]
        tok, grid = self.embed(x)
        if parallel is not None:
            tok = parallel.shard_tokens(tok, grid[0])
        e, e0 = self.time_vectors(t, b)
        if e0.shape[1] not in (1, grid[0]):
            raise ValueError(f"per-frame timesteps must have {grid[0]} entries, got {e0.shape[1]}")
        stream = None
        if vace is not None:  # without control the VACE blocks are skipped entirely
            if not self.has_vace:
                raise ValueError("VACE control was given but the model has no VACE blocks: load a VACE module")
            stream = VaceStream(self, vace, tok, e0, grid[0], vace.text, vace_attend, parallel)
        for i in range(len(self.blocks)):
            tok = self._block(i, tok, e0, grid[0], text, self_attend)
            if stream is not None:
                tok = stream.after_block(i, tok)
        return self._head(tok, e, grid, parallel)

    # ---- the three ways to run -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None, *,
                frame_mask: torch.Tensor | None = None, frame_offset: int = 0,
                text: TextCache | None = None, vace: VaceInput | None = None) -> torch.Tensor:
        """Full-sequence forward. x [B,16,T,H,W]; t [B] (Wan2.1) or [B,T] per-frame; context [B,L,text_dim].

        `frame_mask` [T,T] bool (True = query frame may attend key frame) gives the block-causal training form
        (see `masks.py`); RoPE frame positions start at `frame_offset`. Returns the flow prediction v = ε - x0.
        `vace` adds VACE control (the VACE blocks see the same mask and positions): the reference form.
        """
        text = text if text is not None else self.text_cache(context)
        if vace is not None and vace.text is None:
            vace = replace(vace, text=vace_text_cache(self, context, len(vace.strengths), x.shape[0]))
        f, h, w = x.shape[2] // self.config.patch_size[0], x.shape[3] // self.config.patch_size[1], \
            x.shape[4] // self.config.patch_size[2]
        cos, sin = self.rope.angles(range(frame_offset, frame_offset + f), h, w, x.device)
        mask = None if frame_mask is None else frame_mask_to_tokens(frame_mask.to(x.device), h * w)

        def full_attend(_i, q, k, v):
            return attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, mask, backend=self.attention_backend)

        return self._run(x, t, text, full_attend, vace, full_attend)

    def forward_chunk(self, x: torch.Tensor, t: torch.Tensor, text: TextCache, cache: KVCache,
                      frame_start: int, vace: VaceInput | None = None) -> torch.Tensor:
        """One chunk against the cache: its K/V are written into the cache's current slot (overwritten by every
        step; `cache.commit()` keeps the last one), queries attend anchor + window + the chunk itself.
        `vace` (with `text` and `cache` set) runs the VACE blocks the same way against their own cache."""
        frames = x.shape[2] // self.config.patch_size[0]
        cache.begin(frame_start, frames)
        sp = getattr(cache, "parallel", None)  # a head-sharded cache (parallel.py): tokens sharded, exchanged
        attend = cache.attend if sp is None else sp.attend_with(cache)
        if vace is None:
            return self._run(x, t, text, attend, parallel=sp)
        if vace.text is None or vace.cache is None:
            raise ValueError("chunked VACE needs the VACE text K/V (vace_text_cache) and a VACE KV cache")
        if getattr(vace.cache, "parallel", None) is not sp:
            raise ValueError("the VACE cache and the main cache must be sharded over the same group (or neither)")
        vace.cache.begin(frame_start, frames)
        vace_attend = vace.cache.attend if sp is None else sp.attend_with(vace.cache)
        return self._run(x, t, text, attend, vace, vace_attend, parallel=sp)

    # ---- helpers ---------------------------------------------------------------------------------------------
    def new_cache(self, *, batch: int, grid_hw: tuple[int, int], anchor_frames: int, window_chunks: int | None,
                  chunk_frames: int, total_frames: int, position_mode: str, device=None, dtype=None,
                  name: str = "cache", rope: Rope3D | None = None, rotate_on_read: bool = False,
                  vace_entries: int = 0, parallel=None) -> KVCache:
        """The main blocks' cache or, with `vace_entries` > 0, the VACE blocks' (entries stacked on the batch).
        With `parallel` (parallel.SequenceParallel) the cache holds this rank's heads only."""
        cfg = self.config
        heads = cfg.num_heads if parallel is None else parallel.local_heads(cfg.num_heads)
        layers = len(self.vace_blocks) if vace_entries else cfg.num_layers
        batch = batch * vace_entries if vace_entries else batch
        return KVCache(num_layers=layers, batch=batch, heads=heads, head_dim=cfg.head_dim,
                       grid_hw=grid_hw, anchor_frames=anchor_frames, window_chunks=window_chunks,
                       chunk_frames=chunk_frames, total_frames=total_frames, rope=rope or self.rope,
                       position_mode=position_mode, device=device or self.device,
                       dtype=dtype or self.compute_dtype, name=name, rotate_on_read=rotate_on_read,
                       read_dtype=self.compute_dtype, attention_backend=self.attention_backend, parallel=parallel)
