"""The fp8 KV cache against the default cache: latent error over a long run, and paired quality on the toy model.

    python -m bench.bench_fp8_cache latent [--chunks 40] [--window 2] [--out bench/_out/fp8_latent.json]
    python -m bench.bench_fp8_cache keys [--window 8]
    python -m bench.bench_fp8_cache toy [--pairs 40] [--frames 17 33] [--out bench/_out/fp8_toy.json]

`latent`: the tiny Wan preset (dim 128, one 128-wide head, the real head_dim) in bf16, HiStream steps, 64×64,
`--chunks` chunks of 3 latent frames in cache_relative mode. The reference is the bf16-cache run; against it the
fp8 cache (un-rotated fp8 keys, rotated on read: the default) and the alternative that keeps rotated fp8 keys and
re-rounds them at every eviction move (`requantize_on_evict`). Per chunk: max and mean |Δ| of the generated latent
and the relative error ‖Δ‖/‖ref‖, with the number of evictions before it.

`keys`: the stored keys alone (one 128-wide head, random keys, chunks of one frame, anchor 1 + `--window`): the
relative error of each cached key as attention reads it (dequantised and rotated to its place) against the exact
rotation of the original key, by the number of times eviction has moved it, for both fp8 variants.

`toy`: the embedded toy model (float32, so its default cache is float32) on `--pairs` held-out prompt/seed pairs,
each generated with both caches from the same noise. Paired differences of the prompt metrics of
histream_toy/data.py (colour and direction correct, area coefficient of variation) with 95% intervals.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from histream_core import CausalWanModel, HiStreamConfig, HiStreamPipeline, WanConfig
from histream_core.kv_quant import FP8


class _RequantizingPipeline(HiStreamPipeline):
    """fp8 caches that keep rotated keys and re-round them when eviction moves them (the measured alternative)."""

    def plan_caches(self):
        caches = super().plan_caches()
        for c in caches:
            c.rotate_on_read = False  # what KVCache(requantize_on_evict=True) selects
        return caches


def _tiny_bf16() -> CausalWanModel:
    torch.manual_seed(0)
    model = CausalWanModel(WanConfig.preset("tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)
    return model.to(torch.bfloat16)


def latent_error(chunks: int, window: int, seed: int = 1) -> dict:
    model = _tiny_bf16()
    ctx = torch.randn(1, 7, model.config.text_dim, generator=torch.Generator().manual_seed(seed))
    cfg = HiStreamConfig.preset("histream", width=64, height=64, num_frames=1 + 4 * (3 * chunks - 1),
                                window_chunks=window)
    runs, times = {}, {}
    for name, pipe in (("bf16", HiStreamPipeline(model, cfg)),
                       ("fp8", HiStreamPipeline(model, cfg.with_(cache_dtype="fp8_e4m3fn"))),
                       ("fp8_requantize", _RequantizingPipeline(model, cfg, cache_dtype=FP8))):
        t0 = time.perf_counter()
        runs[name] = pipe.generate(ctx, seed=seed).float()
        times[name] = time.perf_counter() - t0
    ref = runs["bf16"]
    rows = []
    for k, (start, frames) in enumerate(cfg.chunks):
        r = ref[:, :, start:start + frames]
        row = {"chunk": k, "evictions_before": max(0, k - 1 - window)}
        for name in ("fp8", "fp8_requantize"):
            d = (runs[name][:, :, start:start + frames] - r).abs()
            row[name] = {"max": d.max().item(), "mean": d.mean().item(), "rel": (d.norm() / r.norm()).item()}
        rows.append(row)
    return {"chunks": chunks, "window": window, "seed": seed, "model": "tiny (dim 128, 1 head of 128, 2 layers), bf16",
            "size": "64x64", "rows": rows, "seconds": times}


def key_error_by_moves(window: int, seed: int = 1, chunks: int = 40) -> dict:
    from histream_core.cache import KVCache
    from histream_core.rope import Rope3D, apply_rope

    g = torch.Generator().manual_seed(seed)
    axes = WanConfig(dim=128, num_heads=1).rope_axes
    out = {}
    for name, requantize in (("fp8", False), ("fp8_requantize", True)):
        cache = KVCache(num_layers=1, batch=1, heads=1, head_dim=128, grid_hw=(4, 4), anchor_frames=1,
                        window_chunks=window, chunk_frames=1, total_frames=chunks, rope=Rope3D(axes),
                        position_mode="cache_relative", dtype=FP8, requantize_on_evict=requantize).allocate()
        g.manual_seed(seed)
        keys, placed, errs = {}, {}, {}
        for c in range(chunks):
            q, k, v = (torch.randn(1, 16, 1, 128, generator=g) for _ in range(3))
            cache.begin(c, 1)
            start = cache.committed_frames
            cache.attend(0, q, k, v)
            read = cache._read[0]
            for place, pos in enumerate(cache.committed_positions()):
                cos, sin = cache.rope.angles([place], 4, 4)
                exact = apply_rope(keys[pos], cos, sin)
                got = read[:, place * 16:(place + 1) * 16].float()
                moves = placed[pos] - place
                errs.setdefault(moves, []).append(((got - exact).norm() / exact.norm()).item())
            keys[c], placed[c] = k, start
            cache.commit()
        out[name] = {m: {"mean": statistics.fmean(e), "max": max(e), "n": len(e)} for m, e in sorted(errs.items())}
    return {"window": window, "seed": seed, "chunks": chunks, "by_moves": out}


def _metrics(video: torch.Tensor, spec) -> dict:
    from histream_toy.data import centroid_track, detect_color, detect_direction, object_area

    area = object_area(video)
    found = area[area > 0.01]
    cv = (found.std() / found.mean()).item() if found.numel() > 1 else float("nan")
    return {"color": float(detect_color(video) == spec.color),
            "direction": float(detect_direction(centroid_track(video)) == spec.direction), "area_cv": cv}


def _mean_ci(xs: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% interval (normal approximation over the pairs)."""
    xs = [x for x in xs if not math.isnan(x)]
    m = statistics.fmean(xs)
    return m, (1.96 * statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan"))


def toy_quality(pairs: int, seed: int = 0, frames: tuple[int, int] = (17, 33)) -> dict:
    from histream_toy.sampling import _models, generate_latent, held_out_pairs

    model, ae = _models()
    out = {"default": [], "fp8": [], "latent_rel": []}
    for i, (spec, s, n_frames) in enumerate(held_out_pairs(pairs, seed, frames)):
        print(f"pair {i}: {spec.prompt!r} seed {s}, {n_frames} frames", flush=True)
        lat = {}
        for name, dtype in (("default", "default"), ("fp8", "fp8_e4m3fn")):
            lat[name] = generate_latent(spec.prompt, n_frames, s, model=model, cache_dtype=dtype)
            out[name].append(_metrics(ae.decode(lat[name])[0], spec))
        out["latent_rel"].append(((lat["fp8"] - lat["default"]).norm() / lat["default"].norm()).item())
    summary = {}
    for key in ("color", "direction", "area_cv"):
        a, b = [m[key] for m in out["default"]], [m[key] for m in out["fp8"]]
        summary[key] = {"default": _mean_ci(a), "fp8": _mean_ci(b),
                        "fp8_minus_default": _mean_ci([y - x for x, y in zip(a, b)]),
                        "pairs_that_differ": sum(x != y for x, y in zip(a, b)) if key != "area_cv" else None}
    summary["latent_rel"] = {"mean": statistics.fmean(out["latent_rel"]), "max": max(out["latent_rel"])}
    return {"pairs": pairs, "seed": seed, "frames": frames, "summary": summary, "per_pair": out}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("latent", "keys", "toy"))
    ap.add_argument("--chunks", type=int, default=40)
    ap.add_argument("--window", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--frames", type=int, nargs=2, default=(17, 33), help="toy: pixel-frame range of the pairs")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    print(f"seed {a.seed}")
    if a.what == "latent":
        res = latent_error(a.chunks, a.window, a.seed)
    elif a.what == "keys":
        res = key_error_by_moves(a.window, a.seed, a.chunks)
    else:
        res = toy_quality(a.pairs, a.seed, tuple(a.frames))
    text = json.dumps(res, indent=1)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    print(json.dumps(res.get("summary", res.get("seconds", res.get("by_moves"))), indent=1))
    if a.what == "latent":
        for r in res["rows"]:
            print(f"{r['chunk']:3d} ev {r['evictions_before']:3d}  fp8 max {r['fp8']['max']:.4f} mean "
                  f"{r['fp8']['mean']:.5f} rel {r['fp8']['rel']:.4f}  |  requant max {r['fp8_requantize']['max']:.4f}"
                  f" mean {r['fp8_requantize']['mean']:.5f} rel {r['fp8_requantize']['rel']:.4f}")


if __name__ == "__main__":
    main()
