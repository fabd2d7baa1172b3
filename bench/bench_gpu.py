"""GPU benchmark of the HiStream engine: random Wan2.1-T2V-1.3B weights (bf16), real 1080p shapes, one GPU.

Timing does not depend on weight values, so random weights at the real size give the real cost. Every number is
labelled with its resolution, window and length; ratios name both sides.

Parts (`--part`, or a comma list; `all` runs every part in ONE process, in the order below):
  histream       histream and histream_plus @ 21 latent frames (81 px), + a diagnostic histream with `absolute`
                 positions (no per-step re-rotation of the cached keys) to price cache_relative's RoPE
  self_forcing   Self-Forcing = our engine, no low-res stage, unbounded cache (window None), keys stored rotated
                 (`position_mode="absolute"`, as Self-Forcing does; identical output to cache_relative without
                 eviction) @ 21 latent frames (~32 GB of cache), and @ 63: on an 80 GB card its preallocated
                 cache (~95 GB) runs out before the first step; where a per-chunk-grown cache would run out is
                 predicted from the measured 21-frame working set (labelled predicted)
  wan21          Wan2.1 bidirectional baseline: ONE full-sequence forward over 21 latent frames (171,360 tokens at
                 1080p), timed, then x 50 steps x 2 (CFG): the total is EXTRAPOLATED, never run
  histream_long  histream and histream_plus @ 63 latent frames (249 px): flatness (chunk 20 vs chunk 2) and
                 memory growth (peak @ 21 vs @ 63)
  backends       histream @ 21 under attention backend sdpa, then sageattention (if importable on this GPU);
                 max |Δ| of chunk 0's and the last chunk's output latent vs SDPA (same seed, same noise)
  profile        torch.profiler over ONE steady-state histream chunk (chunk 2: anchor + full window) at 1080p:
                 top-ops table (txt), chrome trace (json.gz), op shares in the JSON
  vae            the Wan2.1 VAE decoder (ComfyUI's `comfy.ldm.wan.vae.WanVAE`, dim 96, random bf16 weights) over
                 a 21-latent-frame 1080p latent, untiled, as stock VAEDecode runs it; end-to-end s/frame =
                 denoise + decode. Needs a ComfyUI host: `--comfyui PATH`, $COMFYUI_PATH, <repo>/.comfy_host,
                 <repo>/shared/comfyui or <repo>/../shared/comfyui (only its `comfy/` package is imported)
  summary        no GPU: merge part JSONs (`--merge FILE...`, default every `gpu_*.json` in --out) and compute
                 the ratios, memory, flatness, backend and end-to-end tables

Conventions. Pixel frames: a video of T latent frames has 1 + 4(T-1) pixel frames (21 → 81, 63 → 249); chunk 0
(3 latent frames, the first of which decodes to 1 pixel frame) has 9 pixel frames, every later full chunk 12.
s/frame = seconds / pixel frames; the whole-video s/frame counts every chunk (chunk 0 includes the cache
allocation, the text K/V and the first RoPE tables); "steady" s/frame is the median over chunks 1..n-2 (the last
chunk skips the cache passes). Times are denoising only (no text encoder, no VAE) unless labelled end-to-end.
Per chunk: `HiStreamPipeline.stream()` yields each chunk when its work is queued; the benchmark synchronizes the
device at every yield and reads `time.perf_counter` (CUDA: after `torch.cuda.synchronize()`). A short warm-up
stream (3 chunks, same resolution) runs once per process before anything is timed. Memory (CUDA): per
configuration `reset_peak_memory_stats()`, then `max_memory_allocated()`/`max_memory_reserved()` (weights
included; the CUDA context is not counted by these); on CPU the process RSS is reported instead, no peaks.

Estimated GPU time on one H100 80GB at --scale real, from counted FLOPs at ~350 TFLOP/s (SDPA flash, bf16; the
least certain is the VAE): setup (import, 1.3B init on the GPU, 3-chunk warm-up) ≈ 20 s once per process;
  histream ≈ 70 s     (a steady 1080p chunk ≈ 1.3 PFLOP ≈ 3 s; 3 runs of 7 chunks)
  self_forcing ≈ 65 s (21 frames ≈ 17 PFLOP ≈ 50 s; the 63-frame run fails at allocation at once)
  wan21 ≈ 40 s        (one 171k-token forward ≈ 5.8 PFLOP ≈ 17 s, + warm-up)
  histream_long ≈ 130 s, backends ≈ 75 s (incl. Triton JIT of sageattention), profile ≈ 30 s, vae ≈ 50 s
  (≈ 65 TFLOP of 3-D convolutions per latent frame).
`--part all` ≈ 8 min: fits one 10-minute command; `--deadline-s` skips a part that would not end in time (the
JSON is rewritten after every part, so a killed run keeps what it had; rerun the skipped parts separately and
merge with `--part summary --merge`).

Run from the repository root:
  python -m bench.bench_gpu --part all --device cuda --out DIR --deadline-s 480
  python -m bench.bench_gpu --scale tiny --device cpu --part all           # same code path, tiny model, CPU
  python -m bench.bench_gpu --part summary --merge A/gpu_all.json B/gpu_wan21.json --out C

Layout: this file is the entry point; the code lives in `bench/gpu/` (common, state, stream, parts, backends,
profiling, vae, summary, report, cli).
"""

from __future__ import annotations

from bench.gpu.backends import attention_probe, part_backends
from bench.gpu.cli import PART_FUNCS, build_parser, machine_meta, main, parse_inject, parse_parts
from bench.gpu.common import (
    CHOICES,
    GIB,
    GOAL_RATIO,
    MEMORY_GOAL_GIB,
    PAPER_RATIO,
    PAPER_S_PER_FRAME,
    PART_ESTIMATE_S,
    PARTS,
    REPO,
    SCALES,
    TEXT_LEN,
    WAN_CFG,
    WAN_STEPS,
    Scale,
    chunk_pixel_frames,
    pixel_frames,
)
from bench.gpu.parts import part_histream, part_histream_long, part_self_forcing, part_wan21, predict_sf_oom
from bench.gpu.profiling import CATEGORIES, categorize, part_profile
from bench.gpu.report import markdown
from bench.gpu.state import Bench, rss_bytes, set_backend
from bench.gpu.stream import config_label, finish_record, run_stream
from bench.gpu.summary import all_configs, summarize
from bench.gpu.vae import find_comfyui, load_wan_vae_class, part_vae

__all__ = ["CATEGORIES", "CHOICES", "GIB", "GOAL_RATIO", "MEMORY_GOAL_GIB", "PAPER_RATIO", "PAPER_S_PER_FRAME",
           "PARTS", "PART_ESTIMATE_S", "PART_FUNCS", "REPO", "SCALES", "TEXT_LEN", "WAN_CFG", "WAN_STEPS", "Bench",
           "Scale", "all_configs", "attention_probe", "build_parser", "categorize", "chunk_pixel_frames",
           "config_label", "find_comfyui", "finish_record", "load_wan_vae_class", "machine_meta", "main", "markdown",
           "parse_inject", "parse_parts", "part_backends", "part_histream", "part_histream_long", "part_profile",
           "part_self_forcing", "part_vae", "part_wan21", "pixel_frames", "predict_sf_oom", "rss_bytes",
           "run_stream", "set_backend", "summarize"]

if __name__ == "__main__":
    raise SystemExit(main())
