"""Render a HiStream video latent headless, on one process or sequence-parallel over several (torchrun).

    torchrun --nproc-per-node N tools/render_parallel.py --model MODEL.safetensors --request REQUEST.pt \\
        --out LATENT.safetensors [--vace VACE.safetensors] [--dtype bf16] [--num-heads H]

Each process takes one GPU (NCCL) when CUDA is there, else the CPU (gloo). All processes form one
sequence-parallel group (histream_core/parallel.py): each keeps the KV cache of H/N heads and every process ends
with the whole latent; rank 0 writes it and prints one JSON line {"reports": [...]} with each rank's seconds,
cache GiB and bytes sent. N must divide the model's attention heads (12 for 1.3B, 40 for 14B).
The request (settings, prompts, negative, VACE control, seed) is written by
`histream_core.render_request.save_render_request`. The output holds `latent` [B, 16, T, H/8, W/8] float32 in the
model's normalised latent space (what HiStreamPipeline.generate returns) and the request's settings as metadata.
Without torchrun it runs as one process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds histream_core
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist

from histream_core import CausalWanModel, HiStreamPipeline
from histream_core.loading import load_wan_state_dict
from histream_core.parallel import parallel_from_environment, use_sequence_parallel_group
from histream_core.render_request import load_render_request
from histream_core.vace_loading import load_vace_state_dict

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a Wan2.1 T2V causal checkpoint (.safetensors/.pt)")
    ap.add_argument("--request", required=True, help="a render request (save_render_request)")
    ap.add_argument("--out", required=True, help="the latent file to write (.safetensors)")
    ap.add_argument("--vace", help="a Wan2.1 VACE module, needed when the request carries VACE control")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                    help="compute dtype (default: bf16 on CUDA, fp32 on the CPU)")
    ap.add_argument("--num-heads", type=int, help="attention heads, when the width is not 128 per head")
    return ap.parse_args(argv)


def init_group() -> tuple[torch.device, bool]:
    """Join torchrun's group (one per process); returns this process's device and whether a group exists."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), False
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    use_sequence_parallel_group(dist.group.WORLD)
    return device, True


def build_model(args, device: torch.device, dtype: torch.dtype) -> CausalWanModel:
    sd, cfg, _ = load_wan_state_dict(args.model)
    if args.num_heads:
        cfg = replace(cfg, num_heads=args.num_heads)
    vace_sd, layers = {}, None
    if args.vace:
        vace_sd, info = load_vace_state_dict(args.vace, cfg)
        layers = info["vace_layers"]
    with torch.device("meta"):
        model = CausalWanModel(cfg, vace_layers=layers)
    model.load_state_dict({**sd, **vace_sd}, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def main(argv=None) -> int:
    args = parse(argv)
    device, grouped = init_group()
    try:
        dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
        req = load_render_request(args.request)
        if req.control is not None and not args.vace:
            raise SystemExit("the request carries VACE control: pass the VACE module with --vace")
        model = build_model(args, device, dtype)
        parallel = parallel_from_environment()
        pipe = HiStreamPipeline(model, req.config, device=device, parallel=parallel)
        rank, size = (parallel.rank, parallel.size) if parallel is not None else (0, 1)
        t0 = time.perf_counter()
        latent = pipe.generate(req.context, seed=req.seed, control=req.control, negative=req.negative)
        seconds = time.perf_counter() - t0
        cache_gib = pipe.cache_nbytes(req.control) / 2**30
        report = {"rank": rank, "ranks": size, "seconds": round(seconds, 3), "cache_gib_this_rank":
                  round(cache_gib, 6), "bytes_sent": dict(parallel.sent) if parallel is not None else {},
                  "latent_shape": list(latent.shape)}
        reports = [report]
        if grouped:  # one line from rank 0 (torchrun interleaves the processes' output)
            reports = [None] * size
            dist.all_gather_object(reports, report)
        if rank == 0:
            from safetensors.torch import save_file

            print(json.dumps({"reports": reports}), flush=True)
            meta = {"histream": json.dumps({"ranks": size, "seed": req.seed, "space": "normalised model latent",
                                            "width": req.config.width, "height": req.config.height,
                                            "num_frames": req.config.num_frames})}
            save_file({"latent": latent.float().cpu().contiguous()}, args.out, metadata=meta)
        if grouped:  # tear down together: a rank that leaves while rank 0 still writes can abort in gloo's exit
            dist.barrier()
    finally:
        if grouped:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    # leave without interpreter teardown: gloo's worker threads can still hold tensors then and abort the process
    # ("terminate called without an active exception") after the work is done and the output written
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
