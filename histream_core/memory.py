"""Memory planning: what a run needs on the device besides the weights (KV caches, text cache, activations)."""

from __future__ import annotations

from .cache import capacity_frames
from .config import HiStreamConfig, WanConfig


def cache_bytes(model: WanConfig, hi: HiStreamConfig, bytes_per_elem: int = 2) -> dict[str, int]:
    """Self-attention KV bytes of each cache at its final (fixed) size (guidance doubles the rows)."""
    out = {}
    frames = capacity_frames(hi.anchor, hi.window_chunks, hi.chunk_frames, hi.latent_frames)
    p = model.patch_size
    for name, low in (("low", True), ("high", False)):
        if (hi.uses_low_res if low else hi.uses_high_res):
            h, w = hi.low_latent_size if low else hi.latent_size
            tokens = frames * (h // p[1]) * (w // p[2])
            out[name] = hi.model_batch * tokens * model.kv_bytes_per_token(bytes_per_elem)
    return out


def activation_bytes(model: WanConfig, hi: HiStreamConfig, bytes_per_elem: int = 2) -> int:
    """A generous bound on one chunk forward's transient memory at full resolution (FFN hidden, q/k/v,
    float32 RoPE temporaries, attention output, one layer's cache slice for eviction re-rotation)."""
    p = model.patch_size
    h, w = hi.latent_size
    tokens = hi.model_batch * hi.chunk_frames * (h // p[1]) * (w // p[2])
    per_token = (model.ffn_dim + 8 * model.dim) * bytes_per_elem + 4 * model.dim * 4
    cached = cache_bytes(model, hi, bytes_per_elem).get("high", 0) // max(1, 2 * model.num_layers)
    return tokens * per_token + cached


def run_bytes(model: WanConfig, hi: HiStreamConfig, bytes_per_elem: int = 2) -> int:
    text = hi.model_batch * model.text_len * model.dim * 2 * model.num_layers * bytes_per_elem
    return sum(cache_bytes(model, hi, bytes_per_elem).values()) + activation_bytes(model, hi, bytes_per_elem) + text


def vace_cache_bytes(model: WanConfig, hi: HiStreamConfig, vace_layers: int, entries: int,
                     bytes_per_elem: int = 2) -> int:
    """The VACE blocks' own KV caches (same layout as the main caches, one stream per control entry)."""
    if not entries:
        return 0
    main = sum(cache_bytes(model, hi, bytes_per_elem).values())
    return main * vace_layers * entries // model.num_layers


class InsufficientMemoryError(MemoryError):
    """A run that cannot fit: raised before anything large is allocated; the message has the estimate, the free
    amount and the cheapest changes that would fit."""


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def cheaper_plans(model: WanConfig, hi: HiStreamConfig, bytes_per_elem: int = 2) -> list[tuple[str, int]]:
    """(change, bytes the run would then need) for the usual fixes, cheapest need first."""
    from dataclasses import replace

    options = []
    if hi.window_chunks is None or hi.window_chunks > 1:  # None: the full cache
        options.append(("window_chunks 1", replace(hi, window_chunks=1)))
    if hi.batch_size > 1:
        options.append(("batch_size 1", replace(hi, batch_size=1)))
    half_w, half_h = (hi.width // 2) // 32 * 32, (hi.height // 2) // 32 * 32
    if half_w >= 64 and half_h >= 64:
        try:
            options.append((f"{half_w}x{half_h}", replace(hi, width=half_w, height=half_h)))
        except ValueError:  # a size the low-res stage cannot halve: leave that fix out
            pass
    plans = [(name, run_bytes(model, cfg, bytes_per_elem)) for name, cfg in options]
    return sorted(plans, key=lambda p: p[1])


def check_fits(need: int, free: int, device: str, fixes: list[tuple[str, int]] = (), others: str = "") -> None:
    """Refuse a run whose planned bytes exceed the device's free memory (see `cheaper_plans` for `fixes`)."""
    if need <= free:
        return
    fitting = [f"{name} (≈ {gib(n)})" for name, n in fixes if n <= free]
    tried = fitting or [f"{name} (≈ {gib(n)}, still too much alone)" for name, n in fixes]
    hint = f"; changes that fit: {', '.join(fitting)}" if fitting else (
        f"; none of these fits alone: {', '.join(tried)}" if tried else "")
    raise InsufficientMemoryError(f"HiStream needs ≈ {gib(need)} on {device} for this run but {gib(free)} is free"
                                  f"{hint}{'; ' + others if others else ''}. Nothing was allocated")
