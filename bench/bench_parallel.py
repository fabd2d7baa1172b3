"""Bytes on the wire for sequence parallelism (histream_core/parallel.py) vs a whole-cache all-to-all design.

Counted, not estimated: the real `HiStreamPipeline` loop runs on the `meta` device at the real widths and 1080p,
as rank 0 of N with a transport that moves nothing; every exchange books what this rank would send
(`SequenceParallel.sent`: q/k/v and the attention output per self-attention, the head's tokens per forward). For
the same calls, the whole-cache design (every call exchanges the whole attended K/V, cache included, as
Raylight's causal Wan does with full-length caches) is booked from the cache's state at that call. The per-layer
numbers are exact per block, so a few blocks suffice (`--layers`); per-chunk totals multiply by the real depth.
The analytic functions below predict the counted numbers from the shapes (tests/test_bench_parallel.py).

Projected time = bytes this rank sends per chunk / one link's bandwidth per direction (all ranks send at once; a
lower bound: no latency, no overlap with compute). Speed itself is not measured here.

    python -m bench.bench_parallel [--out bench/_out/parallel.json] [--layers 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import torch

from histream_core import CausalWanModel, HiStreamConfig, HiStreamPipeline, WanConfig
from histream_core.config import pixel_frames_of
from histream_core.parallel import SequenceParallel, ShapeOnlyTransport

WIDTH, HEIGHT = 1920, 1088
TEXT_LEN = 512
LINKS_GBPS = {"NVLink 4 (H100 SXM, 450 GB/s per direction)": 450.0,
              "PCIe 4.0 x16 (≈ 25 GB/s effective per direction)": 25.0}
MODELS = {"1.3B": (WanConfig.preset("1.3B"), (2, 3, 4, 6)), "14B": (WanConfig.preset("14B"), (2, 4, 5, 8))}


# ---- analytic ----------------------------------------------------------------------------------------------------
def ours_per_layer(batch: int, frames: int, hw: int, dim: int, n: int, elem: int, rank: int = 0) -> dict:
    """Bytes rank `rank` sends in one self-attention of one forward: q, k, v of its tokens for the other ranks'
    heads, and its heads of the attention output for the other ranks' tokens."""
    base, extra = divmod(hw, n)
    mine = base + (rank < extra)
    return {"qkv": 3 * batch * frames * mine * dim * (n - 1) // n * elem,
            "out": batch * frames * (hw - mine) * (dim // n) * elem}


def ours_gather(batch: int, frames: int, hw: int, head_out: int, n: int, elem: int, rank: int = 0) -> int:
    """Bytes of the once-per-forward gather of the head's output tokens (its copy to every other rank)."""
    base, extra = divmod(hw, n)
    return batch * frames * (base + (rank < extra)) * head_out * (n - 1) * elem


def whole_cache_per_layer(batch: int, q_tokens: int, kv_tokens: int, dim: int, n: int, elem: int) -> int:
    """Bytes one rank sends when every call all-to-alls q and out of the chunk and K, V of everything it attends
    (cache + chunk), each rank holding 1/N of the tokens: (N-1)/N of its share leaves the rank."""
    return (2 * q_tokens + 2 * kv_tokens) * batch * dim * (n - 1) * elem // (n * n)


# ---- counted -------------------------------------------------------------------------------------------------------
class CountingParallel(SequenceParallel):
    """rank 0 of N, no data moved; also books the whole-cache design's bytes for every self-attention call."""

    def __init__(self, size: int, elem: int):
        super().__init__(0, size, ShapeOnlyTransport())
        self.elem, self.whole_cache = elem, 0

    def attend_with(self, cache):
        inner = super().attend_with(cache)

        def attend(layer, q, k, v):
            cur = cache.current.frames * cache.tokens_per_frame
            kv = cache.committed_frames * cache.tokens_per_frame + cur
            b, dim = q.shape[0], q.shape[2] * q.shape[3]
            self.whole_cache += whole_cache_per_layer(b, cur, kv, dim, self.size, self.elem)
            return inner(layer, q, k, v)
        return attend


def video(preset: str, latent_frames: int, window: int | None) -> HiStreamConfig:
    if preset == "self_forcing":
        window = None
    return HiStreamConfig.preset(preset, width=WIDTH, height=HEIGHT, num_frames=pixel_frames_of(latent_frames),
                                 window_chunks=window)


def count_run(wan: WanConfig, cfg: HiStreamConfig, n: int, layers: int) -> list[dict]:
    """Per chunk: bytes rank 0 sent per layer (qkv, out, whole-cache design) and per forward (gather)."""
    from dataclasses import replace

    small = replace(wan, num_layers=layers)
    model = CausalWanModel(small, device="meta", dtype=torch.bfloat16)
    sp = CountingParallel(n, 2)
    pipe = HiStreamPipeline(model, cfg, output_device=None, parallel=sp)
    ctx = torch.zeros(1, TEXT_LEN, wan.text_dim)  # CPU (its finite check reads values); the pipeline moves it
    out, last = [], {"qkv": 0, "out": 0, "gather": 0, "whole": 0}
    forwards = {"n": 0}
    with torch.no_grad():
        for chunk in pipe.stream(ctx, seed=0, callback=lambda _i: forwards.__setitem__("n", forwards["n"] + 1)):
            now = {"qkv": sp.sent["qkv"], "out": sp.sent["out"], "gather": sp.sent["gather"], "whole": sp.whole_cache}
            d = {k: now[k] - last[k] for k in now}
            out.append({"chunk": chunk.index, "forwards": forwards["n"],
                        "ours_per_layer": (d["qkv"] + d["out"]) // layers, "gather": d["gather"],
                        "qkv_per_layer": d["qkv"] // layers, "out_per_layer": d["out"] // layers,
                        "whole_cache_per_layer": d["whole"] // layers})
            last, forwards["n"] = now, 0
    return out


def cache_bytes(wan: WanConfig, cfg: HiStreamConfig, n: int) -> dict:
    """KV cache bytes per rank (all layers, both resolutions) here, and with a full-length cache on every rank."""
    model = CausalWanModel(wan, device="meta", dtype=torch.bfloat16)
    sharded = HiStreamPipeline(model, cfg, parallel=SequenceParallel(0, n)).cache_nbytes()
    return {"head_sharded": sharded, "full_on_every_rank": HiStreamPipeline(model, cfg).cache_nbytes()}


def summarise(wan: WanConfig, rows: list[dict], n: int) -> dict:
    steady = rows[-2]  # the window is full and the chunk writes the cache (the last chunk writes nothing)
    per_chunk = {"ours": steady["ours_per_layer"] * wan.num_layers + steady["gather"],
                 "whole_cache": steady["whole_cache_per_layer"] * wan.num_layers + steady["gather"]}
    return {"ranks": n, "steady_chunk": steady["chunk"], "per_layer": {
        "ours": steady["ours_per_layer"], "whole_cache": steady["whole_cache_per_layer"]},
        "per_chunk_all_layers": per_chunk, "ratio": per_chunk["whole_cache"] / per_chunk["ours"],
        "projected_ms_per_chunk": {link: {k: 1e3 * v / (gbps * 1e9) for k, v in per_chunk.items()}
                                   for link, gbps in LINKS_GBPS.items()},
        "chunks": rows}


# (preset, window chunks, latent frames): HiStream's window (anchor 3 + 1 chunk) over 5 chunks, and Self-Forcing's
# unbounded cache over 21 latent frames (81 pixel frames, the full cache the causal families keep)
SETUPS = (("histream", 1, 15), ("histream_plus", 1, 15), ("self_forcing", None, 21))


def run(layers: int, setups=SETUPS) -> dict:
    results = []
    for name, (wan, ranks) in MODELS.items():
        for preset, window, latent_frames in setups:
            cfg = video(preset, latent_frames, window)
            for n in ranks:
                rows = count_run(wan, cfg, n, layers)
                results.append({"model": name, "preset": preset, "window_chunks": cfg.window_chunks,
                                "latent_frames": latent_frames, "cache_bytes_per_rank": cache_bytes(wan, cfg, n),
                                **summarise(wan, rows, n)})
                s = results[-1]
                print(f"{name} {preset:13s} N={n}: per chunk per layer ours {s['per_layer']['ours'] / 2**20:8.1f} MiB"
                      f", whole-cache {s['per_layer']['whole_cache'] / 2**20:8.1f} MiB (x{s['ratio']:.2f})",
                      flush=True)
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m bench.bench_parallel " + " ".join(sys.argv[1:]), "torch": torch.__version__,
            "python": platform.python_version(), "resolution": f"{WIDTH}x{HEIGHT}", "text_tokens": TEXT_LEN,
            "dtype": "bfloat16", "layers_run": layers, "links_GBps": LINKS_GBPS, "results": results}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/_out/parallel.json")
    ap.add_argument("--layers", type=int, default=2, help="blocks actually run (per-layer bytes are exact)")
    args = ap.parse_args(argv)
    res = run(args.layers)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

