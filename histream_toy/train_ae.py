"""Train the toy video autoencoder on procedural videos (CPU, seeded) and save it as safetensors.

    python -m histream_toy.train_ae [--steps N] [--seed S] [--out PATH]

Each step: half the batch rendered at 64x64, half at 128x128 and cropped to 64x64 (the AE is fully convolutional,
so the crops teach the 128-px scale at the 64-px cost). Loss: MSE weighted up on the shape's pixels + small L1.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import torch

from .autoencoder import DEFAULT_WEIGHTS, ToyVideoAE, load_toy_ae
from .data import centroid_track, detect_color, detect_direction, random_spec, render

FRAMES = (5, 9)  # 1 + 4k; groups are encoded independently, so short clips cover every group position


def make_batch(rng: random.Random, batch: int, frames: int):
    vids, masks = [], []
    for i in range(batch):
        res = 64 if i % 2 == 0 else 128
        v, m = render(random_spec(rng), frames, res, res, with_mask=True)
        if res == 128:  # random 64x64 crop, biased to contain the shape sometimes
            y0, x0 = rng.randrange(0, 65, 8), rng.randrange(0, 65, 8)
            v, m = v[:, :, y0:y0 + 64, x0:x0 + 64], m[:, y0:y0 + 64, x0:x0 + 64]
        vids.append(v)
        masks.append(m)
    return torch.stack(vids), torch.stack(masks).unsqueeze(1)


def loss_fn(model: ToyVideoAE, video, mask, noise: float = 0.05):
    z = model.encode_raw(video)
    z_in = z + noise * z.detach().std() * torch.randn_like(z)  # decoder robust to small latent errors (for the DiT)
    rec = model.decode_raw(z_in)
    w = 1 + 8 * mask
    err = rec - video
    return (w * err.pow(2)).mean() / w.mean() + 0.1 * err.abs().mean() + 1e-4 * z.pow(2).mean()


@torch.no_grad()
def latent_stats(model: ToyVideoAE, seed: int, n: int = 32):
    rng = random.Random(seed)
    zs = [model.encode_raw(render(random_spec(rng), 9, r, r)[None]) for r in (64, 128) for _ in range(n // 2)]
    z = torch.cat([x.transpose(0, 1).reshape(x.shape[1], -1) for x in zs], dim=1)
    return z.mean(dim=1), 1 / z.std(dim=1).clamp_min(1e-6)


@torch.no_grad()
def evaluate(model: ToyVideoAE, seed: int = 123457, n: int = 40, frames: int = 17) -> dict:
    """Held-out specs at 64 and 128 px: reconstruction MSE and colour/direction agreement with the spec."""
    rng = random.Random(seed)
    out = {}
    for res in (64, 128):
        mse, color_ok, dir_ok, both = 0.0, 0, 0, 0
        for _ in range(n):
            spec = random_spec(rng)
            v = render(spec, frames, res, res)
            rec = model.decode(model.encode(v[None]))[0]
            mse += (rec - v).pow(2).mean().item() / n
            c = detect_color(rec) == spec.color
            d = detect_direction(centroid_track(rec)) == spec.direction
            color_ok, dir_ok, both = color_ok + c, dir_ok + d, both + (c and d)
        out[res] = dict(mse=round(mse, 5), color=color_ok / n, direction=dir_ok / n, both=both / n)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--threads", type=int, default=2, help="1 if the 2 cores are shared (OpenMP spin contention)")
    ap.add_argument("--out", default=str(DEFAULT_WEIGHTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    model = ToyVideoAE()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"ToyVideoAE: {n_params / 1e6:.2f}M params; {args.steps} steps, batch {args.batch}, seed {args.seed}")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(  # short warm-up, cosine decay to 5%
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / args.steps))))
    t0, avg = time.time(), None
    for step in range(args.steps):
        video, mask = make_batch(rng, args.batch, FRAMES[step % len(FRAMES)])
        loss = loss_fn(model, video, mask)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {avg:.5f}  {time.time() - t0:6.1f}s", flush=True)
    seconds = time.time() - t0
    model.eval()
    shift, scale = latent_stats(model, args.seed + 1)
    model.latent_shift.copy_(shift)
    model.latent_scale.copy_(scale)
    from safetensors.torch import save_file

    meta = dict(steps=str(args.steps), seed=str(args.seed), batch=str(args.batch), loss=f"{avg:.5f}", seconds=f"{seconds:.1f}",
                params=str(n_params), threads=str(args.threads), data="procedural, 64x64 + 128x128 crops, 5/9 frames")
    # fp16 keeps the file < 8 MB; load_toy_ae casts back to fp32
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, args.out, metadata=meta)
    print(f"saved {args.out} after {seconds:.0f}s of training")
    metrics = evaluate(load_toy_ae(args.out))
    print("held-out reconstruction (40 specs, 17 frames):", json.dumps(metrics))
    return metrics


if __name__ == "__main__":
    main()
