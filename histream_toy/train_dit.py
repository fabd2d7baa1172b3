"""Train the embedded toy DiT (`CausalWanModel`, Wan-shaped) in the toy autoencoder's latent space, on 2 CPU cores.

    python -m histream_toy.train_dit [--steps N] [--seed S] [--minutes M] [--out PATH]

1. Data: `--videos` random specs (seeded), each rendered at 128x128 and 64x64 for 33 frames (9 latent frames) and
   encoded with the committed toy AE; the low-res pool also holds the 128 latents area-downsampled to 8x8 (what the
   DRC low-res cache holds at inference). Everything is cached in memory.
2. Objective: flow matching (x_t = (1-σ)x0 + σε, target v = ε - x0, timestep 1000σ, σ = shift-3 of U(0,1)),
   teacher-forced and block-causal with chunks of 1 latent frame, all chunks of a clip at once: the sequence is
   [clean frames | noisy frames]; a noisy frame attends the clean frames before it and itself (the KV cache at
   inference), clean frames attend block-causally among themselves (the cache's t = 0 passes). Clean frames carry
   timestep 0. Each batch is one resolution (alternating), and one layout: a prefix of 2-9 frames (loss on every
   noisy frame), or, 25% of the time, the anchor frame followed by a later run of 4 frames - what the anchor +
   window-3 cache holds once it evicts (loss on the run's last frame only, the one whose context is complete).
   Exposure bias: a teacher-forced model sees perfect context in training but its own imperfect frames at inference,
   and a tiny one fades its object out within a few chunks. So in `--degrade-prob` of the clips the context frames
   come from the same video rendered with a degraded object (faded, off-colour, soft-edged; data.Degradation) while
   the targets stay true: the model learns to restore the object from weak context instead of copying the weakness.
   Also: `--first-frame-prob` batches of frame 0 alone (4x the clips; every video starts from a frame drawn from the
   prompt only), `--first-motion-prob` batches of frames 0-1 with the loss on frame 1 (the first motion can only
   come from the prompt), `--cond-drop` clips on the empty prompt (for classifier-free guidance at sampling), and
   `--object-weight`: latent cells where the object is or just was weigh 1 + this (it covers ~8 % of the frame).
3. AdamW, warmup + cosine, grad clip 1, EMA of the weights (saved). Stops at `--steps` or after `--minutes`.

The defaults are the committed model's recipe: one run from scratch, 36 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ._engine import CausalWanModel, apply_rope, attention, frame_mask_to_tokens
from .sampling import TOY_ANCHOR, TOY_CHUNK, TOY_DIT_PATH, TOY_SHIFT, TOY_WAN_CONFIG, TOY_WINDOW

FRAMES = 33  # pixel frames per training video -> 9 latent frames
SIZES = (128, 64)


def build_dataset(ae, videos: int, seed: int, log=print) -> dict:
    """{"hi": [N,16,9,16,16], "lo": [2N,16,9,8,8], "hi_bad"/"lo_bad" (the same videos with a degraded object, see
    data.Degradation), "prompts": [N] str, "specs": [N]} (latents float32)."""
    from .data import Degradation, random_spec, render

    rng = random.Random(seed)
    specs = [random_spec(rng) for _ in range(videos)]
    bad = [Degradation.random(random.Random(f"degrade-{seed}-{i}")) for i in range(videos)]
    out = {"hi": [], "lo": [], "hi_bad": [], "lo_bad": []}
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, videos, 16):
            part, part_bad = specs[i:i + 16], bad[i:i + 16]
            for key, size, degs in (("hi", 128, None), ("lo", 64, None), ("hi_bad", 128, part_bad),
                                    ("lo_bad", 64, part_bad)):
                clips = [render(s, FRAMES, size, size, degrade=degs[j] if degs else None) for j, s in enumerate(part)]
                out[key].append(ae.encode(torch.stack(clips)))
    data = {k: torch.cat(v) for k, v in out.items()}
    for key in ("", "_bad"):  # the low-res pool also holds area-downsampled 128 latents (the DRC low-res cache)
        data["lo" + key] = torch.cat([data["lo" + key], F.avg_pool3d(data["hi" + key], (1, 2, 2))])
    log(f"dataset: {videos} videos x {FRAMES} frames at 128 and 64 px (clean and degraded) encoded in "
        f"{time.time() - t0:.0f} s; latent std {data['hi'].std():.3f} (128), {data['lo'].std():.3f} (64 + down)")
    return {**data, "prompts": [s.prompt for s in specs], "specs": specs}


def object_masks(specs, size: int, frames: int = FRAMES) -> torch.Tensor:
    """[N, T, size/8, size/8] bool: latent cells that show the object in a latent frame or in the one before it
    (where it must appear and where it must vanish), dilated by one cell. Latent frame 0 is pixel frame 0, latent
    frame i >= 1 pixel frames 4i-3..4i (the AE's grouping)."""
    from .data import render

    out = []
    for spec in specs:
        _, alpha = render(spec, frames, size, size, with_mask=True)
        cells = latent_cells(alpha)
        cells = cells | torch.cat([cells[:1], cells[:-1]])  # ... or in the previous latent frame
        out.append(dilate_cells(cells))
    return torch.stack(out)


def latent_cells(coverage: torch.Tensor) -> torch.Tensor:
    """Pixel coverage [1 + 4(T-1), H, W] -> bool [T, H/8, W/8]: the latent cells it touches in each latent frame."""
    from .autoencoder import frame_groups

    return F.max_pool2d(frame_groups(coverage).amax(1)[:, None], 8)[:, 0] > 0.05


def dilate_cells(cells: torch.Tensor) -> torch.Tensor:
    """bool [T, h, w] grown by one cell (8-neighbourhood)."""
    return F.max_pool2d(cells[:, None].float(), 3, 1, 1)[:, 0] > 0


def teacher_forced_mask(n_clean: int, n_noisy: int, chunk: int) -> torch.Tensor:
    """Frame mask [C+N, C+N] for the sequence [clean 0..C-1 | noisy 0..N-1] (True = may attend)."""
    cc = torch.arange(n_clean) // chunk
    cn = torch.arange(n_noisy) // chunk
    top = torch.cat([cc[:, None] >= cc[None, :], torch.zeros(n_clean, n_noisy, dtype=torch.bool)], 1)
    bottom = torch.cat([cn[:, None] > cc[None, :], cn[:, None] == cn[None, :]], 1)
    return torch.cat([top, bottom], 0)


def teacher_forced_forward(model: CausalWanModel, clean: torch.Tensor, noisy: torch.Tensor, t_noisy: torch.Tensor,
                           context: torch.Tensor, chunk: int = TOY_CHUNK) -> torch.Tensor:
    """v prediction for every noisy frame; clean/noisy [B,16,C|N,H,W] share frame positions 0.., t_noisy [B,N]."""
    b, _, n_clean, h, w = clean.shape
    n_noisy = noisy.shape[2]
    p = model.config.patch_size
    x = torch.cat([clean, noisy], 2)
    t = torch.cat([torch.zeros(b, n_clean), t_noisy], 1)
    cos, sin = model.rope.angles([*range(n_clean), *range(n_noisy)], h // p[1], w // p[2], x.device)
    mask = frame_mask_to_tokens(teacher_forced_mask(n_clean, n_noisy, chunk), (h // p[1]) * (w // p[2]))

    def attend(_i, q, k, v):
        return attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, mask)

    return model._run(x, t, model.text_cache(context), attend)[:, :, n_clean:]


def sample_layout(rng: random.Random, total: int, gap_prob: float, first_motion_prob: float = 0.0,
                  first_frame_prob: float = 0.0) -> tuple[list[int], list[float]]:
    """Latent frame indices of one training clip and the loss weight of each frame."""
    if rng.random() < first_frame_prob:  # frame 0 alone: text to image, what every video starts from
        return [0], [1.0]
    if rng.random() < first_motion_prob:  # frames 0-1, loss on 1: the first motion can only come from the prompt
        return [0, 1], [0.0, 1.0]
    run = TOY_WINDOW + 1
    if rng.random() < gap_prob and total > TOY_ANCHOR + run:
        j = rng.randint(TOY_ANCHOR + 1, total - run)
        return [*range(TOY_ANCHOR), *range(j, j + run)], [0.0] * (TOY_ANCHOR + run - 1) + [1.0]
    n = rng.randint(2, total)
    return list(range(n)), [1.0] * n


def shifted_sigma(u: torch.Tensor, shift: float = TOY_SHIFT) -> torch.Tensor:
    return shift * u / (1 + (shift - 1) * u)


def data_batch_loss(model: CausalWanModel, data: dict, object_mask: dict, ctx: dict, args, rng: random.Random,
                    hi_res: bool) -> torch.Tensor:
    """The teacher-forced flow-matching loss of one batch of true clips (the layouts of sample_layout)."""
    n = len(data["prompts"])
    key = "hi" if hi_res else "lo"
    pool = data[key]
    frames, weights = sample_layout(rng, pool.shape[2], args.gap_prob, args.first_motion_prob,
                                    args.first_frame_prob)
    bsz = (args.batch if hi_res else 2 * args.batch) * (4 if frames == [0] else 1)  # one frame: cheap, batch up
    idx = [rng.randrange(len(pool)) for _ in range(bsz)]
    x0 = pool[idx][:, :, frames]
    if args.object_weight > 0:  # the object is ~8 % of the frame: weight its cells (motion lives there)
        masks = object_mask[key][[i % n for i in idx]][:, frames].float()  # lo pool i >= n: spec i - n
        obj_w = 1 + args.object_weight * masks[:, None]
    else:
        obj_w = torch.ones(1, 1, 1, 1, 1)
    cond = torch.stack([ctx[data["prompts"][i % n]] for i in idx])
    if args.cond_drop > 0:  # the empty prompt (all-zero context) for classifier-free guidance
        cond = cond * (torch.rand(bsz, 1, 1) >= args.cond_drop)
    sigma = shifted_sigma(torch.rand(bsz, len(frames)))
    eps = torch.randn_like(x0)
    s = sigma[:, None, :, None, None]
    noisy = (1 - s) * x0 + s * eps
    clean = x0[:, :, :-1]
    if args.degrade_prob > 0:  # context with a degraded object, target the true one: learn to restore it
        spoil = torch.rand(bsz) < args.degrade_prob
        if spoil.any():
            bad = data[key + "_bad"][idx][:, :, frames[:-1]]
            clean = torch.where(spoil[:, None, None, None, None], bad, clean)
    if args.ctx_noise > 0:  # robustness to imperfect generated context (it is written at t = 0)
        amp = args.ctx_noise * torch.rand(bsz, 1, clean.shape[2], 1, 1)
        clean = clean + amp * torch.randn_like(clean)
    v = teacher_forced_forward(model, clean, noisy, 1000 * sigma, cond)
    w = torch.tensor(weights)[None, None, :, None, None] * obj_w
    loss = (((v - (eps - x0)) ** 2) * w).sum() / w.expand_as(v).sum()
    return loss


def prepare_data(args, log=print) -> tuple[dict, dict, dict]:
    """The encoded dataset (built, or read from --data-cache), the text context per prompt and the object masks."""
    from .autoencoder import load_toy_ae
    from .text import encode_prompt

    cache = args.data_cache
    if cache and cache.exists():
        data = torch.load(cache, weights_only=False)
        log(f"dataset: {cache.name} ({len(data['prompts'])} videos)")
    else:
        data = build_dataset(load_toy_ae(), args.videos, args.seed, log)
        if cache:
            torch.save(data, cache)
    ctx = {p: encode_prompt(p)[0] for p in sorted(set(data["prompts"]))}
    object_mask = {}
    if args.object_weight > 0:
        t_mask = time.time()
        object_mask = {"hi": object_masks(data["specs"], 128), "lo": object_masks(data["specs"], 64)}
        log(f"object masks in {time.time() - t_mask:.0f} s: {object_mask['hi'].float().mean():.3f} of the cells")
    return data, ctx, object_mask


def train(args, log=print, prepared: tuple | None = None) -> tuple[CausalWanModel, dict]:
    """Stage 1 (module docstring); `prepared`: prepare_data's result, when the caller already has it."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t_start = time.time()
    data, ctx, object_mask = prepared or prepare_data(args, log)

    model = CausalWanModel(TOY_WAN_CONFIG)
    if args.init:  # continue from earlier weights (a second stage with another objective)
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(args.init)))
        log(f"initialised from {args.init.name}")
    else:
        with torch.no_grad():  # start from v = 0
            model.head.head.weight.zero_()
            model.head.head.bias.zero_()
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    params = sum(p.numel() for p in model.parameters())
    log(f"model: {TOY_WAN_CONFIG}, {params / 1e6:.2f} M parameters")

    budget = args.minutes * 60 if args.minutes else math.inf
    t_train, losses, step, history = time.time(), [], 0, []
    while step < args.steps and time.time() - t_train < budget:
        progress = max(step / args.steps, (time.time() - t_train) / budget)
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = data_batch_loss(model, data, object_mask, ctx, args, rng, hi_res=step % 2 == 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, p in model.state_dict().items():
                ema[k].lerp_(p, 1 - decay)
        losses.append(loss.item())
        step += 1
        if step % args.log_every == 0:
            avg = sum(losses[-args.log_every:]) / args.log_every
            history.append((step, round(time.time() - t_train), round(avg, 4)))
            log(f"step {step:5d}  {time.time() - t_train:6.0f} s  loss {avg:.4f}  lr {lr:.2e}")
    model.load_state_dict(ema)
    tail = losses[-200:]
    info = {"seed": args.seed, "steps": step, "videos": args.videos, "frames": FRAMES, "sizes": list(SIZES),
            "batch": args.batch, "lr": args.lr, "ema": args.ema, "gap_prob": args.gap_prob,
            "ctx_noise": args.ctx_noise, "init": args.init.name if args.init else None,
            "degrade_prob": args.degrade_prob, "cond_drop": args.cond_drop, "object_weight": args.object_weight,
            "first_motion_prob": args.first_motion_prob, "first_frame_prob": args.first_frame_prob,
            "threads": args.threads,
            "train_seconds": round(time.time() - t_train), "total_seconds": round(time.time() - t_start),
            "final_loss": round(sum(tail) / max(1, len(tail)), 4), "params": params, "loss_history": history,
            "chunk": TOY_CHUNK, "anchor": TOY_ANCHOR, "window": TOY_WINDOW, "sigma_shift": TOY_SHIFT}
    return model.eval(), info


def save(model: CausalWanModel, info: dict, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    save_file(sd, str(path), metadata={"histream_toy_dit": json.dumps(info)})


def evaluate(model, n: int, seed: int, log=print) -> dict:
    from .sampling import held_out_pairs, prompt_accuracy

    pairs = held_out_pairs(n, seed)
    out = {}
    for preset in ("histream", "self_forcing"):
        t0 = time.time()
        acc = prompt_accuracy(pairs, preset, 128, model=model)  # the toy sampler (euler)
        out[preset] = {"color": acc["color"], "direction": acc["direction"], "n": acc["n"],
                       "seconds": round(time.time() - t0, 1)}
        log(f"{preset:13s} colour {acc['color']:.2f}  direction {acc['direction']:.2f}  "
            f"({acc['n']} videos, {time.time() - t0:.0f} s)  misses: {acc['misses'][:4]}")
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--minutes", type=float, default=36.0, help="stop training after this long (0 = no limit); the "
                    "learning-rate schedule follows whichever of steps and minutes runs out first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=TOY_DIT_PATH)
    ap.add_argument("--videos", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8, help="128 px clips per batch (64 px batches are twice this)")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--gap-prob", type=float, default=0.25)
    ap.add_argument("--ctx-noise", type=float, default=0.05)
    ap.add_argument("--degrade-prob", type=float, default=0.5,
                    help="fraction of clips whose context frames show a degraded object (faded, off-colour, soft)")
    ap.add_argument("--first-motion-prob", type=float, default=0.25,
                    help="fraction of batches that are frames 0-1 with the loss on frame 1 only (teacher-forced "
                         "clips let later frames copy the motion from context; the first motion must read the prompt)")
    ap.add_argument("--cond-drop", type=float, default=0.15,
                    help="fraction of clips trained on the empty prompt (zeros), for classifier-free guidance")
    ap.add_argument("--object-weight", type=float, default=4.0,
                    help="extra loss weight on latent cells where the object is or just was (1 + this)")
    ap.add_argument("--first-frame-prob", type=float, default=0.3,
                    help="fraction of batches that are frame 0 alone (4x the clips): a video's first frame is made "
                         "from the prompt only, and everything after follows it")
    ap.add_argument("--init", type=Path, help="start from these weights instead of from scratch")
    ap.add_argument("--data-cache", type=Path, help="save the encoded dataset here / reuse it if it exists")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval", type=int, default=30, help="held-out prompt/seed pairs to evaluate (0 = skip)")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    model, info = train(args, log=lambda m: print(m, flush=True))
    if args.eval:
        info["eval"] = evaluate(model, args.eval, args.seed, log=lambda m: print(m, flush=True))
    save(model, info, args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {json.dumps(info)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
