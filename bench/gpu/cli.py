"""Command line: argument parsing, the part loop (JSON after every part), merging and the summary."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from histream_core import attention as attn

from .backends import part_backends
from .common import CHOICES, PART_ESTIMATE_S, PARTS, REPO, SCALES
from .parts import part_histream, part_histream_long, part_self_forcing, part_wan21
from .profiling import part_profile
from .report import markdown
from .state import Bench
from .summary import summarize
from .vae import part_vae

DESCRIPTION = ("GPU benchmark of the HiStream engine: random Wan2.1-T2V-1.3B weights (bf16), real 1080p shapes, "
               "one GPU.")
PART_FUNCS = {"histream": part_histream, "self_forcing": part_self_forcing, "wan21": part_wan21,
              "histream_long": part_histream_long, "backends": part_backends, "profile": part_profile,
              "vae": part_vae}


def machine_meta(b: Bench | None, args, command: str) -> dict:
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
            "python": platform.python_version(), "scale": args.scale, "dtype": str(b.dtype if b else None),
            "device": str(b.device) if b else None, "command": command}
    if b is not None and b.cuda:
        p = torch.cuda.get_device_properties(b.device)
        meta.update(device_name=p.name, device_total_memory_bytes=p.total_memory, cuda=torch.version.cuda,
                    sm_count=p.multi_processor_count)
    else:
        meta["device_name"] = f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    try:
        meta["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=REPO,
                                     capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        meta["git"] = None
    return meta


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if k != "kept_latents"}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def parse_inject(spec: list[str] | None) -> dict[str, int]:
    out = {}
    for s in spec or []:
        cid, _, k = s.rpartition(":")
        if not cid or not k.isdigit():
            raise SystemExit(f"--inject-oom wants CONFIG_ID:CHUNK (e.g. self_forcing@63:2), got {s!r}")
        out[cid] = int(k)
    return out


def parse_parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in CHOICES]
    if bad or not parts:
        raise SystemExit(f"--part: unknown {bad}; choose from {', '.join(CHOICES)} (comma-separated)")
    if "all" in parts:
        return list(PARTS)
    return [p for p in PARTS if p in parts] + (["summary"] if "summary" in parts else [])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=DESCRIPTION)
    ap.add_argument("--part", default="all", help=f"one of {', '.join(CHOICES)}, or a comma list")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--scale", choices=tuple(SCALES), default="real")
    ap.add_argument("--out", default="bench/_out", help="folder for the JSON/txt outputs")
    ap.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                    help="default bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="skip a part when the run's elapsed time + its estimate would pass this (real scale)")
    ap.add_argument("--sf-long-max-s", type=float, default=120.0,
                    help="stop the long Self-Forcing run after this many seconds if it did not run out of memory "
                         "(a card with > ~110 GB holds its cache)")
    ap.add_argument("--wan-repeats", type=int, default=1, help="timed Wan2.1 full-sequence forwards (min is used)")
    ap.add_argument("--comfyui", default=None, help="ComfyUI root for the VAE part ('none' to skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--merge", nargs="*", default=None, help="--part summary: part JSON files to merge")
    ap.add_argument("--inject-oom", action="append", default=None, metavar="CONFIG_ID:CHUNK",
                    help="(tests) raise torch.cuda.OutOfMemoryError inside that config's stream at that chunk")
    return ap


def _load_merged(args, prefix: str) -> tuple[dict, dict]:
    files = [Path(f) for f in args.merge] if args.merge else sorted(
        f for f in Path(args.out).glob(f"{prefix}_*.json") if not f.name.endswith("_summary.json"))
    results, meta = {}, {}
    for f in files:
        data = json.loads(f.read_text())
        meta = meta or data.get("meta", {})
        results.update(data.get("results", {}))
    return results, meta


def main(argv=None, log=None) -> int:
    args = build_parser().parse_args(argv)
    command = "python -m bench.bench_gpu " + " ".join(sys.argv[1:] if argv is None else argv)
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    parts = parse_parts(args.part)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scale = SCALES[args.scale]
    prefix = "gpu" if args.scale == "real" else args.scale
    if parts == ["summary"]:
        results, meta = _load_merged(args, prefix)
        summary = summarize(results, scale)
        (out / f"{prefix}_summary.json").write_text(json.dumps(_jsonable({"meta": meta, "summary": summary}),
                                                               indent=1))
        md = markdown(results, summary, meta)
        (out / f"{prefix}_summary.md").write_text(md)
        print(md)
        return 0
    parts = [p for p in parts if p != "summary"]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; use --device cpu --scale tiny")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.startswith("cuda")
                                                           else torch.float32)
    previous_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    b = Bench(args.scale, device, dtype, out, log, seed=args.seed, inject_oom=parse_inject(args.inject_oom),
              comfyui=args.comfyui, deadline_s=args.deadline_s, sf_long_max_s=args.sf_long_max_s,
              wan_repeats=args.wan_repeats)
    attn.set_backend("sdpa")  # every part runs SDPA unless it names another backend
    name = "all" if len(parts) == len(PARTS) else "_".join(parts)
    path = out / f"{prefix}_{name}.json"
    meta = machine_meta(b, args, command)
    status: dict[str, dict] = {}
    try:
        for part in parts:
            est = PART_ESTIMATE_S[part] if args.scale == "real" else 0
            if b.deadline_s is not None and b.elapsed() + est > b.deadline_s:
                status[part] = {"status": "skipped", "reason": f"deadline: {b.elapsed():.0f} s elapsed + ~{est} s "
                                                               f"estimate > {b.deadline_s:.0f} s"}
                log(f"== {part}: skipped ({status[part]['reason']})")
                continue
            log(f"== {part} (t = {b.elapsed():.0f} s)")
            t0 = time.perf_counter()
            try:
                b.results[part] = PART_FUNCS[part](b)
                status[part] = {"status": b.results[part].get("status", "ok"),
                                "seconds": time.perf_counter() - t0}
            except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
                status[part] = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc()[-4000:], "seconds": time.perf_counter() - t0}
                log(f"== {part}: ERROR {status[part]['error']}\n{status[part]['traceback']}")
                b.free_memory()
            summary = summarize(b.results, scale)
            meta["seconds"] = b.elapsed()
            path.write_text(json.dumps(_jsonable({"meta": meta, "parts": status, "results": b.results,
                                                  "summary": summary}), indent=1))
            log(f"== {part}: {status[part]['status']} in {time.perf_counter() - t0:.1f} s → {path}")
    finally:
        torch.set_num_threads(previous_threads)
        attn.set_backend(None)
    summary = summarize(b.results, scale)
    md = markdown(b.results, summary, meta)
    (out / f"{prefix}_{name}.md").write_text(md)
    print(md)
    print(f"{b.elapsed():.0f} s; JSON: {path}")
    return 0 if all(s["status"] != "error" for s in status.values()) else 1
