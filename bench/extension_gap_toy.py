"""Extension is not one long run: the gap, measured on the embedded toy model.

A long run of `--frames` frames is cut at latent frame `--cut`; the extension starts from the long run's last k
latent frames before the cut (the clean prefix, which becomes the anchor) and generates the rest with the *same*
noise draws the long run used there (replayed), so what differs is only the context: the long run's chunks after
the cut still attend its first frame (the anchor) and positions counted from frame 0; the extension's attend the
prefix and the window only. For scale, the same long run with fresh noise after the cut (same context, other
noise) gives the gap that sampling noise alone makes. Reported per k: the relative L2 distance of the latents after
the cut, and the mean absolute difference of the decoded frames (pixels in [-1, 1]), mean over the pairs.

    .venv/bin/python -m bench.extension_gap_toy --pairs 6
"""

from __future__ import annotations

import argparse

import torch

from histream_core import HiStreamPipeline, NoiseSource
from histream_toy.sampling import NEGATIVE_PROMPT, TOY_SAMPLER, _models, held_out_pairs, toy_config
from histream_toy.text import encode_prompt


class Replay:
    """Without `draws`: seeded noise, recorded. With `draws`: those draws from index `start` on, and, past index
    `fresh_at` (if given), fresh noise of another seed instead."""

    def __init__(self, seed, draws=None, start=0, fresh_at=None):
        self.source, self.draws, self.i, self.fresh_at = NoiseSource(seed), draws, start, fresh_at
        self.fresh = NoiseSource(seed + 10**6)
        self.record = [] if draws is None else None

    def __call__(self, shape):
        if self.record is not None:
            self.record.append(self.source(shape))
            return self.record[-1]
        self.i += 1
        if self.fresh_at is not None and self.i > self.fresh_at:
            return self.fresh(shape)
        n = self.draws[self.i - 1]
        assert tuple(n.shape[1:]) == tuple(shape), (n.shape, shape)
        return n


def run(model, cfg, ctx, neg, noise, prefix=None):
    return HiStreamPipeline(model, cfg).generate(ctx, noise=noise, negative=neg, prefix_latent=prefix)


def gap(ae, x, long, cut) -> tuple[float, float]:
    """(relative latent L2, mean |pixel difference|) of x against the long run, from latent frame `cut` on."""
    first = 1 + 4 * (cut - 1)  # the first pixel frame of latent frame `cut`
    after = long[:, :, cut:]
    pixels, pixels_long = ae.decode(x)[0], ae.decode(long)[0]
    return ((x[:, :, cut:] - after).norm() / after.norm()).item(), \
        (pixels[:, first:] - pixels_long[:, first:]).abs().mean().item()


@torch.no_grad()
def measure(pairs: int, frames: int, cut: int, ks, size: int, seed: int) -> dict:
    model, ae = _models()
    neg = encode_prompt(NEGATIVE_PROMPT)
    rows = {k: [] for k in ks}
    noise_rows = []
    for spec, s, _ in held_out_pairs(pairs, seed):
        ctx = encode_prompt(spec.prompt)
        long_cfg = toy_config(frames, size, sampler=TOY_SAMPLER)
        rec = Replay(s)
        long = run(model, long_cfg, ctx, neg, rec)
        per_chunk = len(rec.record) // long_cfg.num_chunks  # draws per chunk (the same plan for every chunk)
        start = cut * per_chunk // long_cfg.chunk_frames
        # the same context with fresh noise after the cut: the scale of sampling noise alone
        noise_rows.append(gap(ae, run(model, long_cfg, ctx, neg, Replay(s, rec.record, 0, fresh_at=start)), long, cut))
        for k in ks:
            cfg = toy_config(frames - 4 * (cut - k), size, sampler=TOY_SAMPLER, prefix_frames=k)
            ext = run(model, cfg, ctx, neg, Replay(s, rec.record, start), prefix=long[:, :, cut - k:cut])
            rows[k].append(gap(ae, torch.cat([long[:, :, :cut - k], ext], dim=2), long, cut))
        print(f"{spec.prompt!r} seed {s}: noise {noise_rows[-1][0]:.3f}; " +
              ", ".join(f"k={k} {rows[k][-1][0]:.3f}" for k in ks), flush=True)
    def mean(r):
        return tuple(sum(v[i] for v in r) / len(r) for i in range(2))

    return {"noise": mean(noise_rows), **{k: mean(r) for k, r in rows.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--frames", type=int, default=65, help="pixel frames of the long run (17 latent frames)")
    ap.add_argument("--cut", type=int, default=8, help="latent frame where the extension takes over")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 4], help="prefix latent frames")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = measure(args.pairs, args.frames, args.cut, args.k, args.size, args.seed)
    print(f"\n{args.pairs} held-out pairs (seed {args.seed}), {args.frames} frames, cut at latent frame {args.cut}; "
          f"after the cut: relative latent L2 / mean |pixel difference|")
    print("| after the cut | latent rel. L2 | mean abs pixel diff |\n|---|---|---|")
    print(f"| same context, fresh noise | {res['noise'][0]:.3f} | {res['noise'][1]:.4f} |")
    for k in args.k:
        print(f"| extension, prefix {k}, same noise | {res[k][0]:.3f} | {res[k][1]:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
