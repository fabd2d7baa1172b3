"""Sequence parallelism over several processes (Ulysses over heads) with the KV cache sharded by head.

Every rank runs the same chunk loop on the same full latents (noise, schedule, RoPE, prompt switches and the
Dual-Resolution hand-over are computed identically everywhere, so a seed gives the single-process video). Inside
the DiT the tokens are sharded: each rank holds, of every latent frame, its contiguous slice of the frame's
h·w patch tokens (`token_split`), and runs every linear layer, norm, modulation, cross-attention and the head on
those tokens only. Self-attention is the one place that needs all tokens:

    q, k, v [B, F·n_r, H, d]  --all-to-all-->  [B, F·h·w, H/N, d]   (all tokens, this rank's heads)
    attention against this rank's KV cache, which holds heads [r·H/N, (r+1)·H/N) only
    out [B, F·h·w, H/N, d]    --all-to-all-->  [B, F·n_r, H, d]

so only the new chunk's q/k/v/out cross the wire, never the cache, and every cache (anchor + window, both
resolutions, the VACE blocks') costs 1/N per rank. Cross-attention needs no exchange at all: a rank's queries are
its own tokens and the text K/V (all heads, a few hundred tokens) are computed on every rank. The head's output is
gathered once per forward (`gather_tokens`), which is why every rank ends with the full latent.

Why our own SDPA between two all-to-alls and not yunchang's `LongContextAttention` (ring degree 1) or
`UlyssesAttention`: both take q, k and v token-sharded and attend exactly what they exchanged, so a cache would
have to be exchanged with them in every call (the whole-cache design this module avoids); there is no point
between the exchange and the attention where a rank's own head-sharded cache could be read and written. Their
exchange also needs the token count divisible by N, while a frame's tokens need not be (1080p low-res: 2040 per
frame). And `UlyssesAttention` with its torch-math kernel calls the ring kernel with no process group, which rings
K/V over the world group: ranks holding different heads would be mixed. Attention here is the engine's own
(`attention.py`: sageattention or torch SDPA), so nothing extra is installed.

The exchange is `torch.distributed.all_to_all_single` with split sizes (gloo on CPU, NCCL on GPUs: torch 2.13's
gloo implements it, uneven splits included). `ShapeOnlyTransport` moves nothing and lets a `meta`-device run count
the bytes at real sizes. Every exchange books the bytes this rank sends to the others in `sent`.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable

import torch

ENV_FLAG = "HISTREAM_SEQUENCE_PARALLEL"  # "world": every process of the initialised world is one group
_registered = {"group": None}


class DistTransport:
    """The collectives of one torch.distributed process group (None = the world)."""

    def __init__(self, group=None):
        self.group = group

    def all_to_all(self, recv: torch.Tensor, send: torch.Tensor, recv_sizes: list[int], send_sizes: list[int]):
        import torch.distributed as dist

        dist.all_to_all_single(recv, send, recv_sizes, send_sizes, group=self.group)


class ShapeOnlyTransport:
    """Moves nothing: for shape-only (`meta`) runs that count bytes, and for checks made before any exchange."""

    def all_to_all(self, recv, send, recv_sizes, send_sizes):
        return None


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def token_split(tokens: int, ranks: int) -> list[int]:
    """Tokens of one frame per rank: contiguous slices, the first `tokens % ranks` ranks one token more."""
    base, extra = divmod(tokens, ranks)
    return [base + (r < extra) for r in range(ranks)]


class SequenceParallel:
    """This process's place in the sequence-parallel group: rank, size and the exchanges (see the module text)."""

    def __init__(self, rank: int, size: int, transport=None):
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} is outside a group of {size}")
        self.rank, self.size = rank, size
        self.transport = transport if transport is not None else ShapeOnlyTransport()
        self.sent: Counter = Counter()  # bytes this rank sent to other ranks, per exchange kind
        self.calls: Counter = Counter()
        self._heads_ok: int | None = None  # the head count check() last accepted

    @classmethod
    def over(cls, group=None) -> SequenceParallel:
        """The context of this process in an initialised torch.distributed group (None = the world)."""
        import torch.distributed as dist

        return cls(dist.get_rank(group), dist.get_world_size(group), DistTransport(group))

    # ---- what is sharded ---------------------------------------------------------------------------------------
    def check(self, num_heads: int, tokens_per_frame: dict[str, int] | None = None) -> None:
        """Refuse a group size that does not divide the heads, or a grid with fewer tokens per frame than ranks."""
        if num_heads % self.size:
            ok = [d for d in divisors(num_heads) if d > 1]
            raise ValueError(f"{self.size} processes cannot share the model's {num_heads} attention heads (each "
                             f"process keeps the KV cache of H/N heads): launch a number of processes that divides "
                             f"{num_heads}, one of {ok}")
        for name, tokens in (tokens_per_frame or {}).items():
            if tokens < self.size:
                raise ValueError(f"the {name} grid has {tokens} patch tokens per frame, fewer than the {self.size} "
                                 f"processes that share them: use fewer processes or a larger resolution")
        self._heads_ok = num_heads

    def local_heads(self, num_heads: int) -> int:
        if num_heads != self._heads_ok:  # checked once (e.g. by the pipeline), not at every exchange
            self.check(num_heads)
        return num_heads // self.size

    def head_slice(self, num_heads: int) -> slice:
        h = self.local_heads(num_heads)
        return slice(self.rank * h, (self.rank + 1) * h)

    def split(self, tokens_per_frame: int) -> list[int]:
        return token_split(tokens_per_frame, self.size)

    def _bounds(self, tokens_per_frame: int) -> tuple[int, int]:
        sizes = self.split(tokens_per_frame)
        lo = sum(sizes[:self.rank])
        return lo, lo + sizes[self.rank]

    # ---- token shards ------------------------------------------------------------------------------------------
    def shard_tokens(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """[B, F·hw, D] (every token) → [B, F·n_r, D]: this rank's slice of every frame."""
        b, s, d = x.shape
        hw = s // frames
        lo, hi = self._bounds(hw)
        return x.view(b, frames, hw, d)[:, :, lo:hi].reshape(b, frames * (hi - lo), d)

    def gather_tokens(self, y: torch.Tensor, frames: int, tokens_per_frame: int) -> torch.Tensor:
        """[B, F·n_r, D] on every rank → [B, F·hw, D] (every token, frame-major) on every rank."""
        b, _, d = y.shape
        sizes = self.split(tokens_per_frame)
        send = y.contiguous().view(-1).repeat(self.size)  # the same piece to every rank
        recv_sizes = [b * frames * m * d for m in sizes]
        recv = y.new_empty(sum(recv_sizes))
        self._exchange(recv, send, recv_sizes, [y.numel()] * self.size, "gather")
        parts = [t.view(b, frames, m, d) for t, m in zip(recv.split(recv_sizes), sizes)]
        return torch.cat(parts, dim=2).view(b, frames * tokens_per_frame, d)

    # ---- the two all-to-alls of self-attention -----------------------------------------------------------------
    def tokens_to_heads(self, xs, frames: int, tokens_per_frame: int) -> torch.Tensor:
        """P tensors [B, F·n_r, H, d] (e.g. q, k, v; a stacked [P, ...] tensor works too) → [P, B, F·hw, H/N, d]:
        all tokens, this rank's heads, frame-major as the cache and RoPE expect. One collective for all P."""
        n, sizes = self.size, self.split(tokens_per_frame)
        p, (b, _, h, d) = len(xs), xs[0].shape
        hn = self.local_heads(h)
        # one copy into the send layout [N, P, B, F, n_r, H/N, d]: destination rank first
        send = torch.stack([x.reshape(b, frames, sizes[self.rank], n, hn, d).permute(3, 0, 1, 2, 4, 5) for x in xs],
                           dim=1)
        recv_sizes = [p * b * frames * m * hn * d for m in sizes]
        recv = send.new_empty(sum(recv_sizes))
        self._exchange(recv, send.view(-1), recv_sizes, [send.numel() // n] * n, "qkv")
        parts = [t.view(p, b, frames, m, hn, d) for t, m in zip(recv.split(recv_sizes), sizes)]
        return torch.cat(parts, dim=3).view(p, b, frames * tokens_per_frame, hn, d)

    def heads_to_tokens(self, y: torch.Tensor, frames: int) -> torch.Tensor:
        """[B, F·hw, H/N, d] → [B, F·n_r, H, d]: this rank's tokens, every head (inverse of `tokens_to_heads`)."""
        n = self.size
        b, s, hn, d = y.shape
        hw = s // frames
        sizes = self.split(hw)
        mine = sizes[self.rank]
        pieces = y.view(b, frames, hw, hn, d).split(sizes, dim=2)
        send = y.new_empty(y.numel())  # each rank's piece copied once into its slice of the send buffer
        for piece, dst in zip(pieces, send.split([t.numel() for t in pieces])):
            dst.view(piece.shape).copy_(piece)
        recv = y.new_empty(n * b * frames * mine * hn * d)
        self._exchange(recv, send, [b * frames * mine * hn * d] * n, [t.numel() for t in pieces], "out")
        return recv.view(n, b, frames, mine, hn, d).permute(1, 2, 3, 0, 4, 5).reshape(b, frames * mine, n * hn, d)

    def attend_with(self, cache) -> Callable:
        """A `self_attend(layer, q, k, v)` for the model's blocks: exchange, attend over `cache` (this rank's
        heads), exchange back."""
        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            frames, hw = cache.current.frames, cache.tokens_per_frame
            hq, hk, hv = self.tokens_to_heads((q, k, v), frames, hw)
            return self.heads_to_tokens(cache.attend(layer, hq, hk, hv), frames)
        return attend

    def _exchange(self, recv, send, recv_sizes, send_sizes, kind: str) -> None:
        self.sent[kind] += sum(s for r, s in enumerate(send_sizes) if r != self.rank) * send.element_size()
        self.calls[kind] += 1
        self.transport.all_to_all(recv, send, recv_sizes, send_sizes)


# ---- the group a host or a launcher built ------------------------------------------------------------------------
def use_sequence_parallel_group(group) -> None:
    """Register the process group HiStream shards over (built by the caller: torchrun script, Ray/xDiT worker);
    None forgets it."""
    _registered["group"] = group


def _yunchang_group():
    """yunchang's Ulysses group when a worker has already set it up (never imported here)."""
    glob = sys.modules.get("yunchang.globals")
    pg = getattr(glob, "PROCESS_GROUP", None)
    if pg is None or getattr(pg, "ULYSSES_PG", None) is None:
        return None
    import torch.distributed as dist

    ring = getattr(pg, "RING_PG", None)
    if ring is not None and dist.get_world_size(ring) > 1:
        raise ValueError(f"the worker's sequence-parallel group has ring degree {dist.get_world_size(ring)}: "
                         f"HiStream shards heads only (Ulysses); set the ring degree to 1")
    return pg.ULYSSES_PG


def parallel_from_environment() -> SequenceParallel | None:
    """The sequence-parallel context when torch.distributed is initialised with a sequence-parallel group: the one
    registered with `use_sequence_parallel_group`, else yunchang's Ulysses group (ring degree 1), else the world
    when HISTREAM_SEQUENCE_PARALLEL=world. None (single process) otherwise or for a group of one."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = _registered["group"]
    if group is None:
        group = _yunchang_group()
    if group is None and os.environ.get(ENV_FLAG, "").strip().lower() == "world":
        group = dist.group.WORLD
    if group is None or dist.get_world_size(group) == 1:
        return None
    return SequenceParallel.over(group)
