"""Anchor + sliding-window self-attention KV cache for one resolution (paper §3.3): the anchor (by default the
first chunk) is kept forever, besides it the last `window_chunks` chunks; the oldest window chunk is evicted.

Buffer layout per layer, in frames: [anchor (A) | window entries, oldest → newest | current chunk]. The committed
part is always a contiguous prefix, so attention reads a view (no concatenation). Buffers are allocated once at
their final size (anchor + window·chunk + chunk frames) and written in place; evicting the oldest window entry
moves the newer entries down by its length, so memory never depends on the video length.

Two RoPE position modes for the cached keys:
- `absolute` (Self-Forcing): keys are stored rotated at their absolute frame index.
- `cache_relative`: keys sit at their place in the buffer, anchor first; queries sit right after the cache.
  Positions stay bounded, so any length works. Until the first eviction the place in the buffer *is* the
  absolute index, so both modes agree exactly. Fast path: keys are stored rotated at their buffer place and,
  when eviction moves an entry down by L frames, rotated by -L on the temporal axis once (rotations compose:
  R(p-L) = R(-L)·R(p)); an entry moves at most `window_chunks` times before it is evicted itself, so rounding
  cannot accumulate. Reference path (`rotate_on_read=True`): keys stored un-rotated and the whole cache rotated
  by place at every read.

fp8 storage (`dtype=torch.float8_e4m3fn`, see kv_quant.py): K and V are stored as e4m3 with a float32 scale per
token and head and dequantised (in float32, cast to `read_dtype`, the model's compute dtype) into one read buffer
per cache (one layer's K and V at full length), allocated with the cache and reused by every layer and chunk. The current chunk attends its own
K/V at full precision; only what is cached is rounded, once. In `cache_relative` mode keys are stored un-rotated
and rotated by place as they are dequantised (the rotation rides along with the dequantisation pass that every
read makes anyway), so an entry that moves down at eviction is only copied: its fp8 bits never change. The
alternative, rotated fp8 keys re-rotated at eviction (`requantize_on_evict=True`), rounds an entry again at every
move; it is kept for the measurement in bench/RESULTS.md (error growing with the number of moves).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from . import kv_quant
from .attention import attention
from .rope import Rope3D, apply_rope


def capacity_frames(anchor_frames: int, window_chunks: int | None, chunk_frames: int, total_frames: int) -> int:
    """Frames a cache holds at its final size: anchor + window chunks + the current chunk (None = unbounded)."""
    if window_chunks is None:
        return total_frames
    return min(total_frames, anchor_frames + (window_chunks + 1) * chunk_frames)


@dataclass
class _Entry:
    frame_start: int  # absolute latent frame index
    frames: int


class KVCache:
    def __init__(self, *, num_layers: int, batch: int, heads: int, head_dim: int, grid_hw: tuple[int, int],
                 anchor_frames: int, window_chunks: int | None, chunk_frames: int, total_frames: int,
                 rope: Rope3D, position_mode: str = "cache_relative", device=None, dtype=torch.float32,
                 name: str = "cache", rotate_on_read: bool = False, requantize_on_evict: bool = False,
                 read_dtype: torch.dtype = torch.float32, attention_backend: str | None = None, parallel=None):
        self.name = name
        self.parallel = parallel  # parallel.SequenceParallel: `heads` are this rank's share; None = one process
        self.attention_backend = attention_backend  # None: the process default (attention.py)
        self.num_layers, self.batch, self.heads, self.head_dim = num_layers, batch, heads, head_dim
        self.grid_hw = grid_hw
        self.tokens_per_frame = grid_hw[0] * grid_hw[1]
        self.anchor_frames = anchor_frames
        self.window_chunks = window_chunks
        self.chunk_frames = chunk_frames
        self.capacity_frames = capacity_frames(anchor_frames, window_chunks, chunk_frames, total_frames)
        self.rope, self.position_mode = rope, position_mode
        self.fp8 = kv_quant.is_fp8(dtype)
        if self.fp8 and not requantize_on_evict:
            rotate_on_read = True  # un-rotated fp8 keys: eviction copies bits, never rounds again
        self.rotate_on_read = rotate_on_read and position_mode == "cache_relative"
        self.device, self.dtype = device, dtype
        self.read_dtype = read_dtype  # fp8: the queries' (compute) dtype the cache is dequantised to
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.k_scale: torch.Tensor | None = None  # fp8 only: float32 [layers, B, S, heads, 1]
        self.v_scale: torch.Tensor | None = None
        self._read: tuple[torch.Tensor, torch.Tensor] | None = None  # fp8 only: dequantised K, V of one layer
        self.reset()

    # ---- lifetime --------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return (self.num_layers, self.batch, self.capacity_frames * self.tokens_per_frame, self.heads, self.head_dim)

    def _stored(self) -> tuple[torch.Tensor, ...]:
        """Every buffer that holds cached values, all indexed [layer, batch, token, ...]."""
        return (self.k, self.v, self.k_scale, self.v_scale) if self.fp8 else (self.k, self.v)

    @property
    def nbytes(self) -> int:
        """Bytes held by K and V (and their fp8 scales); 0 when not allocated. The fp8 read buffer is apart:
        `read_nbytes`."""
        if self.k is None:
            return 0
        return sum(b.numel() * b.element_size() for b in self._stored())

    @property
    def read_nbytes(self) -> int:
        return 0 if self._read is None else sum(b.numel() * b.element_size() for b in self._read)

    def planned_nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        per_elem = torch.empty((), dtype=self.dtype).element_size()
        if self.fp8:  # one float32 scale per head_dim values
            scale = torch.empty((), dtype=kv_quant.SCALE_DTYPE).element_size()
            return 2 * n * per_elem + 2 * (n // self.head_dim) * scale
        return 2 * n * per_elem

    def planned_read_nbytes(self, read_dtype: torch.dtype) -> int:
        """The fp8 read buffer: one layer's K and V at full length in the compute dtype (0 without fp8)."""
        if not self.fp8:
            return 0
        n = 1
        for s in self.shape[1:]:
            n *= s
        return 2 * n * torch.empty((), dtype=read_dtype).element_size()

    def allocate(self) -> KVCache:
        if self.fp8 and torch.device(self.device or "cpu").type == "mps":
            raise ValueError(f"{self.name}: the fp8 KV cache needs float8 tensors, which Apple's mps device does "
                             f"not have: set cache_dtype to default on the Anchor Cache Chunker")
        if self.k is None:
            self.k = torch.empty(self.shape, device=self.device, dtype=self.dtype)
            self.v = torch.empty(self.shape, device=self.device, dtype=self.dtype)
            if self.fp8:
                scale_shape = (*self.shape[:-1], 1)
                self.k_scale = torch.empty(scale_shape, device=self.device, dtype=kv_quant.SCALE_DTYPE)
                self.v_scale = torch.empty(scale_shape, device=self.device, dtype=kv_quant.SCALE_DTYPE)
                self._read = tuple(torch.empty(self.shape[1:], device=self.device, dtype=self.read_dtype)
                                   for _ in range(2))
        self.reset()
        return self

    def release(self) -> None:
        self.k = self.v = self.k_scale = self.v_scale = self._read = None
        self.reset()

    def reset(self) -> None:
        """Forget the contents (keeps the buffers)."""
        self.anchor_filled = 0
        self.entries: list[_Entry] = []
        self.current: _Entry | None = None

    # ---- bookkeeping -----------------------------------------------------------------------------------------
    @property
    def committed_frames(self) -> int:
        return self.anchor_filled + sum(e.frames for e in self.entries)

    def committed_positions(self) -> list[int]:
        """Absolute frame index of every committed buffer frame, in buffer order."""
        pos = list(range(self.anchor_filled))
        for e in self.entries:
            pos.extend(range(e.frame_start, e.frame_start + e.frames))
        return pos

    def begin(self, frame_start: int, frames: int) -> None:
        """Open the current chunk; evict the oldest window entries so the window keeps `window_chunks` of them."""
        if self.k is None:
            raise RuntimeError(f"{self.name}: allocate() the cache before use")
        if self.current is not None and self.current.frame_start == frame_start:
            return  # same chunk, another step
        self.trim_window()
        if self.committed_frames + frames > self.capacity_frames:
            raise RuntimeError(f"{self.name}: chunk of {frames} frames does not fit "
                               f"({self.committed_frames}/{self.capacity_frames} frames used)")
        self.current = _Entry(frame_start, frames)

    def commit(self) -> None:
        """The current chunk's K/V (last written) become part of the cache: anchor first, then a window entry."""
        cur = self.current
        if cur is None:
            raise RuntimeError(f"{self.name}: nothing to commit")
        to_anchor = max(0, min(cur.frames, self.anchor_frames - self.anchor_filled))
        if to_anchor and self.entries:
            raise RuntimeError(f"{self.name}: anchor frames must come before window entries")
        self.anchor_filled += to_anchor
        if cur.frames > to_anchor:
            self.entries.append(_Entry(cur.frame_start + to_anchor, cur.frames - to_anchor))
        self.current = None

    def trim_window(self) -> None:
        """Evict the oldest window entries until `window_chunks` remain (begin() does this for the next chunk)."""
        if self.window_chunks is not None:
            while len(self.entries) > self.window_chunks:
                self._evict_oldest()

    def rewrite_window(self) -> Iterator[tuple[int, int]]:
        """Re-open the committed window entries one at a time, oldest first, so that a forward (begin/attend with
        the yielded frame_start) writes each again in place; used to re-encode the window under a new prompt.

        While entry j is open the cache looks exactly as when j was appended after the anchor and entries < j:
        its queries sit at its place (absolute index, or buffer place in cache_relative mode), attend the anchor,
        the entries before it (already rewritten) and itself, and `attend` overwrites only its own slot. The
        anchor and the buffers' size are never touched. Yields (frame_start, frames) of each entry."""
        if self.current is not None:
            raise RuntimeError(f"{self.name}: commit the current chunk before rewriting the window")
        self.trim_window()
        kept, self.entries = self.entries, []
        try:
            for e in kept:
                self.current = _Entry(e.frame_start, e.frames)
                yield e.frame_start, e.frames
                self.entries.append(e)
                self.current = None
        finally:
            self.entries, self.current = kept, None

    def _evict_oldest(self) -> None:
        old = self.entries.pop(0)
        t, a = self.tokens_per_frame, self.anchor_filled
        shift, src, end = old.frames * t, (a + old.frames) * t, (a + old.frames + sum(
            e.frames for e in self.entries)) * t
        # move newer entries down in pieces no longer than the gap, so source and target never overlap
        dst = a * t
        while src < end:
            n = min(shift, end - src)
            for buf in self._stored():
                buf[:, :, dst:dst + n].copy_(buf[:, :, src:src + n])
            src, dst = src + n, dst + n
        if self.position_mode == "cache_relative" and not self.rotate_on_read and dst > a * t:
            cos, sin = self.rope.angles([-old.frames], 1, 1, self.k.device)  # temporal shift only
            for layer in range(self.num_layers):
                if not self.fp8:
                    region = self.k[layer, :, a * t:dst]
                    region.copy_(apply_rope(region, cos, sin))
                    continue
                for lo, hi in self._pieces(a * t, dst):  # rotated fp8 keys: dequantise, rotate, round again
                    kq, ks = self.k[layer, :, lo:hi], self.k_scale[layer, :, lo:hi]
                    kv_quant.store(kq, ks, apply_rope(kv_quant.dequantize(kq, ks, torch.float32), cos, sin))

    # ---- attention -------------------------------------------------------------------------------------------
    def query_positions(self) -> list[int]:
        cur = self.current
        if self.position_mode == "absolute":
            return list(range(cur.frame_start, cur.frame_start + cur.frames))
        c = self.committed_frames
        return list(range(c, c + cur.frames))

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Write the current chunk's k, v for `layer` (given un-rotated), then attend q over cache + chunk."""
        h, w = self.grid_hw
        start = self.committed_frames * self.tokens_per_frame
        end = start + k.shape[1]
        q_cos, q_sin = self.rope.angles(self.query_positions(), h, w, q.device)
        q = apply_rope(q, q_cos, q_sin)
        if self.fp8:
            return self._attend_fp8(layer, q, k, v, start, end, q_cos, q_sin)
        if not self.rotate_on_read:
            self.k[layer, :, start:end] = apply_rope(k, q_cos, q_sin)
            self.v[layer, :, start:end] = v
            return attention(q, self.k[layer, :, :end], self.v[layer, :, :end], backend=self.attention_backend)
        self.k[layer, :, start:end] = k
        self.v[layer, :, start:end] = v
        k_cos, k_sin = self.rope.angles(range(end // self.tokens_per_frame), h, w, q.device)
        return attention(q, apply_rope(self.k[layer, :, :end], k_cos, k_sin), self.v[layer, :, :end],
                         backend=self.attention_backend)

    # ---- fp8 storage -----------------------------------------------------------------------------------------
    def _pieces(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """[lo, hi) in token ranges of at most one chunk, so float32 temporaries stay at a chunk's size."""
        step = self.chunk_frames * self.tokens_per_frame
        for a in range(lo, hi, step):
            yield a, min(hi, a + step)

    def _read_buffers(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._read[0].dtype != like.dtype or self._read[0].device != like.device:  # queries not in read_dtype
            self.read_dtype = like.dtype
            self._read = tuple(torch.empty(self.shape[1:], device=like.device, dtype=like.dtype) for _ in range(2))
        return self._read

    def _attend_fp8(self, layer, q, k, v, start, end, q_cos, q_sin) -> torch.Tensor:
        k_rot = apply_rope(k, q_cos, q_sin)
        kv_quant.store(self.k[layer, :, start:end], self.k_scale[layer, :, start:end],
                       k if self.rotate_on_read else k_rot)
        kv_quant.store(self.v[layer, :, start:end], self.v_scale[layer, :, start:end], v)
        rk, rv = self._read_buffers(q)
        if start:
            h, w = self.grid_hw
            t = self.tokens_per_frame
            cos = sin = None
            if self.rotate_on_read:
                cos, sin = self.rope.angles(range(start // t), h, w, q.device)
            for lo, hi in self._pieces(0, start):
                kf = kv_quant.dequantize(self.k[layer, :, lo:hi], self.k_scale[layer, :, lo:hi], torch.float32)
                rk[:, lo:hi] = kf if cos is None else apply_rope(kf, cos[lo:hi], sin[lo:hi])
                rv[:, lo:hi] = kv_quant.dequantize(self.v[layer, :, lo:hi], self.v_scale[layer, :, lo:hi], rv.dtype)
        rk[:, start:end] = k_rot  # the current chunk attends its own K/V unrounded
        rv[:, start:end] = v
        return attention(q, rk[:, :end], rv[:, :end], backend=self.attention_backend)


class TextCache:
    """Cross-attention K/V of the text, computed once per prompt for every layer."""

    def __init__(self, kv: list[tuple[torch.Tensor, torch.Tensor]]):
        self.kv = kv

    def __getitem__(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.kv[layer]

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.kv)
