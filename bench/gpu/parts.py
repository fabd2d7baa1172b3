"""The streaming parts: histream, self_forcing (+ OOM prediction), wan21, histream_long."""

from __future__ import annotations

import torch

from histream_core.rope import Rope3D

from .common import GIB, WAN_CFG, WAN_STEPS, pixel_frames
from .state import Bench
from .stream import run_stream


def part_histream(b: Bench) -> dict:
    s = b.scale.short
    cfgs = [run_stream(b, f"histream@{s}", b.video("histream", s)),
            run_stream(b, f"histream_plus@{s}", b.video("histream_plus", s)),
            run_stream(b, f"histream_absolute@{s}", b.video("histream", s, position_mode="absolute"),
                       diagnostic=True)]
    return {"configs": cfgs}


def part_self_forcing(b: Bench) -> dict:
    short = run_stream(b, f"self_forcing@{b.scale.short}", b.video("self_forcing", b.scale.short))
    available = None
    if b.cuda:  # what a run may use: free device memory + what torch holds but does not use
        free = torch.cuda.mem_get_info(b.device)[0]
        available = free + torch.cuda.memory_reserved(b.device) - torch.cuda.memory_allocated(b.device)
    long = run_stream(b, f"self_forcing@{b.scale.long}", b.video("self_forcing", b.scale.long),
                      max_seconds=b.sf_long_max_s)
    res = {"configs": [short, long], "available_bytes_for_a_run": available}
    res["prediction"] = predict_sf_oom(short, long, available)
    return res


def predict_sf_oom(short: dict, long: dict, available: int | None) -> dict | None:
    """Where a cache grown chunk by chunk (instead of preallocated) would run out, from the measured working set."""
    if available is None or short["status"] != "ok" or short["peak_allocated_bytes"] is None:
        return None
    per_frame = short["cache_bytes_planned_total"] / short["latent_frames"]
    working = short["peak_allocated_bytes"] - short["base_allocated_bytes"] - short["cache_bytes_planned_total"]
    fit_frames = int((available - working) // per_frame)
    chunk = fit_frames // short["chunk_frames"]  # chunk k needs 3k committed + 3 current frames of cache
    needed_long = long["cache_bytes_planned_total"] + working
    return {"cache_bytes_per_latent_frame": per_frame, "working_bytes_besides_cache": working,
            "available_bytes": available, "cache_frames_that_fit": fit_frames,
            "grown_cache_runs_out_at_chunk": chunk if chunk < long["chunks"] else None,
            "long_run_needs_bytes": needed_long,
            "label": (f"PREDICTED: a Self-Forcing cache grown per chunk would run out at chunk {chunk} "
                      f"({fit_frames} latent frames of cache fit in {available / GIB:.1f} GiB beside a "
                      f"{working / GIB:.1f} GiB working set)" if chunk < long["chunks"]
                      else "PREDICTED: fits")}


def part_wan21(b: Bench) -> dict:
    s, model = b.scale, b.model
    frames = s.wan_frames
    h, w = s.height // 8, s.width // 8
    p = model.config.patch_size
    tokens = frames * (h // p[1]) * (w // p[2])
    rec = {"id": f"wan21@{frames}", "label": (f"Wan2.1 bidirectional, {s.width}x{s.height}, {frames} latent / "
                                              f"{pixel_frames(frames)} px frames, one full-sequence forward "
                                              f"({tokens:,} tokens) x {WAN_STEPS} steps x {WAN_CFG} (CFG), "
                                              f"EXTRAPOLATED"),
           "latent_frames": frames, "pixel_frames": pixel_frames(frames), "tokens": tokens, "steps": WAN_STEPS,
           "cfg": WAN_CFG, "forwards": WAN_STEPS * WAN_CFG, "extrapolated": True, "status": "ok",
           "forward_seconds": [], "weights_bytes": b.model_bytes}
    g = torch.Generator("cpu").manual_seed(b.seed)
    x = torch.randn(1, model.config.in_dim, frames, h, w, generator=g).to(b.device, b.dtype)
    t = torch.full((1,), 999.0, device=b.device)
    # the full-sequence forward uses the model's own RoPE table cache: cold before, dropped after (its 171k-token
    # table is 88 MB at 1080p and would otherwise sit in every later configuration's peak)
    model.rope = Rope3D(model.config.rope_axes, ntk_scale=model.rope.ntk_scale)
    rec["base_allocated_bytes"] = b.mem_reset()
    try:
        with torch.no_grad():
            t0 = b.now()
            model(x[:, :, :1], t, b.ctx)  # warm-up: the same kernels on one frame
            rec["warmup_seconds"] = b.now() - t0
            for _ in range(b.wan_repeats):
                t0 = b.now()
                out = model(x, t, b.ctx)
                rec["forward_seconds"].append(b.now() - t0)
                rec["output_finite"] = bool(torch.isfinite(out).all())
                del out
    except torch.cuda.OutOfMemoryError as exc:
        rec["status"], rec["oom"] = "oom", {"message": str(exc).splitlines()[0][:300]}
    rec.update(b.mem_peaks())
    del x
    model.rope = Rope3D(model.config.rope_axes, ntk_scale=model.rope.ntk_scale)
    b.free_memory()
    if rec["forward_seconds"]:
        one = min(rec["forward_seconds"])
        rec["forward_s"] = one
        rec["total_seconds_extrapolated"] = one * rec["forwards"]
        rec["s_per_frame_extrapolated"] = rec["total_seconds_extrapolated"] / rec["pixel_frames"]
        b.log(f"  wan21: one forward {one:.2f} s → {rec['s_per_frame_extrapolated']:.2f} s/frame (extrapolated)")
    return {"configs": [rec]}


def part_histream_long(b: Bench) -> dict:
    n = b.scale.long
    return {"configs": [run_stream(b, f"histream@{n}", b.video("histream", n)),
                        run_stream(b, f"histream_plus@{n}", b.video("histream_plus", n))]}
