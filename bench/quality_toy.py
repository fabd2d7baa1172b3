"""Quality yardstick on the embedded toy model: what the prompt asked for vs what was generated.

    python -m bench.quality_toy [--pairs 50] [--frames 33] [--long 129] [--out bench/_out/quality_toy.json]

For each sampling mode (full-res Self-Forcing-style, histream, histream_plus, low-res-only + naive upsample) on the
same held-out prompt/seed pairs: colour accuracy (nearest named colour of the foreground), direction accuracy (the
centroid's initial displacement), temporal consistency (coefficient of variation of the object's area over the
frames, and the share of frames where the object is found), and drift on long videos (the same metrics measured on
the last quarter of a video 4x the training length: colour still right, object still present and of stable size).
FLOPs per pixel frame are counted from the real forwards (torch.utils.flop_counter) on the toy model. Sampling uses
the toy model's sampler (`--sampler euler`, the deterministic flow step; `renoise` = fresh noise every step) and
its guidance (`--cfg 3` against the empty prompt; the FLOPs count both guided rows).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from histream_toy.data import centroid_track, detect_color, detect_direction, object_area
from histream_toy.sampling import (
    PRESETS,
    TOY_GUIDANCE,
    generate_latent,
    held_out_pairs,
    load_toy_dit,
)

LABELS = {"self_forcing": "full-res (Self-Forcing-style)", "histream": "histream", "histream_plus": "histream_plus",
          "low_res_only": "low-res only + naive upsample"}


def video_metrics(video: torch.Tensor, spec) -> dict:
    area = object_area(video)
    present = (area > 0.01).float()
    found = area[area > 0.01]
    cv = (found.std() / found.mean()).item() if found.numel() > 1 else float("nan")
    return {"color": detect_color(video) == spec.color,
            "direction": detect_direction(centroid_track(video)) == spec.direction,
            "area_cv": cv, "present": present.mean().item()}


def tail_metrics(video: torch.Tensor, spec) -> dict:
    """Drift: the last quarter of a long video still shows the prompted colour, one object of stable size."""
    q = video[:, -max(2, video.shape[1] // 4):]
    m = video_metrics(q, spec)
    return {"tail_color": m["color"], "tail_present": m["present"], "tail_area_cv": m["area_cv"]}


def flops_per_frame(model, preset: str, frames: int, size: int, guidance: float = TOY_GUIDANCE) -> float:
    with FlopCounterMode(display=False) as fc:
        generate_latent("red circle moving right, fast", frames, 0, preset, size, model, guidance_scale=guidance)
    return fc.get_total_flops() / frames


def mean(xs) -> float:
    xs = [float(x) for x in xs if not math.isnan(float(x))]
    return statistics.fmean(xs) if xs else float("nan")


def run(pairs: int = 50, frames: int = 33, long: int = 129, long_pairs: int = 12, size: int = 128,
        sampler: str = "euler", guidance: float = TOY_GUIDANCE, log=print) -> dict:
    from histream_toy.autoencoder import load_toy_ae

    torch.manual_seed(0)
    model, ae = load_toy_dit(), load_toy_ae()
    evals = [(spec, seed) for spec, seed, _ in held_out_pairs(pairs, seed=7)]
    rows = {}
    for preset in PRESETS:
        t0 = time.perf_counter()
        short, drift = [], []
        with torch.no_grad():
            for spec, seed in evals:
                lat = generate_latent(spec.prompt, frames, seed, preset, size, model, sampler=sampler,
                                      guidance_scale=guidance)
                short.append(video_metrics(ae.decode(lat)[0], spec))
            for spec, seed in evals[:long_pairs]:
                lat = generate_latent(spec.prompt, long, seed, preset, size, model, sampler=sampler,
                                      guidance_scale=guidance)
                drift.append(tail_metrics(ae.decode(lat)[0], spec))
        rows[preset] = {
            "label": LABELS[preset], "pairs": len(short), "long_pairs": len(drift),
            "color_acc": mean(m["color"] for m in short), "direction_acc": mean(m["direction"] for m in short),
            "area_cv": mean(m["area_cv"] for m in short), "present": mean(m["present"] for m in short),
            "tail_color_acc": mean(m["tail_color"] for m in drift), "tail_present": mean(m["tail_present"] for m in drift),
            "tail_area_cv": mean(m["tail_area_cv"] for m in drift),
            "flops_per_frame": flops_per_frame(model, preset, frames, size, guidance),
            "seconds": time.perf_counter() - t0,
        }
        log(f"{preset}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[preset].items()})}")
    base = rows["self_forcing"]["flops_per_frame"]
    for r in rows.values():
        r["flops_vs_full_res"] = base / r["flops_per_frame"]
    anchors = anchor_ablation(model, ae, evals[:2 * long_pairs], long, size, sampler, guidance, log)
    return {"frames": frames, "long_frames": long, "size": size, "sampler": sampler, "guidance": guidance, "rows": rows,
            "anchor_ablation": anchors, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}


def anchor_ablation(model, ae, evals, long: int, size: int, sampler: str, guidance: float, log=print) -> dict:
    """HiStream on long videos with the anchor (the first latent frame kept for the whole video) and without it
    (the window of the last 3 chunks only): does the anchor keep the end of the video on the prompt?"""
    out = {}
    for anchor in (1, 0):
        tails, same = [], []
        with torch.no_grad():
            for spec, seed in evals:
                lat = generate_latent(spec.prompt, long, seed, "histream", size, model, sampler=sampler,
                                      guidance_scale=guidance, anchor_frames=anchor)
                video = ae.decode(lat)[0]
                tails.append(tail_metrics(video, spec))
                quarter = max(2, video.shape[1] // 4)  # does the end still show the colour the start showed?
                same.append(detect_color(video[:, :quarter]) == detect_color(video[:, -quarter:]))
        out[f"anchor {anchor}"] = {"long_pairs": len(tails), "tail_color_acc": mean(m["tail_color"] for m in tails),
                                   "tail_present": mean(m["tail_present"] for m in tails),
                                   "tail_area_cv": mean(m["tail_area_cv"] for m in tails),
                                   "start_end_same_color": mean(same)}
        log(f"anchor {anchor}: {out[f'anchor {anchor}']}")
    return out


def markdown(res: dict) -> str:
    head = (f"| mode | colour acc | direction acc | area CV (↓) | object present | long video ({res['long_frames']} fr): "
            f"tail colour acc | tail present | tail area CV | MFLOP / frame | FLOPs vs full-res |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in res["rows"].values():
        lines.append(f"| {r['label']} | {r['color_acc']:.2f} | {r['direction_acc']:.2f} | {r['area_cv']:.3f} | "
                     f"{r['present']:.2f} | {r['tail_color_acc']:.2f} | {r['tail_present']:.2f} | "
                     f"{r['tail_area_cv']:.3f} | {r['flops_per_frame'] / 1e6:,.0f} | {r['flops_vs_full_res']:.2f}× |")
    table = head + "\n".join(lines) + "\n"
    if res.get("anchor_ablation"):
        table += (f"\n| histream, {res['long_frames']} frames, window 3 | pairs | tail colour acc | tail present | "
                  f"tail area CV | end colour = start colour |\n|---|---|---|---|---|---|\n")
        for name, r in res["anchor_ablation"].items():
            table += (f"| {name} | {r['long_pairs']} | {r['tail_color_acc']:.2f} | {r['tail_present']:.2f} | "
                      f"{r['tail_area_cv']:.3f} | {r['start_end_same_color']:.2f} |\n")
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--long", type=int, default=129, help="long-video length (4x the 33-frame training clips)")
    ap.add_argument("--long-pairs", type=int, default=12)
    ap.add_argument("--sampler", choices=("euler", "renoise"), default="euler",
                    help="euler: deterministic flow steps (the toy model's sampler); renoise: fresh noise every step")
    ap.add_argument("--cfg", type=float, default=TOY_GUIDANCE,
                    help="classifier-free guidance against the empty prompt (1 = off)")
    ap.add_argument("--out", type=Path, default=Path("bench/_out/quality_toy.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    res = run(args.pairs, args.frames, args.long, args.long_pairs, sampler=args.sampler, guidance=args.cfg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
