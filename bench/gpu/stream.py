"""One timed `HiStreamPipeline.stream()` run, chunk by chunk, with OOM reporting."""

from __future__ import annotations

import statistics

import torch

from histream_core import HiStreamConfig, HiStreamPipeline, StepInfo
from histream_core.memory import run_bytes

from .common import _fmt_gib, chunk_pixel_frames
from .state import Bench, set_backend


def _steps(hs: HiStreamConfig) -> dict:
    f, later = hs.steps.first, hs.steps.later
    return {"first_chunk": {"low": f.n_low, "high": f.n_high}, "later_chunks": {"low": later.n_low,
                                                                                "high": later.n_high}}


def config_label(cid: str, hs: HiStreamConfig) -> str:
    win = "unbounded cache" if hs.window_chunks is None else (
        f"anchor {hs.anchor} + window {hs.window_chunks} chunk(s) of {hs.chunk_frames}")
    return (f"{cid}: {hs.width}x{hs.height}, {hs.latent_frames} latent / {hs.num_frames} px frames, {win}, "
            f"positions {hs.position_mode}")


def run_stream(b: Bench, cid: str, hs: HiStreamConfig, *, backend: str = "sdpa", keep: tuple[int, ...] = (),
               max_seconds: float | None = None, diagnostic: bool = False) -> dict:
    """Time `HiStreamPipeline.stream()` chunk by chunk. OOM is caught and reported as the chunk it hit."""
    model = b.model
    b.warmup(backend)
    pipe = HiStreamPipeline(model, hs)  # its caches build their own RoPE tables: cold, as in a new run
    caches = {c.name: c.planned_nbytes() for c in pipe.plan_caches()}
    rec = {"id": cid, "label": config_label(cid, hs), "preset": cid.split("@")[0], "diagnostic": diagnostic,
           "backend": backend, "width": hs.width, "height": hs.height, "latent_frames": hs.latent_frames,
           "pixel_frames": hs.num_frames, "chunk_frames": hs.chunk_frames, "chunks": hs.num_chunks,
           "anchor_frames": hs.anchor, "window_chunks": hs.window_chunks, "position_mode": hs.position_mode,
           "steps": _steps(hs), "cache_bytes_planned": caches, "cache_bytes_planned_total": sum(caches.values()),
           "run_bytes_planned": run_bytes(model.config, hs), "weights_bytes": b.model_bytes,
           "chunk_seconds": [], "chunk_pixel_frames": [], "chunk_s_per_frame": [], "chunk_memory": [],
           "status": "ok", "oom": None, "stopped_after_s": None}
    base = b.mem_reset()
    rec["base_allocated_bytes"] = base
    progress = {"chunk": None, "step": None, "allocated": False}
    inject = b.inject_oom.get(cid)
    allocate = pipe.allocate

    def allocate_and_note() -> None:  # stream() calls self.allocate(): note whether the buffers got allocated
        allocate()
        progress["allocated"] = True

    pipe.allocate = allocate_and_note

    def callback(info: StepInfo) -> None:
        progress.update(chunk=info.chunk, step=info.step, stage=info.stage, kind=info.kind)
        if inject is not None and info.chunk == inject:
            raise torch.cuda.OutOfMemoryError(f"injected OOM (test) at chunk {info.chunk}")

    kept: dict[int, torch.Tensor] = {}
    oom = None
    gen = None
    try:
        with set_backend(backend):
            gen = pipe.stream(b.ctx, seed=b.seed, callback=callback)
            t_run = t0 = b.now()
            for res in gen:
                t1 = b.now()
                rec["chunk_seconds"].append(t1 - t0)
                px = chunk_pixel_frames(res.frame_start, res.latent.shape[2])
                rec["chunk_pixel_frames"].append(px)
                rec["chunk_s_per_frame"].append((t1 - t0) / px)
                rec["chunk_memory"].append(b.mem_now())
                if res.index in keep or (res.index == hs.num_chunks - 1 and -1 in keep):
                    kept[res.index] = res.latent.float().cpu()
                del res
                if max_seconds is not None and t1 - t_run > max_seconds and len(rec["chunk_seconds"]) < hs.num_chunks:
                    rec["status"], rec["stopped_after_s"] = "stopped", max_seconds
                    break
                t0 = b.now()  # bookkeeping above is not charged to the next chunk
    except torch.cuda.OutOfMemoryError as exc:
        done = len(rec["chunk_seconds"])  # chunks finished = the index of the chunk that ran out
        if not progress["allocated"]:
            where = "allocating the KV cache buffers (before any forward pass)"
        elif progress["chunk"] is None:
            where = "during chunk 0, before its first pass finished"
        else:
            where = (f"during chunk {done}; last finished pass: chunk {progress['chunk']} {progress.get('kind')} "
                     f"step {progress['step']} ({progress.get('stage')} res)")
        oom = {"at_chunk": done, "where": where, "message": str(exc).splitlines()[0][:300],
               "injected": inject is not None}
    finally:
        if gen is not None:
            gen.close()
        pipe.release()  # stream() allocates outside its try/finally: an OOM in allocate() leaves buffers behind
    if oom is not None:
        rec["status"], rec["oom"] = "oom", oom
        b.log(f"  {cid}: OOM at chunk {oom['at_chunk']} {oom['where']}")
    rec.update(b.mem_peaks())
    del pipe, gen
    b.free_memory()
    finish_record(rec)
    rec["kept_latents"] = kept  # tensors: removed before JSON
    if rec["status"] != "oom":
        b.log(f"  {cid}: {rec['s_per_frame']:.4f} s/frame over {len(rec['chunk_seconds'])} chunks, "
              f"peak {_fmt_gib(rec['peak_allocated_bytes'])} GiB")
    return rec


def finish_record(rec: dict) -> None:
    """Totals and s/frame from the per-chunk times (also used by tests to re-derive them)."""
    secs, px = rec["chunk_seconds"], rec["chunk_pixel_frames"]
    rec["chunks_done"] = len(secs)
    rec["total_seconds"] = sum(secs) if secs else None
    done_px = sum(px)
    rec["pixel_frames_done"] = done_px
    complete = rec["status"] == "ok" and len(secs) == rec["chunks"]
    rec["s_per_frame"] = sum(secs) / done_px if complete else None
    rec["s_per_frame_partial"] = sum(secs) / done_px if secs else None
    steady = rec["chunk_s_per_frame"][1:rec["chunks"] - 1]
    rec["steady_s_per_frame"] = statistics.median(steady) if steady else None
    rec["steady_chunk_seconds"] = statistics.median(secs[1:rec["chunks"] - 1]) if len(secs) > 2 else None
