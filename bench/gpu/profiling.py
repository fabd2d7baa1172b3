"""The profile part: torch.profiler over one steady-state histream chunk, ops by family."""

from __future__ import annotations

import gzip
import shutil
import time

from histream_core import HiStreamPipeline

from .state import Bench, set_backend
from .stream import config_label


def _profile_sort_key(cuda: bool) -> tuple[str, str]:
    if cuda:
        return "self_device_time_total", "self_cuda_time_total"
    return "self_cpu_time_total", "self_cpu_time_total"


def _evt_time(e, names) -> float:
    for n in names:
        v = getattr(e, n, None)
        if v is not None:
            return float(v)
    return 0.0


def part_profile(b: Bench) -> dict:
    """torch.profiler over one steady-state histream chunk (chunk 2: anchor + a full window)."""
    from torch.profiler import ProfilerActivity, profile

    s = b.scale.short
    hs = b.video("histream", s)
    model = b.model
    b.warmup()
    target = min(2, hs.num_chunks - 1)
    pipe = HiStreamPipeline(model, hs)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if b.cuda else [])
    rec = {"id": f"histream@{s}:chunk{target}", "label": config_label(f"histream@{s}", hs) + f", chunk {target}",
           "chunk": target}
    gen = pipe.stream(b.ctx, seed=b.seed)
    try:
        with set_backend("sdpa"):
            for _ in range(target):
                next(gen)
            b.sync()
            with profile(activities=acts, record_shapes=True) as prof:
                t0 = time.perf_counter()
                next(gen)
                b.sync()
                rec["chunk_seconds_under_profiler"] = time.perf_counter() - t0
    finally:
        gen.close()
        pipe.release()
    events = prof.key_averages()
    sort_attr = _profile_sort_key(b.cuda)
    try:
        table = events.table(sort_by=sort_attr[0], row_limit=40, max_name_column_width=60)
    except (AttributeError, KeyError, ValueError):
        table = events.table(sort_by=sort_attr[1], row_limit=40, max_name_column_width=60)
    # aten-level rows (CPU events): their self device time is the kernels each op launched itself, so the rows
    # add up without double counting (kernel rows, which the table also lists, are left out here)
    dev_names = ("self_device_time_total", "self_cuda_time_total") if b.cuda else ("self_cpu_time_total",)
    rows = [{"name": e.key, "count": e.count, "self_time_us": _evt_time(e, dev_names),
             "self_cpu_time_us": float(e.self_cpu_time_total)}
            for e in events if str(getattr(e, "device_type", "CPU")).endswith("CPU")]
    rows.sort(key=lambda r: -r["self_time_us"])
    total = sum(r["self_time_us"] for r in rows) or 1.0
    for r in rows:
        r["share"] = r["self_time_us"] / total
    rec["time_kind"] = "self device (CUDA kernel) time" if b.cuda else "self CPU time"
    rec["top_ops"] = rows[:40]
    rec["by_category"] = categorize(rows)
    rec["total_self_time_us"] = total
    b.out.mkdir(parents=True, exist_ok=True)
    prefix = "gpu" if b.scale_name == "real" else b.scale_name
    table_path = b.out / f"{prefix}_profile_top.txt"
    table_path.write_text(f"{rec['label']} — sorted by {rec['time_kind']}\n\n{table}\n")
    trace = b.out / f"{prefix}_profile_trace.json"
    prof.export_chrome_trace(str(trace))
    with open(trace, "rb") as src, gzip.open(str(trace) + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    trace.unlink()
    rec["files"] = [table_path.name, trace.name + ".gz"]
    b.log(table)
    del prof, events
    b.free_memory()
    return {"configs": [rec]}


CATEGORIES = (  # aten op names, lower-cased; first match wins
    ("attention", ("attention", "flash", "sdpa", "fmha", "sage")),
    ("matmul (linear)", ("aten::mm", "aten::addmm", "aten::bmm", "matmul", "linear")),
    ("conv (patchify)", ("conv",)),
    ("norm", ("norm",)),
    ("resample", ("upsample", "interpolate", "avg_pool", "adaptive")),
    ("copy / layout", ("copy", "contiguous", "aten::cat", "stack", "clone", "index", "slice", "transpose")),
    ("elementwise (RoPE, modulation, GELU, …)", ("mul", "add", "sub", "div", "gelu", "silu", "pow", "cos", "sin",
                                                "fill", "where", "exp", "neg", "rsqrt", "mean", "sum", "randn")),
)


def categorize(rows: list[dict]) -> dict[str, float]:
    """Shares of self time by op family (kernel and aten names both counted where present; rough)."""
    out: dict[str, float] = {}
    total = sum(r["self_time_us"] for r in rows) or 1.0
    for r in rows:
        name = r["name"].lower()
        cat = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other")
        out[cat] = out.get(cat, 0.0) + r["self_time_us"] / total
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))

