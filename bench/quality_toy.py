"""Quality yardstick on the embedded toy model: what a person sees in the generated video against its prompt.

    python -m bench.quality_toy [--pairs 200] [--frames 129] [--anchor-pairs 200] [--latents DIR]
                                [--out bench/_out/quality_toy.json]

Every mode (histream, full-res Self-Forcing-style, histream_plus) generates the same held-out prompt/seed pairs
(`sampling.held_out_pairs(n, seed=7)`) at `--frames` (129 = 4x the 33-frame training clips), batched through the
pipeline (row b gets its pair's own noise seed, as a batch-1 run with that seed would); histream also runs without
the anchor (anchor 0) on the first `--anchor-pairs`. Latents are kept under `--latents` so that scoring can be
rerun without generating again (`--score-only`). Each decoded video is scored by `histream_toy.metrics`: per
frame one object of the prompted colour, its shape, area, compactness, speed and direction, all of them at once
(over the video and its last 32 frames), and identity kept (frame 0's object size, background tint and gradient in
the last 32 frames). Differences between modes are paired (the same pairs) with 95 % paired-bootstrap intervals.
FLOPs per pixel frame are counted from the real forwards (torch.utils.flop_counter), both guided rows included.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from histream_toy.sampling import (
    NEGATIVE_PROMPT,
    TOY_GUIDANCE,
    TOY_SAMPLER,
    generate_latent,
    held_out_pairs,
    load_toy_dit,
    toy_config,
)

MODES = {  # run name -> (preset, config overrides, label)
    "histream": ("histream", {}, "histream"),
    "self_forcing": ("self_forcing", {}, "full-res (Self-Forcing-style)"),
    "histream_plus": ("histream_plus", {}, "histream_plus"),
    "histream_anchor0": ("histream", {"anchor_frames": 0}, "histream, anchor 0"),
}
PAIRED = (("histream", "self_forcing"), ("histream_plus", "histream"), ("histream_plus", "self_forcing"),
          ("histream", "histream_anchor0"))
EVAL_SEED = 7  # held_out_pairs(n, seed=7): the yardstick's pairs since it was written


class RowSeeds:
    """Pipeline noise for a batch whose row b draws from its own generator seeded with seeds[b] (NoiseSource
    seeds row b with seed + b)."""

    def __init__(self, seeds):
        self.generators = [torch.Generator("cpu").manual_seed(int(s) % 2**64) for s in seeds]

    def __call__(self, shape):
        return torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in self.generators])


@torch.no_grad()
def generate_batch(prompts, seeds, frames: int, preset: str, size: int, model, sampler: str = TOY_SAMPLER,
                   guidance: float = TOY_GUIDANCE, **overrides) -> torch.Tensor:
    """Latents [B, 16, T, size/8, size/8] of B prompts with their own noise seeds in one pipeline run."""
    from histream_toy._engine import HiStreamPipeline
    from histream_toy.text import encode_prompt

    cfg = toy_config(frames, size, preset, sampler=sampler, batch_size=len(prompts), guidance_scale=guidance,
                     **overrides)
    negative = encode_prompt(NEGATIVE_PROMPT) if cfg.guided else None
    context = torch.cat([encode_prompt(p) for p in prompts])
    return HiStreamPipeline(model, cfg).generate(context, noise=RowSeeds(seeds), negative=negative)


def flops_per_frame(model, preset: str, frames: int, size: int, guidance: float = TOY_GUIDANCE, **overrides) -> float:
    with FlopCounterMode(display=False) as fc:
        generate_latent("red circle moving right, fast", frames, 0, preset, size, model, guidance_scale=guidance,
                        **overrides)
    return fc.get_total_flops() / frames


def generate_all(latents: Path, pairs: int, frames: int, anchor_pairs: int, size: int, batch: int, sampler: str,
                 guidance: float, log=print) -> dict:
    """Generate every mode's latents batch by batch into `latents`/<mode>_<first pair>.pt (existing files are kept,
    so an interrupted run resumes); returns the seconds spent per mode."""
    model = load_toy_dit()
    evals = [(spec, seed) for spec, seed, _ in held_out_pairs(pairs, seed=EVAL_SEED)]
    latents.mkdir(parents=True, exist_ok=True)
    seconds = dict.fromkeys(MODES, 0.0)
    jobs = [(start, mode) for start in range(0, pairs, batch) for mode in MODES
            if mode != "histream_anchor0" or start < anchor_pairs]
    for start, mode in jobs:  # every mode of a batch before the next batch: a partial run stays paired
        preset, overrides, _ = MODES[mode]
        part = evals[start:start + batch]
        path = latents / f"{mode}_{start:04d}.pt"
        if path.exists():
            continue
        t0 = time.perf_counter()
        lat = generate_batch([s.prompt for s, _ in part], [seed for _, seed in part], frames, preset, size,
                             model, sampler, guidance, **overrides)
        seconds[mode] += time.perf_counter() - t0
        torch.save({"latent": lat, "prompts": [s.prompt for s, _ in part], "seeds": [seed for _, seed in part],
                    "frames": frames, "size": size, "sampler": sampler, "guidance": guidance}, path)
        log(f"{mode} pairs {start}-{start + len(part) - 1}: {seconds[mode]:.0f} s so far")
    return seconds


SCORES = ("one_object", "shape", "area", "compact", "speed", "direction", "all", "all_tail", "initial_direction",
          "speed_class", "identity_size", "identity_tint", "identity_gradient", "identity_all")


@torch.no_grad()
def score_latents(latents: Path, ae, pairs: int | None = None, log=print) -> dict:
    """mode -> per-pair score dicts, in pair order, of the saved latents (a file <mode>_<first pair>.pt holds the
    pairs from its first one on), decoded by the toy autoencoder; only the first `pairs` pairs when given, and for
    each mode only its pairs 0..n-1 without a gap."""
    from histream_toy.metrics import video_scores

    out = {}
    for mode in MODES:
        rows = {}
        for path in sorted(latents.glob(f"{mode}_[0-9]*.pt")):
            start = int(path.stem.rsplit("_", 1)[1])
            saved = torch.load(path)
            for b, prompt in enumerate(saved["prompts"]):
                i = start + b
                if i in rows or (pairs is not None and i >= pairs):
                    continue
                video = ae.decode(saved["latent"][b:b + 1])[0]
                rows[i] = {"pair": i, "prompt": prompt, "seed": saved["seeds"][b], **video_scores(video, prompt)}
        n = next((i for i in range(len(rows) + 1) if i not in rows), 0)
        if n:
            out[mode] = [rows[i] for i in range(n)]
            log(f"scored {mode}: {n} videos")
    return out


@torch.no_grad()
def validate_detectors(specs: int, frames: int, size: int, ae, seed: int = 11) -> dict:
    """The detectors on rendered videos: true ones (as rendered and through the toy autoencoder, what the
    yardstick scores), the spoiled controls (through the autoencoder) and chance: a true video of another random
    spec scored against this one's prompt (a perfect generator that ignores the prompt); for identity, this prompt's
    true video whose frame 0 comes from another seed's layout (size, tint, gradient forgotten after frame 0)."""
    from histream_toy.data import random_spec, render
    from histream_toy.metrics import CONTROLS, control_video, video_scores

    rng = random.Random(f"toy-detectors-{seed}")
    pool = [random_spec(rng) for _ in range(2 * specs)]
    rows = {k: [] for k in ("true", "true_ae", *CONTROLS, "chance")}

    def rt(v):
        return ae.decode(ae.encode(v.unsqueeze(0)))[0]

    for spec, other in zip(pool[:specs], pool[specs:]):
        video = render(spec, frames, size, size)
        rows["true"].append(video_scores(video, spec.prompt))
        decoded = rt(video)
        rows["true_ae"].append(video_scores(decoded, spec.prompt))
        for kind in CONTROLS:
            rows[kind].append(video_scores(rt(control_video(spec, kind, frames, size, size)), spec.prompt))
        chance = video_scores(rt(render(other, frames, size, size)), spec.prompt)
        # identity's chance: the prompt drawn right but frame 0's look forgotten (another seed's layout)
        forgot = rt(render(dataclasses.replace(spec, background=other.background, seed=other.seed), frames, size, size))
        spliced = video_scores(torch.cat([forgot[:, :1], decoded[:, 1:]], dim=1), spec.prompt)
        rows["chance"].append({**chance, **{m: v for m, v in spliced.items() if m.startswith("identity_")}})
    return {k: {m: mean(r[m] for r in v) for m in SCORES} for k, v in rows.items()}


def mean(xs) -> float:
    xs = [float(x) for x in xs if not math.isnan(float(x))]
    return statistics.fmean(xs) if xs else float("nan")


def bootstrap_interval(values, resamples: int = 10000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (for paired differences: the per-pair differences,
    i.e. the paired bootstrap: pairs are resampled together)."""
    x = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if x.numel() == 0:
        return float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x.numel(), (resamples, x.numel()), generator=g)
    means = x[idx].mean(dim=1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return lo, hi


def summarise(scores: dict, seed: int = 0) -> dict:
    """Per mode: mean and 95 % bootstrap interval of each score; per PAIRED comparison (on the pairs both modes
    have): the mean per-pair difference and its 95 % paired-bootstrap interval."""
    modes = {}
    for mode, rows in scores.items():
        modes[mode] = {"label": MODES[mode][2], "pairs": len(rows),
                       **{m: {"mean": mean(r[m] for r in rows), "ci": bootstrap_interval([r[m] for r in rows],
                                                                                        seed=seed)} for m in SCORES}}
    paired = {}
    for a, b in PAIRED:
        if a not in scores or b not in scores:
            continue
        n = min(len(scores[a]), len(scores[b]))
        assert all(x["prompt"] == y["prompt"] and x["seed"] == y["seed"] for x, y in zip(scores[a][:n], scores[b][:n]))
        diffs = {m: [x[m] - y[m] for x, y in zip(scores[a][:n], scores[b][:n])] for m in SCORES}
        paired[f"{a} - {b}"] = {"pairs": n, **{m: {"mean": mean(d), "ci": bootstrap_interval(d, seed=seed)}
                                               for m, d in diffs.items()}}
    return {"modes": modes, "paired": paired, "interval": "95 % percentile bootstrap, 10000 resamples of the pairs"}


def run(pairs: int = 200, frames: int = 129, anchor_pairs: int = 200, size: int = 128, batch: int = 50,
        sampler: str = TOY_SAMPLER, guidance: float = TOY_GUIDANCE, latents: Path | None = None,
        validate_specs: int = 24, flop_frames: int = 33, generate: bool = True, log=print) -> dict:
    """Generate (unless `generate` is False: score what `latents` holds), score, validate the detectors and count
    FLOPs; returns everything markdown() and the JSON need."""
    import tempfile

    from histream_toy.autoencoder import load_toy_ae

    torch.manual_seed(0)
    ae = load_toy_ae()
    tmp = None
    if latents is None:
        tmp = tempfile.TemporaryDirectory()
        latents = Path(tmp.name)
    seconds = {}
    t0 = time.perf_counter()
    if generate:
        seconds = generate_all(latents, pairs, frames, anchor_pairs, size, batch, sampler, guidance, log)
    t1 = time.perf_counter()
    scores = score_latents(latents, ae, pairs, log)
    t2 = time.perf_counter()
    validation = validate_detectors(validate_specs, frames, size, ae) if validate_specs else {}
    model = load_toy_dit()
    flops = {mode: flops_per_frame(model, preset, flop_frames, size, guidance, **overrides)
             for mode, (preset, overrides, _) in MODES.items()}
    if tmp is not None:
        tmp.cleanup()
    return {"frames": frames, "size": size, "sampler": sampler, "guidance": guidance, "eval_seed": EVAL_SEED,
            "summary": summarise(scores), "validation": validation, "validate_specs": validate_specs,
            "flops_per_frame": flops, "flop_frames": flop_frames, "generate_seconds": seconds,
            "wall_seconds": {"generate": t1 - t0, "score": t2 - t1, "validate_and_flops": time.perf_counter() - t2},
            "scores": scores, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}


COLUMNS = (("one_object", "1 object"), ("shape", "shape"), ("area", "area"), ("compact", "compact"),
           ("speed", "speed"), ("direction", "direction"), ("all", "all at once"), ("all_tail", "all, last 32"),
           ("initial_direction", "initial dir. (video)"), ("speed_class", "speed class (video)"),
           ("identity_all", "identity kept"))


def markdown(res: dict) -> str:
    summ, val = res["summary"], res["validation"]
    f = res["frames"]
    head = ("| " + " | ".join(["videos", "pairs", *(c for _, c in COLUMNS), "MFLOP / frame"]) + " |\n|"
            + "---|" * (len(COLUMNS) + 3) + "\n")
    lines = []
    names = {"true": "true videos, as rendered", "true_ae": "true videos through the toy AE",
             "stripe": "control: stripe (AE)", "smear": "control: smear (AE)", "blob": "control: lumpy blob (AE)",
             "two_objects": "control: two objects (AE)", "chance": "chance: true video of another prompt (AE)"}
    for k, r in val.items():
        lines.append(f"| {names[k]} | {res['validate_specs']} | " + " | ".join(f"{r[m]:.2f}" for m, _ in COLUMNS)
                     + " | |")
    for mode, r in summ["modes"].items():
        cells = [f"{r[m]['mean']:.2f}" for m, _ in COLUMNS]
        lines.append(f"| **{r['label']}** | {r['pairs']} | " + " | ".join(cells)
                     + f" | {res['flops_per_frame'][mode] / 1e6:,.0f} |")
    table = head + "\n".join(lines) + "\n"
    table += (f"\nPer-frame checks are shares of the {f} frames (\"all, last 32\": of the last 32); video-level "
              "columns are shares of videos. Paired differences (same prompt/seed pairs), mean and "
              f"{summ['interval']}:\n\n| difference | pairs | " + " | ".join(c for _, c in COLUMNS) + " |\n|"
              + "---|" * (len(COLUMNS) + 2) + "\n")
    for name, r in summ["paired"].items():
        table += f"| {name} | {r['pairs']} | " + " | ".join(
            f"{r[m]['mean']:+.2f} [{r[m]['ci'][0]:+.2f}, {r[m]['ci'][1]:+.2f}]" for m, _ in COLUMNS) + " |\n"
    if "histream_anchor0" in summ["modes"]:
        a1, a0 = summ["modes"]["histream"], summ["modes"]["histream_anchor0"]
        d = summ["paired"].get("histream - histream_anchor0", {})
        table += ("\n| identity kept, frame 0 vs the last 32 | pairs | size | background tint | gradient | all three |\n"
                  "|---|---|---|---|---|---|\n")
        for label, r in (("histream, anchor 1", a1), ("histream, anchor 0", a0)):
            table += f"| {label} | {r['pairs']} | " + " | ".join(
                f"{r[m]['mean']:.2f} [{r[m]['ci'][0]:.2f}, {r[m]['ci'][1]:.2f}]"
                for m in ("identity_size", "identity_tint", "identity_gradient", "identity_all")) + " |\n"
        if d:
            table += f"| anchor 1 - anchor 0 (paired) | {d['pairs']} | " + " | ".join(
                f"{d[m]['mean']:+.2f} [{d[m]['ci'][0]:+.2f}, {d[m]['ci'][1]:+.2f}]"
                for m in ("identity_size", "identity_tint", "identity_gradient", "identity_all")) + " |\n"
        if "identity_all" in val.get("true_ae", {}):
            table += (f"| true videos through the AE / chance | {res['validate_specs']} | " + " | ".join(
                f"{val['true_ae'][m]:.2f} / {val['chance'][m]:.2f}"
                for m in ("identity_size", "identity_tint", "identity_gradient", "identity_all")) + " |\n")
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--frames", type=int, default=129, help="pixel frames (129 = 4x the 33-frame training clips)")
    ap.add_argument("--anchor-pairs", type=int, default=200, help="pairs also generated without the anchor")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=50, help="videos per pipeline run")
    ap.add_argument("--sampler", choices=("euler", "renoise"), default=TOY_SAMPLER)
    ap.add_argument("--cfg", type=float, default=TOY_GUIDANCE, help="guidance against the empty prompt (1 = off)")
    ap.add_argument("--latents", type=Path, default=Path("bench/_out/quality_toy_latents"))
    ap.add_argument("--validate-specs", type=int, default=24, help="rendered specs for the detector validation rows")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 is steadier on a shared machine)")
    ap.add_argument("--generate-only", action="store_true", help="only generate the latents")
    ap.add_argument("--score-only", action="store_true", help="only score the latents already under --latents")
    ap.add_argument("--out", type=Path, default=Path("bench/_out/quality_toy.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.generate_only:
        t0 = time.perf_counter()
        seconds = generate_all(args.latents, args.pairs, args.frames, args.anchor_pairs, args.size, args.batch,
                               args.sampler, args.cfg)
        print(json.dumps({"generate_seconds": seconds, "wall": time.perf_counter() - t0}))
        return 0
    res = run(args.pairs, args.frames, args.anchor_pairs, args.size, args.batch, args.sampler, args.cfg,
              args.latents, args.validate_specs, generate=not args.score_only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
