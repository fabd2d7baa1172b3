"""The README's 1080p memory table, generated from histream_core.memory so it stays true.

    python -m tools.memory_table            # print the table (markdown)
    python -m tools.memory_table --write    # replace the table between its markers in README.md

Every combination a user picks at 1920×1088, 81 frames, batch 1, HiStream steps, bf16 compute, Wan2.1-T2V-1.3B:
window 1/2/3, KV cache bf16/fp8, weights bf16/fp8, VACE 0/1 control video (the 1.3B VACE module, 15 blocks),
guidance cfg 1/≠1, decoder none/Wan VAE/TAE on the sampler's vae input. The peak is what ComfyUI must keep on the
GPU for the run: DiT (+ VACE) weights + KV caches (+ fp8 read buffers) + text K/V + activations + the decoder's
weights and its decode reservation (the host loads model and VAE together with both reservations added, so the
sum decides whether it offloads). The decoder reservations are estimates: the v0.8.0 host's own `memory_used_decode`
formulas evaluated for ONE chunk's latent (3 latent frames), as a streaming decode needs
(`histream_core.memory.chunk_decode_reserve`); v0.3.64's Wan VAE estimate has no time axis (whole-video size).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from histream_core import HiStreamConfig, WanConfig
from histream_core.memory import chunk_decode_reserve, run_bytes, vace_cache_bytes, vace_weight_bytes, weight_bytes

GIB = 2**30
CARD_GIB = 24.0
# a 24 GB card less ≈ 1 GiB for the CUDA context and ComfyUI's own reserve
FITS_GIB = 23.0
VACE_LAYERS = 15  # Wan2.1-VACE-1.3B
BF16 = 2
WAN_VAE_WEIGHTS = 254_000_000  # wan_2.1_vae.safetensors, bf16 (127 M parameters)
TAE_WEIGHTS = 22_000_000  # taew2_1 (a few M parameters, fp16)
MARK_BEGIN = "<!-- memory table: python -m tools.memory_table --write -->"
MARK_END = "<!-- end memory table -->"


def wan_vae_decode_estimate(shape, dtype_size: int) -> int:
    """v0.8.0's Wan2.1 VAE estimate (comfy/sd.py): (2200 if ≤ 4 latent frames else 7000)·h·w·64 per dtype byte."""
    return (2200 if shape[2] <= 4 else 7000) * shape[3] * shape[4] * 64 * dtype_size


def tae_decode_estimate(shape, dtype_size: int) -> int:
    """v0.8.0's estimate for the 16-channel TAE (taew2_1, comfy/sd.py): 50·max(1, 0.26·t^0.65)·h·w·1024 per byte."""
    return int(50 * max(1, shape[2] ** 0.65 * 0.26) * shape[3] * shape[4] * 32 * 32 * dtype_size)


DECODERS = {"none": (None, 0), "Wan VAE": (wan_vae_decode_estimate, WAN_VAE_WEIGHTS),
            "TAE": (tae_decode_estimate, TAE_WEIGHTS)}


def peak_bytes(window: int, cache: str, weights: str, vace: int, cfg: float, decoder: str) -> int:
    model = WanConfig.preset("1.3B")
    hi = HiStreamConfig(width=1920, height=1088, num_frames=81, window_chunks=window, guidance_scale=cfg,
                        cache_dtype="fp8_e4m3fn" if cache == "fp8" else "default")
    w = 1 if weights == "fp8" else BF16
    total = weight_bytes(model, w) + run_bytes(model, hi, BF16)
    if vace:
        total += vace_weight_bytes(model, VACE_LAYERS, bytes_per_elem=w)
        total += vace_cache_bytes(model, hi, VACE_LAYERS, vace, BF16)
    estimate, decoder_weights = DECODERS[decoder]
    if estimate is not None:
        total += decoder_weights + chunk_decode_reserve(lambda shape, _dtype: estimate(shape, BF16), None,
                                                        hi.batch_size, hi.chunk_frames, hi.latent_size)
    return total


def table() -> str:
    cols = list(itertools.product(("bf16", "fp8"), DECODERS))
    head = "| window | KV cache | VACE | cfg | " + " | ".join(f"w {w}, {d}" for w, d in cols) + " |"
    lines = [head, "|" + "---|" * (4 + len(cols))]
    fits = 0
    for window, cache, vace, cfg in itertools.product((1, 2, 3), ("bf16", "fp8"), (0, 1), (1.0, 3.0)):
        cells = []
        for weights, decoder in cols:
            gib = peak_bytes(window, cache, weights, vace, cfg, decoder) / GIB
            ok = gib <= FITS_GIB
            fits += ok
            cells.append(f"{'**' if ok else ''}{gib:.1f}{'** ✓' if ok else ''}")
        lines.append(f"| {window} | {cache} | {vace} | {'1' if cfg == 1 else '≠1'} | " + " | ".join(cells) + " |")
    total = 24 * len(cols)
    lines.append("")
    lines.append(f"Peak GiB at 1080p (1920×1088, batch 1, HiStream, bf16 compute); **bold ✓** = fits a 24 GB card "
                 f"(≤ {FITS_GIB:g} GiB, leaving ≈ 1 GiB for the CUDA context and ComfyUI's reserve): {fits} of "
                 f"{total} combinations. Columns: weight dtype (`w`) and the decoder on the sampler's vae input. "
                 f"Decoder columns add its weights and a decode reservation for ONE chunk, an estimate from the "
                 f"v0.8.0 host's own formulas (Wan VAE: {wan_vae_decode_estimate((1, 16, 3, 136, 240), BF16) / GIB:.1f}"
                 f" GiB; TAE taew2_1: {tae_decode_estimate((1, 16, 3, 136, 240), BF16) / GIB:.1f} GiB); v0.3.64's "
                 f"Wan VAE estimate has no time axis ({7000 * 136 * 240 * 64 * BF16 / GIB:.1f} GiB whatever the "
                 f"length). The text encoder is not counted (ComfyUI unloads it before sampling). Generated by "
                 f"`python -m tools.memory_table`.")
    return "\n".join(lines)


def write_readme(path: Path) -> None:
    text = path.read_text()
    if MARK_BEGIN not in text or MARK_END not in text:
        raise SystemExit(f"{path} has no memory-table markers ({MARK_BEGIN!r} … {MARK_END!r})")
    pre, rest = text.split(MARK_BEGIN, 1)
    _, post = rest.split(MARK_END, 1)
    path.write_text(f"{pre}{MARK_BEGIN}\n{table()}\n{MARK_END}{post}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="update README.md in place")
    a = ap.parse_args(argv)
    if a.write:
        write_readme(Path(__file__).resolve().parent.parent / "README.md")
    else:
        print(table())


if __name__ == "__main__":
    main()
