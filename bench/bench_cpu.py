"""CPU benchmark of the HiStream engine: counted FLOPs at real size, and wall clock per chunk on a tiny model.

Part 1 (FLOPs). Wan2.1-T2V-1.3B built on the `meta` device (no memory, no arithmetic) runs the REAL forward
passes of `HiStreamPipeline.generate` at 1080p under `torch.utils.flop_counter.FlopCounterMode`, for
self_forcing (unbounded cache, full res only), histream and histream_plus (anchor = first chunk, windows of
0/1/2 chunks), at 21 and 63 latent frames. FLOPs are split into linear (addmm/mm), self-attention,
cross-attention (attention matmuls told apart by their key length: the text has `TEXT_LEN` tokens) and the
patch-embedding convolution, per pass and per chunk. The Wan2.1 bidirectional baseline is one full-sequence
forward of 21 latent frames × 50 steps × 2 (CFG). An independent analytic model (`analytic_flops`) predicts
the same numbers from the shapes alone.

Part 2 (time). The tiny config (random fp32 weights) streams a long video on the CPU; `stream()` yields each
finished chunk, so the time between yields is the per-chunk cost. With a window it must stay flat; with
Self-Forcing's unbounded cache it grows.

Run from the repository root:  python -m bench.bench_cpu [--quick] [--out bench/_out/cpu.json] [--threads 2]
`--quick` (for tests, seconds): 1.3B widths with 2 of the 30 blocks, fewer configs, one 30-block chunk.
The full run takes ≈ 14 min on 2 cores: meta tensors cost no memory, but every op still runs its Python meta kernel.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from histream_core import CausalWanModel, HiStreamConfig, HiStreamPipeline, NoiseSource, StepInfo, WanConfig
from histream_core.config import pixel_frames_of

aten = torch.ops.aten

WIDTH, HEIGHT = 1920, 1088  # 1080p as the paper runs it (latent 240×136)
TEXT_LEN = 512  # umT5-XXL tokens (Wan2.1 pads the prompt to 512)
CHUNK = 3  # latent frames per chunk; the anchor is the first chunk
WAN_STEPS, WAN_CFG = 50, 2  # Wan2.1 sampling: 50 steps, classifier-free guidance doubles the forwards
# The analytic reference quoted in the issue: FLOP ratio vs Self-Forcing, 1-chunk anchor + 1-chunk window.
ISSUE_REFERENCE = {("histream", 21): 2.2, ("histream_plus", 21): 3.2, ("histream", 63): 5.1, ("histream_plus", 63): 7.6}
KINDS = ("linear", "attn_self", "attn_cross", "conv", "other")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- FLOP counting ---------------------------------------------------------------------------------------------
class KindCounter:
    """`FlopCounterMode` whose attention FLOPs are also booked as self- or cross-attention.

    Attention reaches the dispatcher as two bmm's (SDPA's math path on meta/CPU) or as one fused SDPA op (CUDA
    builds). Either way the key length is read off the shapes: keys == `text_len` tokens → cross-attention.
    """

    def __init__(self, text_len: int, head_dim: int):
        self.text_len, self.head_dim = text_len, head_dim
        self.attn = {"attn_self": 0, "attn_cross": 0}
        fused = {op: self._fused for op in (aten._scaled_dot_product_efficient_attention,
                                            aten._scaled_dot_product_flash_attention,
                                            aten._scaled_dot_product_cudnn_attention)}
        self.mode = FlopCounterMode(display=False, custom_mapping={aten.bmm: self._bmm, **fused})

    def _book(self, key_len: int, flops: int) -> int:
        self.attn["attn_cross" if key_len == self.text_len else "attn_self"] += flops
        return flops

    def _bmm(self, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        b, m, k = a_shape
        n = b_shape[2]
        # scores = q·kᵀ: [BH, Sq, D]·[BH, D, Sk] → [BH, Sq, Sk];  out = p·v: [BH, Sq, Sk]·[BH, Sk, D] → [BH, Sq, D]
        key_len = k if n == self.head_dim else n
        return self._book(key_len, 2 * b * m * n * k)

    def _fused(self, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        b, h, sq, d = q_shape
        sk, dv = k_shape[2], v_shape[3]
        return self._book(sk, 2 * b * h * sq * sk * (d + dv))

    def __enter__(self):
        self.attn = {"attn_self": 0, "attn_cross": 0}
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)

    def snapshot(self) -> dict[str, int]:
        g = self.mode.get_flop_counts().get("Global", {})
        total = int(sum(g.values()))
        linear = int(g.get(aten.addmm, 0) + g.get(aten.mm, 0))
        conv = int(g.get(aten.convolution, 0))
        out = {"total": total, "linear": linear, **self.attn, "conv": conv}
        out["other"] = total - linear - conv - out["attn_self"] - out["attn_cross"]
        return out


def _diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a[k] - b[k] for k in a}


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b[k] for k in b}


def meta_model(wan: WanConfig) -> CausalWanModel:
    return CausalWanModel(wan, device="meta", dtype=torch.bfloat16)


def video(preset: str, latent_frames: int, window: int | None, width: int = WIDTH, height: int = HEIGHT,
          **kw) -> HiStreamConfig:
    if preset == "self_forcing":
        window = None  # Self-Forcing keeps every finished chunk
    return HiStreamConfig.preset(preset, width=width, height=height, num_frames=pixel_frames_of(latent_frames),
                                 window_chunks=window, chunk_frames=CHUNK, **kw)


def count_generate(model: CausalWanModel, hs: HiStreamConfig, text_len: int = TEXT_LEN) -> dict:
    """FLOPs of one `HiStreamPipeline.generate` call, per pass (callback), per chunk and in total."""
    # output_device=None: finished chunks stay on meta (the default, "cpu", cannot copy a meta tensor)
    pipe = HiStreamPipeline(model, hs, output_device=None)
    cache_bytes = {c.name: c.planned_nbytes() for c in pipe.plan_caches()}
    cache_frames = {c.name: c.capacity_frames for c in pipe.plan_caches()}
    counter = KindCounter(text_len, model.config.head_dim)
    source = NoiseSource(0, hs.batch_size)
    state: dict = {"last": None, "text": None}
    passes: list[dict] = []

    def noise(shape):  # the first draw comes right after the text K/V were computed, before any forward
        if state["last"] is None:
            state["text"] = state["last"] = counter.snapshot()
        return source(shape)

    def on_pass(info: StepInfo) -> None:
        now = counter.snapshot()
        cache = pipe.low_cache if info.stage == "low" else pipe.high_cache
        x = info.x
        p = model.config.patch_size
        queries = (x.shape[2] // p[0]) * (x.shape[3] // p[1]) * (x.shape[4] // p[2])
        keys = (cache.committed_frames + cache.current.frames) * cache.tokens_per_frame
        passes.append({"chunk": info.chunk, "kind": info.kind, "stage": info.stage, "step": info.step,
                       "query_tokens": queries, "key_tokens": keys, "flops": _diff(now, state["last"])})
        state["last"] = now

    context = torch.zeros(hs.batch_size, text_len, model.config.text_dim)  # CPU; the pipeline moves it
    t0 = time.perf_counter()
    with counter:
        out = pipe.generate(context, callback=on_pass, noise=noise)
    seconds = time.perf_counter() - t0
    total = counter.snapshot()
    if tuple(out.shape) != hs.latent_shape():
        raise RuntimeError(f"generate returned {tuple(out.shape)}, expected {hs.latent_shape()}")
    chunks = [dict.fromkeys(total, 0) for _ in range(hs.num_chunks)]
    for p in passes:
        chunks[p["chunk"]] = _add(chunks[p["chunk"]], p["flops"])
    summed = _add(state["text"], {k: sum(c[k] for c in chunks) for k in total})
    if summed != total:
        raise RuntimeError(f"per-pass FLOPs {summed} do not add up to the total {total}")
    return {"total": total, "text_setup": state["text"], "chunks": chunks, "passes": passes,
            "num_passes": len(passes), "cache_bytes_bf16": cache_bytes, "cache_capacity_frames": cache_frames,
            "count_seconds": round(seconds, 2)}


def count_bidirectional(model: CausalWanModel, latent_frames: int, width: int = WIDTH, height: int = HEIGHT,
                        text_len: int = TEXT_LEN) -> dict:
    """One Wan2.1 full-sequence forward (all frames attend all frames, text embedded inside): `model(x, t, ctx)`."""
    counter = KindCounter(text_len, model.config.head_dim)
    x = torch.zeros(1, model.config.in_dim, latent_frames, height // 8, width // 8, device="meta",
                    dtype=torch.bfloat16)
    t = torch.full((1,), 999.0, device="meta")
    ctx = torch.zeros(1, text_len, model.config.text_dim, device="meta", dtype=torch.bfloat16)
    with counter, torch.no_grad():
        model(x, t, ctx)
    one = counter.snapshot()
    n = WAN_STEPS * WAN_CFG
    return {"forward": one, "forwards": n, "total": {k: v * n for k, v in one.items()},
            "tokens": latent_frames * (height // 16) * (width // 16)}


# ---- the analytic model (independent of the engine: shapes and the chunk plan only) -----------------------------
def pass_flops(wan: WanConfig, queries: int, keys: int, text_len: int = TEXT_LEN, small_terms: bool = True) -> float:
    """One forward of `queries` tokens attending `keys` self-attention keys (+ the text).

    Per block: q,k,v,o (4·d²) + cross q,o (2·d², text K/V are cached) + FFN (2·d·ffn) multiply-adds per token,
    self-attention 2·Sq·Sk·d for q·kᵀ plus the same for p·v, cross-attention the same with Sk = text_len.
    `small_terms` adds the patch embedding, the head and the per-pass timestep MLPs."""
    d, f, n = wan.dim, wan.ffn_dim, queries
    per_block = 2 * n * (6 * d * d + 2 * d * f) + 4 * n * keys * d + 4 * n * text_len * d
    total = wan.num_layers * per_block
    if small_terms:
        patch = wan.in_dim * math.prod(wan.patch_size)
        total += 2 * n * patch * d + 2 * n * d * wan.out_dim * math.prod(wan.patch_size)  # patchify + head
        total += 2 * (wan.freq_dim * d + d * d + 6 * d * d)  # time_embedding + time_projection (one timestep)
    return float(total)


def text_flops(wan: WanConfig, text_len: int = TEXT_LEN) -> float:
    """The text embedding MLP and every block's cross-attention K/V projections (once per prompt)."""
    d = wan.dim
    return float(2 * text_len * (wan.text_dim * d + d * d) + wan.num_layers * 2 * 2 * text_len * d * d)


def analytic_flops(wan: WanConfig, preset: str, latent_frames: int, window: int | None, *,
                   cache_pass_after_last: bool = False, small_terms: bool = True, text_len: int = TEXT_LEN,
                   width: int = WIDTH, height: int = HEIGHT) -> float:
    """Passes per chunk: its denoise steps per resolution + 1 cache (t = 0) pass per resolution the video uses
    (HiStream writes BOTH caches every chunk); the engine skips the cache passes after the last chunk.
    Cache: Self-Forcing keeps every finished chunk; windowed = anchor (first chunk) + the last `window` chunks."""
    steps = {"self_forcing": [(0, 4), (0, 4)], "histream": [(2, 2), (2, 2)], "histream_plus": [(2, 2), (1, 1)]}
    tok_hi = (height // 16) * (width // 16)
    tok_lo = tok_hi // 4
    chunks = math.ceil(latent_frames / CHUNK)
    resolutions = [("high", tok_hi)] + ([("low", tok_lo)] if preset != "self_forcing" else [])
    total = text_flops(wan, text_len) if small_terms else 0.0
    for k in range(chunks):
        frames = min(CHUNK, latent_frames - k * CHUNK)
        done = k * CHUNK
        cached = done if window is None or preset == "self_forcing" else min(done, CHUNK * (1 + window))
        n_low, n_high = steps[preset][min(k, 1)]
        for res, tok in resolutions:
            n = (n_low if res == "low" else n_high) + (1 if (k < chunks - 1 or cache_pass_after_last) else 0)
            total += n * pass_flops(wan, frames * tok, (cached + frames) * tok, text_len, small_terms)
    return total


def analytic_bidirectional(wan: WanConfig, latent_frames: int, text_len: int = TEXT_LEN) -> float:
    n = latent_frames * (HEIGHT // 16) * (WIDTH // 16)
    return WAN_STEPS * WAN_CFG * (pass_flops(wan, n, n, text_len) + text_flops(wan, text_len))


# ---- wall clock on the tiny model ----------------------------------------------------------------------------------
def time_chunks(specs: list[tuple[str, int | None]], size: int, chunks: int, repeats: int, seed: int = 0,
                warmup: bool = True) -> list[dict]:
    """Seconds per chunk of `stream()` for each (preset, window), over `repeats` fresh generations after one warm-up.

    The presets take turns run by run, so a burst of load from another process hits them alike; the table keeps
    the fastest time per chunk (the least disturbed), the JSON also the median."""
    torch.manual_seed(seed)
    model = CausalWanModel(WanConfig.preset("tiny")).eval()  # random fp32 weights
    ctx = torch.randn(1, TEXT_LEN, model.config.text_dim, generator=torch.Generator().manual_seed(seed))
    configs = [video(preset, chunks * CHUNK, window, width=size, height=size) for preset, window in specs]
    runs: list[list[list[float]]] = [[] for _ in specs]
    for r in range(repeats + int(warmup)):
        for i, hs in enumerate(configs):
            times, t0 = [], time.perf_counter()
            for _ in HiStreamPipeline(model, hs).stream(ctx, seed=r):
                t1 = time.perf_counter()
                times.append(t1 - t0)
                t0 = t1
            if r >= int(warmup):  # with a warm-up, run 0 is not kept
                runs[i].append(times)
    out = []
    for (preset, window), hs, rs in zip(specs, configs, runs):
        fastest = [min(run[k] for run in rs) for k in range(hs.num_chunks)]
        out.append({"preset": preset, "window": window, "size": f"{size}x{size}", "latent_frames": hs.latent_frames,
                    "pixel_frames": hs.num_frames, "chunks": hs.num_chunks, "repeats": repeats, "seconds": fastest,
                    "seconds_median": [statistics.median(run[k] for run in rs) for k in range(hs.num_chunks)],
                    "seconds_all_runs": rs, "load_average_1_5_15min": os.getloadavg()})
    return out


# ---- the whole benchmark -------------------------------------------------------------------------------------------
def flop_plan(quick: bool) -> tuple[WanConfig, list[int], list[tuple[str, int | None]]]:
    wan = WanConfig.preset("1.3B")
    if quick:  # 1.3B widths, 2 blocks: every per-block number is the real one, 15x fewer (meta) ops
        return replace(wan, num_layers=2), [27], [("self_forcing", None), ("histream", 1), ("histream_plus", 1)]
    configs = [("self_forcing", None)] + [(p, w) for p in ("histream", "histream_plus") for w in (0, 1, 2)]
    return wan, [21, 63], configs


def run(quick: bool = False, log=print, threads: int = 2) -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(quick, log, threads)
    finally:
        torch.set_num_threads(previous)  # callers (pytest) keep their own setting


def _run(quick: bool, log, threads: int) -> dict:
    t_start = time.perf_counter()
    wan, lengths, configs = flop_plan(quick)
    model = meta_model(wan)
    res: dict = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads,
                    "torch": torch.__version__, "python": platform.python_version()},
        "date": datetime.date.today().isoformat(),
        "command": "python -m bench.bench_cpu" + (" --quick" if quick else "") + (
            "" if threads == 2 else f" --threads {threads}"),
        "quick": quick,
        "flops": {"model": {"preset": "1.3B", "num_layers": wan.num_layers, "dim": wan.dim, "ffn_dim": wan.ffn_dim,
                            "heads": wan.num_heads, "device": "meta", "dtype": "bfloat16"},
                  "resolution": f"{WIDTH}x{HEIGHT}", "text_len": TEXT_LEN, "configs": []},
    }
    for frames in lengths:
        for preset, window in configs:
            hs = video(preset, frames, window)
            c = count_generate(model, hs)
            c.update(preset=preset, window=window, latent_frames=frames, pixel_frames=hs.num_frames,
                     label=f"{preset} W={'inf' if window is None else window} @ {frames} latent / "
                           f"{hs.num_frames} px frames")
            for after_last in (False, True):
                c["analytic_cache_pass_after_last" if after_last else "analytic"] = analytic_flops(
                    wan, preset, frames, window, cache_pass_after_last=after_last)
            c["analytic_short"] = analytic_flops(wan, preset, frames, window, small_terms=False)
            res["flops"]["configs"].append(c)
            log(f"  counted {c['label']}: {c['total']['total'] / 1e12:,.1f} TFLOP ({c['count_seconds']} s)")
    base = count_bidirectional(model, 21)
    base.update(latent_frames=21, pixel_frames=81, analytic=analytic_bidirectional(wan, 21))
    res["flops"]["wan21_bidirectional"] = base
    log(f"  counted Wan2.1 bidirectional 21 frames x {base['forwards']}: {base['total']['total'] / 1e12:,.0f} TFLOP")
    if quick:  # one chunk of the real 30-block model: the exact per-pass count a test checks by hand
        full = WanConfig.preset("1.3B")
        one = count_generate(meta_model(full), video("self_forcing", CHUNK, None))
        one.update(preset="self_forcing", window=None, latent_frames=CHUNK, num_layers=full.num_layers)
        res["flops"]["one_chunk_30_blocks"] = one
    _ratios(res["flops"])
    timing = {"model": "tiny (dim 128, 2 blocks, 1 head), random fp32 weights", "threads": threads, "runs": []}
    size, chunks, repeats = (64, 12, 1) if quick else (128, 15, 7)
    for r in time_chunks([("histream", 1), ("self_forcing", None)], size, chunks, repeats, warmup=not quick):
        s = r["seconds"]
        r.update(chunk2=s[2], chunk10=s[10], ratio_10_over_2=s[10] / s[2])
        timing["runs"].append(r)
        log(f"  timed {r['preset']}: chunk 2 {s[2] * 1e3:.1f} ms, chunk 10 {s[10] * 1e3:.1f} ms")
    res["timing"] = timing
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    return res


def _ratios(flops: dict) -> None:
    base = flops["wan21_bidirectional"]["total"]["total"]
    base_per_frame = base / flops["wan21_bidirectional"]["latent_frames"]
    sf = {c["latent_frames"]: c for c in flops["configs"] if c["preset"] == "self_forcing"}
    for c in flops["configs"]:
        t, f = c["total"]["total"], c["latent_frames"]
        c["per_latent_frame"] = t / f
        c["per_pixel_frame"] = t / c["pixel_frames"]
        ref = sf[f]
        c["vs_self_forcing"] = ref["total"]["total"] / t
        c["vs_self_forcing_label"] = f"{c['label']} vs self_forcing @ {f} latent frames"
        c["analytic_vs_self_forcing"] = ref["analytic"] / c["analytic"]
        c["analytic_after_last_vs_self_forcing"] = (ref["analytic_cache_pass_after_last"]
                                                    / c["analytic_cache_pass_after_last"])
        c["issue_reference"] = ISSUE_REFERENCE.get((c["preset"], f)) if c["window"] == 1 else None
        # Wan2.1 makes 21 latent frames at a time: at other lengths compare FLOPs per latent frame
        c["vs_wan21"] = base_per_frame / c["per_latent_frame"]
        c["vs_wan21_label"] = (f"{c['label']} vs Wan2.1 (21 frames, 50 steps x CFG)" if f == 21 else
                               f"{c['label']} vs Wan2.1, per latent frame (Wan2.1 @ 21 frames, 50 steps x CFG)")


# ---- reporting ------------------------------------------------------------------------------------------------------
def _t(x: float) -> str:
    return f"{x / 1e12:,.1f}"


def _win(w) -> str:
    return "∞" if w is None else str(w)


def markdown(res: dict) -> str:
    fl = res["flops"]
    m = fl["model"]
    out = [(f"### Counted FLOPs: Wan2.1-1.3B ({m['num_layers']} blocks), {fl['resolution']}, on meta, "
            f"text {fl['text_len']} tokens"),
           "",
           ("| preset | window | latent / px frames | passes | TFLOP | TFLOP / latent fr | TFLOP / px fr | linear | "
            "self-attn | cross-attn | KV cache GiB (bf16) | vs SF (same length) | vs Wan2.1 |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in fl["configs"]:
        t = c["total"]
        pct = {k: f"{100 * t[k] / t['total']:.1f}%" for k in KINDS}
        gib = sum(c["cache_bytes_bf16"].values()) / 2 ** 30
        wan = f"{c['vs_wan21']:.1f}×" + ("" if c["latent_frames"] == 21 else " (per frame)")
        out.append(f"| {c['preset']} | {_win(c['window'])} | {c['latent_frames']} / {c['pixel_frames']} | "
                   f"{c['num_passes']} | {_t(t['total'])} | {_t(c['per_latent_frame'])} | "
                   f"{_t(c['per_pixel_frame'])} | {pct['linear']} | {pct['attn_self']} | {pct['attn_cross']} | "
                   f"{gib:.1f} | {c['vs_self_forcing']:.2f}× | {wan} |")
    b = fl["wan21_bidirectional"]
    bt = b["total"]
    out += [(f"| Wan2.1 bidirectional | — | 21 / 81 | {b['forwards']} | {_t(bt['total'])} | "
             f"{_t(bt['total'] / 21)} | {_t(bt['total'] / 81)} | {100 * bt['linear'] / bt['total']:.1f}% | "
             f"{100 * bt['attn_self'] / bt['total']:.1f}% | {100 * bt['attn_cross'] / bt['total']:.1f}% | — | — | 1× |"),
            "",
            "### Counted vs analytic (ratio of FLOPs vs self_forcing at the same length)",
            "",
            ("| preset | window | latent frames | counted TFLOP | analytic TFLOP (engine) | counted / analytic | "
             "counted / short analytic | counted ratio | analytic ratio (engine: no cache pass after last chunk) | "
             "analytic ratio (cache pass after last chunk too) | issue reference |"),
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in fl["configs"]:
        if c["preset"] == "self_forcing":
            continue
        ref = "" if c["issue_reference"] is None else f"{c['issue_reference']}×"
        out.append(f"| {c['preset']} | {_win(c['window'])} | {c['latent_frames']} | {_t(c['total']['total'])} | "
                   f"{_t(c['analytic'])} | {c['total']['total'] / c['analytic']:.6f} | "
                   f"{c['total']['total'] / c['analytic_short']:.4f} | {c['vs_self_forcing']:.2f}× | "
                   f"{c['analytic_vs_self_forcing']:.2f}× | {c['analytic_after_last_vs_self_forcing']:.2f}× | "
                   f"{ref} |")
    for c in fl["configs"]:
        if c["preset"] == "self_forcing":
            out.append(f"| self_forcing | ∞ | {c['latent_frames']} | {_t(c['total']['total'])} | "
                       f"{_t(c['analytic'])} | {c['total']['total'] / c['analytic']:.6f} | "
                       f"{c['total']['total'] / c['analytic_short']:.4f} | 1× | 1× | 1× | |")
    out.append(f"| Wan2.1 bidirectional | — | 21 | {_t(bt['total'])} | {_t(b['analytic'])} | "
               f"{bt['total'] / b['analytic']:.6f} | | | | | |")
    out += ["", "### Counted TFLOP per chunk (chunk 0 excludes the one-off text K/V)", ""]
    for frames in sorted({c["latent_frames"] for c in fl["configs"]}):
        cs = [c for c in fl["configs"] if c["latent_frames"] == frames]
        n = len(cs[0]["chunks"])
        cols = list(range(min(n, 4))) + [k for k in (n // 2, n - 2, n - 1) if k >= 4]
        cols = sorted(set(cols))
        out += [f"{frames} latent frames ({n} chunks):", "",
                "| preset | window | " + " | ".join(f"chunk {k}" for k in cols) + " |",
                "|---|---|" + "---|" * len(cols)]
        for c in cs:
            out.append(f"| {c['preset']} | {_win(c['window'])} | "
                       + " | ".join(_t(c["chunks"][k]["total"]) for k in cols) + " |")
        out.append("")
    tm = res["timing"]
    out += [(f"### CPU wall clock per chunk: {tm['model']}, {tm['threads']} threads, fastest of "
             f"{tm['runs'][0]['repeats']} runs"), "",
            ("| preset | window | size | latent / px frames (chunks) | chunk 2 ms | chunk 10 ms | chunk 10 / chunk 2 | "
             "all chunks ms |"), "|---|---|---|---|---|---|---|---|"]
    for r in tm["runs"]:
        allc = ", ".join(f"{s * 1e3:.0f}" for s in r["seconds"])
        out.append(f"| {r['preset']} | {_win(r['window'])} | {r['size']} | {r['latent_frames']} / "
                   f"{r['pixel_frames']} ({r['chunks']}) | {r['chunk2'] * 1e3:.1f} | {r['chunk10'] * 1e3:.1f} | "
                   f"{r['ratio_10_over_2']:.2f} | {allc} |")
    return "\n".join(out) + "\n"


def _strip(res: dict) -> dict:
    """JSON-safe copy (per-pass records kept)."""
    return json.loads(json.dumps(res, default=str))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer configs, 2-block 1.3B widths: seconds")
    ap.add_argument("--out", default="bench/_out/cpu.json", help="where to write the JSON with every number")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2: the whole 2-core machine)")
    args = ap.parse_args(argv)
    res = run(args.quick, log=lambda s: print(s, file=sys.stderr, flush=True), threads=args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_strip(res), indent=1))
    print(markdown(res))
    print(f"machine: {res['machine']}; {res['seconds']} s; JSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
