"""Memory planning: what a run needs on the device besides the weights (KV caches, text cache, activations), the
weights themselves, and what a streaming decode reserves. `bytes_per_elem` is the compute dtype's size (bf16 = 2);
`hi.cache_dtype` says how the KV caches are stored (cache.py, kv_quant.py)."""

from __future__ import annotations

from collections.abc import Callable

from .cache import capacity_frames
from .config import HiStreamConfig, WanConfig
from .kv_quant import SCALE_DTYPE

FP8_SCALE_BYTES = SCALE_DTYPE.itemsize  # one per token, head and K or V


def kv_bytes_per_token(model: WanConfig, hi: HiStreamConfig, bytes_per_elem: int = 2) -> int:
    """K+V bytes one cached token costs over all layers: fp8 is 1 byte a value plus a scale per head."""
    if hi.cache_dtype == "fp8_e4m3fn":
        return 2 * model.num_layers * (model.dim + model.num_heads * FP8_SCALE_BYTES)
    return model.kv_bytes_per_token(bytes_per_elem)


def _cache_tokens(model: WanConfig, hi: HiStreamConfig) -> dict[str, int]:
    """Tokens (over all rows: guidance doubles them) each cache holds at its final (fixed) size."""
    out = {}
    frames = capacity_frames(hi.anchor, hi.window_chunks, hi.chunk_frames, hi.latent_frames)
    p = model.patch_size
    for name, low in (("low", True), ("high", False)):
        if (hi.uses_low_res if low else hi.uses_high_res):
            h, w = hi.low_latent_size if low else hi.latent_size
            out[name] = hi.model_batch * frames * (h // p[1]) * (w // p[2])
    return out


def cache_bytes(model: WanConfig, hi: HiStreamConfig, bytes_per_elem: int = 2) -> dict[str, int]:
    """Self-attention KV bytes of each cache at its final (fixed) size (guidance doubles the rows)."""
    per_token = kv_bytes_per_token(model, hi, bytes_per_elem)
    return {name: tokens * per_token for name, tokens in _cache_tokens(model, hi).items()}


def read_buffer_bytes(model: WanConfig, hi: HiStreamConfig, bytes_per_elem: int = 2) -> int:
    """fp8 only: each cache's read buffer, one layer's K and V dequantised to the compute dtype (0 otherwise)."""
    if hi.cache_dtype != "fp8_e4m3fn":
        return 0
    return sum(_cache_tokens(model, hi).values()) * 2 * model.dim * bytes_per_elem


def activation_bytes(model: WanConfig, hi: HiStreamConfig, bytes_per_elem: int = 2) -> int:
    """A generous bound on one chunk forward's transient memory at full resolution (FFN hidden, q/k/v,
    float32 RoPE temporaries, attention output, one layer's cache slice for eviction re-rotation; the fp8 cache
    re-rotates nothing at eviction and dequantises in chunk-sized pieces, covered by the float32 term)."""
    p = model.patch_size
    h, w = hi.latent_size
    tokens = hi.model_batch * hi.chunk_frames * (h // p[1]) * (w // p[2])
    per_token = (model.ffn_dim + 8 * model.dim) * bytes_per_elem + 4 * model.dim * 4
    cached = 0 if hi.cache_dtype == "fp8_e4m3fn" else (
        cache_bytes(model, hi, bytes_per_elem).get("high", 0) // max(1, 2 * model.num_layers))
    return tokens * per_token + cached


def text_cache_bytes(model: WanConfig, hi: HiStreamConfig, bytes_per_elem: int = 2) -> int:
    return hi.model_batch * model.text_len * model.dim * 2 * model.num_layers * bytes_per_elem


def run_bytes(model: WanConfig, hi: HiStreamConfig, bytes_per_elem: int = 2) -> int:
    return (sum(cache_bytes(model, hi, bytes_per_elem).values()) + read_buffer_bytes(model, hi, bytes_per_elem)
            + activation_bytes(model, hi, bytes_per_elem) + text_cache_bytes(model, hi, bytes_per_elem))


def vace_cache_bytes(model: WanConfig, hi: HiStreamConfig, vace_layers: int, entries: int,
                     bytes_per_elem: int = 2) -> int:
    """The VACE blocks' own KV caches (same layout as the main caches, one stream per control entry), with their
    fp8 read buffers (one layer each, so they do not scale with the VACE layer count)."""
    if not entries:
        return 0
    main = sum(cache_bytes(model, hi, bytes_per_elem).values())
    return main * vace_layers * entries // model.num_layers + read_buffer_bytes(model, hi, bytes_per_elem) * entries


def block_params(model: WanConfig) -> int:
    """One Wan block: self- and cross-attention (q, k, v, o with biases, q/k RMSNorm), norm3, FFN, modulation."""
    d = model.dim
    attn = 4 * (d * d + d) + 2 * d
    return 2 * attn + 2 * d + (d * model.ffn_dim + model.ffn_dim) + (model.ffn_dim * d + d) + 6 * d


def weight_bytes(model: WanConfig, bytes_per_elem: int = 2) -> int:
    """The DiT's weights at `bytes_per_elem` per parameter (fp8 = 1, bf16 = 2)."""
    d, p = model.dim, model.patch_size
    patch = model.in_dim * p[0] * p[1] * p[2]
    embed = (patch * d + d) + (model.text_dim * d + d + d * d + d) + (model.freq_dim * d + d + d * d + d) + (
        d * 6 * d + 6 * d)
    head = d * model.out_dim * p[0] * p[1] * p[2] + model.out_dim * p[0] * p[1] * p[2] + 2 * d
    return (embed + model.num_layers * block_params(model) + head) * bytes_per_elem


def vace_weight_bytes(model: WanConfig, vace_layers: int, in_dim: int = 96, bytes_per_elem: int = 2) -> int:
    """A VACE module: its blocks (a Wan block + an after-projection each, the first also a before-projection) and
    its patch embedding."""
    d, p = model.dim, model.patch_size
    blocks = vace_layers * (block_params(model) + d * d + d) + (d * d + d)
    return (blocks + in_dim * p[0] * p[1] * p[2] * d + d) * bytes_per_elem


def chunk_decode_reserve(host_estimate: Callable, dtype, batch: int, chunk_frames: int,
                         latent_hw: tuple[int, int], latent_channels: int = 16) -> int:
    """What a streaming decode reserves beside the run: the host's own decode estimate (`VAE.memory_used_decode`,
    a function of the latent shape and dtype) for ONE chunk's latent [batch, C, chunk_frames, h, w], since the
    chunk-wise decode holds one chunk's activations at a time, never the whole video's."""
    return int(host_estimate((batch, latent_channels, chunk_frames, *latent_hw), dtype))


def output_bytes(hi: HiStreamConfig, decoded: bool) -> int:
    """The run's outputs on the host side: the fp32 LATENT and, when a VAE decodes on the sampler, the fp32 IMAGE."""
    h, w = hi.latent_size
    out = 4 * hi.batch_size * 16 * hi.latent_frames * h * w
    return out + (4 * hi.batch_size * hi.num_frames * hi.height * hi.width * 3 if decoded else 0)


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
