"""CPU benchmark of the Wan2.1 VAE decode: streaming (chunk by chunk, nodes/stream_decode.py) against stock
`VAEDecode` and `VAEDecodeTiled`, on the host's VAE (ComfyUI `comfy.sd.VAE`) with random weights; on hosts with
TAEHV (ComfyUI >= v0.8.0) also the Wan 2.1 tiny decoder (TAE, the real architecture with random weights), streamed
and through stock `VAEDecode` (its whole-video decode), and the ratios TAE / Wan VAE.

Each decoder runs in its own child process, so that each peak memory is its own. Measured per decoder:
- each decode runs `--repeats` times in its child; the times reported are the best of them (the machine's other
  jobs only add time), every repeat's time is kept in the JSON;
- time to first frame: from the start of decoding until the first pixel frames exist (streaming: when the first
  chunk's decode returns; the stock nodes return the whole video at once, so for them it is the total);
- total decode time (the streaming decoder is fed `--chunk`-frame chunks back to back; inside HiStream each chunk is
  decoded between that chunk and the next, in the same thread, so the first frames exist after the first chunk
  instead of after the whole video, while the summed time is unchanged);
- peak resident memory above the resident memory just before decoding (sampled every 2 ms);
- exactness: streaming and tiled output against stock VAEDecode of the same decoder (max |difference|, bitwise);
- the host's own decode memory estimate (`memory_used_decode`, bf16) at 1080p for one 3-latent-frame chunk (what a
  streaming decode reserves) and for the whole 81-frame video (what stock VAEDecode reserves).

Run from the repository root:  python -m bench.bench_decode [--tiny] [--out bench/_out/decode.json]
`--tiny` (for tests, seconds): an 8-wide VAE (96-wide on hosts that build no other, see host_vae), 16×16
pixels, 3 latent frames. The host is found through
--comfyui, $COMFYUI_PATH or ../shared/comfyui.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.bench_cpu import cpu_name

REPO = Path(__file__).resolve().parent.parent
METHODS = ("stock", "stream", "tiled", "tae_stock", "tae_stream")  # tae_*: hosts with TAEHV only
LATENT_1080P = (136, 240)  # 1920×1088 / 8
PACK = "histream_bench_pack"


# ---- the host ------------------------------------------------------------------------------------------------
def find_comfyui(explicit: str | None) -> Path:
    for c in (explicit, os.environ.get("COMFYUI_PATH"), REPO.parent / "shared" / "comfyui", REPO / ".comfy_host"):
        if c and (Path(c) / "comfy" / "sd.py").is_file() and (Path(c) / "nodes.py").is_file():
            return Path(c).resolve()
    raise SystemExit("no ComfyUI host: give --comfyui PATH or set COMFYUI_PATH")


def import_host(root: Path) -> None:
    """The host's modules on the CPU, as ComfyUI imports them as a library; nothing is written into its tree."""
    if "comfy" in sys.modules:  # already imported (the tests' in-process host)
        return
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(root))
    import comfy.options  # noqa: F401  - arguments come from an empty command line
    from comfy.cli_args import args

    args.cpu = True
    args.base_directory = tempfile.mkdtemp(prefix="histream-bench-")  # folder_paths creates folders here


def load_stream_decode():
    """This repository's nodes/stream_decode.py, imported through the pack as ComfyUI would load it."""
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    return importlib.import_module(PACK + ".nodes.stream_decode")


def random_wan_vae(dim: int, seed: int = 0):
    """The host's WanVAE (Wan2.1 layout) with random weights scaled so that activations stay O(1)."""
    from comfy.ldm.wan.vae import WanVAE

    torch.manual_seed(seed)
    vae = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True])
    with torch.no_grad():  # the host's ops skip weight init: fill every parameter
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.normal_(1.0, 0.1)
            elif p.ndim == 1:
                p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, p[0].numel() ** -0.5)
    return vae.eval()


def host_vae(dim: int = 8, seed: int = 0):
    """A `comfy.sd.VAE` built by the host's public path (`comfy.sd.VAE(sd=...)`) from the full state dict of a
    random Wan2.1 VAE of width `dim` (96 = the real 127M one). v0.8.0 reads the width from `decoder.head.0.gamma`;
    v0.3.64 builds only the 96-wide layout from a state dict (its Wan2.1 config is fixed, a narrower state dict
    does not fit it), so there any width gives the 96-wide VAE: check `first_stage_model.dim` for the width built."""
    import comfy.sd

    try:
        return comfy.sd.VAE(sd=random_wan_vae(dim, seed).state_dict())
    except RuntimeError:  # size mismatch: a host with the fixed 96-wide Wan2.1 config
        if dim == 96:
            raise
        return comfy.sd.VAE(sd=random_wan_vae(96, seed).state_dict())


def tae_shapes(latent_channels: int = 16) -> dict[str, tuple[int, ...]]:
    """Every tensor of a TAEHV file (madebyollin's taehv layout, as ComfyUI ≥ v0.8.0 reads it: `decoder.N.*`,
    `encoder.N.*`), written from the published architecture: n_f = 256/128/64/64 decoder widths, 64 in the encoder,
    MemBlocks of three 3×3 convolutions over [x, past], TGrow/TPool 1×1 convolutions without bias. Pixels are
    patched 2×2 for the 48- and 32-channel latents (Wan 2.2, HunyuanVideo 1.5)."""
    rgb = 3 * (4 if latent_channels in (48, 32) else 1)
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, n_in, n_out, k=3, bias=True):
        shapes[f"{name}.weight"] = (n_out, n_in, k, k)
        if bias:
            shapes[f"{name}.bias"] = (n_out,)

    def mem(name, n):
        conv(f"{name}.conv.0", 2 * n, n)
        conv(f"{name}.conv.2", n, n)
        conv(f"{name}.conv.4", n, n)

    conv("encoder.0", rgb, 64)
    for pool, stride in ((2, 2), (7, 2), (12, 1)):  # TPool(64, stride), a strided conv, three MemBlocks
        conv(f"encoder.{pool}.conv", 64 * stride, 64, k=1, bias=False)
        conv(f"encoder.{pool + 1}", 64, 64, bias=False)
        for i in range(pool + 2, pool + 5):
            mem(f"encoder.{i}", 64)
    conv("encoder.17", 64, latent_channels)
    conv("decoder.1", latent_channels, 256)
    for first, n, grow, n_next in ((3, 256, 1, 128), (9, 128, 2, 64), (15, 64, 2, 64)):  # 3 MemBlocks, upsample,
        for i in range(first, first + 3):  # TGrow(n, grow), conv to the next width
            mem(f"decoder.{i}", n)
        conv(f"decoder.{first + 4}.conv", n, n * grow, k=1, bias=False)
        conv(f"decoder.{first + 5}", n, n_next, bias=False)
    conv("decoder.22", 64, rgb)
    return shapes


def random_tae_state_dict(latent_channels: int = 16, seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """A TAEHV state dict with random weights at the real size (the architecture is fixed), scaled so that the
    decoded frames stay O(1) around 0.5. Stored in `dtype`: ComfyUI v0.8.0 reads a 16-channel file in fp16 as
    HunyuanVideo's taehv and in any other dtype as Wan 2.1's lighttaew2_1."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in tae_shapes(latent_channels).items():
        if len(shape) == 1:
            t = torch.randn(shape, generator=g) * 0.05 + (0.5 if name == "decoder.22.bias" else 0.0)
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            gain = 0.5 if name.endswith("conv.4.weight") else 1.2  # a MemBlock's last conv: a small residual
            gain = 0.2 if name == "decoder.22.weight" else gain  # the RGB conv: frames mostly inside 0..1
            t = torch.randn(shape, generator=g) * gain / fan_in ** 0.5
        sd[name] = t.to(dtype)
    return sd


def host_tae(latent_channels: int = 16, seed: int = 0, dtype=torch.float32):
    """A `comfy.sd.VAE` built by the host's public path from a random TAE state dict (None of a model on hosts
    without TAEHV: `first_stage_model` is then None)."""
    import comfy.sd

    return comfy.sd.VAE(sd=random_tae_state_dict(latent_channels, seed, dtype))


# ---- one decoder in this process -------------------------------------------------------------------------------
class PeakRSS:
    """Peak resident memory while the block runs, sampled by a thread (torch's CPU allocator keeps no stats)."""

    def __init__(self, every_s: float = 0.002):
        import psutil

        self.proc, self.every, self.peak, self._stop = psutil.Process(), every_s, 0, threading.Event()

    def __enter__(self):
        self.base = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def run_one(method: str, opts) -> dict:
    if not opts.inline:
        torch.set_num_threads(opts.threads)
    import_host(find_comfyui(opts.comfyui))
    import nodes as comfy_nodes  # ComfyUI's nodes.py

    sdec = load_stream_decode()
    tae = method.startswith("tae_")
    vae = host_tae(seed=0) if tae else host_vae(opts.dim, seed=0)
    raw = torch.randn(1, 16, opts.frames, opts.height // 8, opts.width // 8, generator=torch.Generator().manual_seed(1))
    samples = {"samples": raw}
    tiled = dict(tile_size=opts.tile, overlap=opts.overlap, temporal_size=opts.temporal,
                 temporal_overlap=opts.temporal_overlap)
    with torch.no_grad():
        sdec.StreamingDecode(vae, 1, 2).decode(raw[:, :, :2])  # warm-up (kernels, allocator) at a small size
    totals, firsts, peaks = [], [], []
    for _ in range(opts.repeats):  # best of N: the machine's other jobs only ever add time
        first = None
        with PeakRSS() as mem, torch.inference_mode():  # ComfyUI runs every node under inference mode
            t0 = time.perf_counter()
            if method in ("stream", "tae_stream"):
                dec = sdec.StreamingDecode(vae, 1, opts.frames)
                for start in range(0, opts.frames, opts.chunk):
                    dec.decode(raw[:, :, start:start + opts.chunk])
                    first = first if first is not None else time.perf_counter() - t0
                images = dec.images()
                dec.release()
            elif method in ("stock", "tae_stock"):
                images = comfy_nodes.VAEDecode().decode(vae, samples)[0]
            else:
                images = comfy_nodes.VAEDecodeTiled().decode(vae, samples, **tiled)[0]
            totals.append(time.perf_counter() - t0)
            firsts.append(first if first is not None else totals[-1])
        peaks.append(mem.peak - mem.base)
    total = min(totals)
    estimate = {f"estimate_1080p_{name}_bytes": int(vae.memory_used_decode((1, 16, t, *LATENT_1080P), torch.bfloat16))
                for name, t in (("chunk3", 3), ("whole81", 21))}
    return {"method": method, "decoder": "TAE (lighttaew2_1 layout)" if tae else "Wan2.1 VAE",
            "vae_width": None if tae else vae.first_stage_model.dim,
            "parameters": sum(p.numel() for p in vae.first_stage_model.parameters()),
            "time_to_first_frame_s": min(firsts), "total_s": total, "total_s_each": totals,
            "time_to_first_frame_s_each": firsts,
            "time_per_frame_s": total / int(images.shape[0]), "peak_rss_above_start_bytes": max(peaks),
            "pixel_frames": int(images.shape[0]), **estimate, "images": images}


# ---- the parent: one child per decoder -------------------------------------------------------------------------
def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="seconds-long smoke run (tests)")
    ap.add_argument("--out", default=str(REPO / "bench" / "_out" / "decode.json"))
    ap.add_argument("--comfyui", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=96, help="VAE width (96 = the real Wan2.1 VAE)")
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--frames", type=int, default=9, help="latent frames")
    ap.add_argument("--chunk", type=int, default=3, help="latent frames per streamed chunk (HiStream's chunk)")
    ap.add_argument("--tile", type=int, default=64, help="VAEDecodeTiled tile_size (pixels)")
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--temporal", type=int, default=16, help="VAEDecodeTiled temporal_size (pixel frames)")
    ap.add_argument("--temporal-overlap", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1, help="decode N times; times are the best of N")
    ap.add_argument("--methods", default=None,
                    help=f"comma-separated subset of {','.join(METHODS)} (default: all this host has)")
    ap.add_argument("--inline", action="store_true",
                    help="run the decoders in this process (a smoke test: the memory peaks are then shared)")
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.tiny:
        opts.dim, opts.width, opts.height, opts.frames, opts.chunk = 8, 16, 16, 3, 2
    return opts


def child_argv(opts, method: str, out: Path) -> list[str]:
    argv = [sys.executable, "-m", "bench.bench_decode", "--child", method, "--child-out", str(out)]
    for name in ("comfyui", "threads", "dim", "width", "height", "frames", "chunk", "tile", "overlap", "temporal",
                 "temporal_overlap", "repeats"):  # --methods is the parent's
        value = getattr(opts, name)
        if value is not None:
            argv += ["--" + name.replace("_", "-"), str(value)]
    return argv


def methods(opts) -> list[str]:
    """The decoders to run: --methods, else all, the TAE ones only where the host has TAEHV (ComfyUI >= v0.8.0)."""
    if opts.methods:
        chosen = opts.methods.split(",")
        unknown = sorted(set(chosen) - set(METHODS))
        if unknown:
            raise SystemExit(f"unknown --methods {unknown}: choose from {METHODS}")
        return chosen
    has_tae = (find_comfyui(opts.comfyui) / "comfy" / "taesd" / "taehv.py").is_file()
    return [m for m in METHODS if has_tae or not m.startswith("tae_")]


def reference_of(method: str) -> str:
    """Each decoder is compared with stock VAEDecode of the same model."""
    return "tae_stock" if method.startswith("tae_") else "stock"


def ratios(rows: dict[str, dict]) -> dict[str, float]:
    """TAE against the Wan VAE, streaming against whole-video (where both ran)."""
    out = {}
    pairs = {"tae_stream/stream": ("tae_stream", "stream"), "tae_stock/stock": ("tae_stock", "stock"),
             "stream/stock": ("stream", "stock"), "tae_stream/tae_stock": ("tae_stream", "tae_stock")}
    for name, (a, b) in pairs.items():
        if a in rows and b in rows:
            for key in ("time_per_frame_s", "time_to_first_frame_s", "peak_rss_above_start_bytes",
                        "estimate_1080p_chunk3_bytes", "estimate_1080p_whole81_bytes"):
                if rows[b][key]:
                    out[f"{name} {key}"] = rows[a][key] / rows[b][key]
    return out


def table(results: list[dict]) -> str:
    rows = [("| decoder | time to first frame (s) | total (s) | time per frame (s) | peak RSS above start (MiB) | "
             "1080p estimate, 1 chunk / 81 frames (GiB) | vs stock VAEDecode of the same model |"),
            "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        exact = "bitwise equal" if r["bitwise_equal_to_stock"] else f"max abs diff {r['max_abs_diff_to_stock']:.3g}"
        rows.append(f"| {r['method']} | {r['time_to_first_frame_s']:.2f} | {r['total_s']:.2f} | "
                    f"{r['time_per_frame_s']:.3f} | {r['peak_rss_above_start_bytes'] / 2**20:.0f} | "
                    f"{r['estimate_1080p_chunk3_bytes'] / 2**30:.1f} / {r['estimate_1080p_whole81_bytes'] / 2**30:.1f}"
                    f" | {exact} |")
    return "\n".join(rows)


def main(argv=None) -> dict:
    opts = parse(argv)
    if opts.child:
        rec = run_one(opts.child, opts)
        torch.save(rec, opts.child_out)
        return rec
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods(opts):
            if opts.inline:
                results.append(run_one(method, opts))
                continue
            out = Path(tmp) / f"{method}.pt"
            subprocess.run(child_argv(opts, method, out), check=True, cwd=REPO)
            results.append(torch.load(out))
    images = {r["method"]: r.pop("images") for r in results}
    for r in results:
        img, ref = images[r["method"]], images.get(reference_of(r["method"]))
        same_shape = ref is not None and img.shape == ref.shape
        r["bitwise_equal_to_stock"] = bool(same_shape and torch.equal(img, ref))
        r["max_abs_diff_to_stock"] = float((img - ref).abs().max()) if same_shape else float("nan")
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": opts.threads, "torch": torch.__version__,
                    "python": platform.python_version(), "comfyui": host_version(find_comfyui(opts.comfyui))},
        "setup": {k: getattr(opts, k) for k in ("inline", "dim", "width", "height", "frames", "chunk", "tile", "overlap",
                                                "temporal", "temporal_overlap", "repeats")},
        "results": results,
        "ratios": ratios({r["method"]: r for r in results}),
    }
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(results))
    for name, value in report["ratios"].items():
        print(f"{name}: {value:.3g}")
    return report


def host_version(root: Path) -> str:
    text = (root / "comfyui_version.py").read_text() if (root / "comfyui_version.py").is_file() else ""
    found = [line.split('"')[1] for line in text.splitlines() if line.startswith("__version__")]
    return found[0] if found else "unknown"


if __name__ == "__main__":
    main()
