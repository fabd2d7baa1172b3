"""Frame strips of the toy model's videos for the model card: every 8th frame of a 129-frame video, HiStream above
full-res (Self-Forcing-style), one PNG per prompt, exactly as the demo command draws them (seed 0, cfg 3).

    python -m histream_toy.strips [--out histream_toy/strips] [--frames 129] [--every 8] [--model PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

STRIP_PROMPTS = ("red circle moving right, fast",  # the README's demo command
                 "blue square moving up, slow", "green triangle moving left, fast", "white circle moving down, slow")
STRIP_PRESETS = ("histream", "self_forcing")


def strip_image(videos, every: int = 8, gap: int = 2, scale: float = 0.75, colors: int = 32):
    """Videos [3, F, H, W] in [-1, 1] -> one PIL image: a row per video, frames 0, every, 2·every, ... side by side
    with `gap` px of black between them, shrunk by `scale` and cut to a `colors` palette (the generated noise
    texture makes full-colour strips ~130 kB each; these are ~65 kB)."""
    from PIL import Image

    rows = []
    for v in videos:
        frames = [v[:, i] for i in range(0, v.shape[1], every)]
        sep = torch.full((3, v.shape[2], gap), 0.0)
        rows.append(torch.cat([t for f in frames for t in (f, sep)][:-1], dim=2))
    hsep = torch.full((3, gap, rows[0].shape[2]), 0.0)
    img = torch.cat([t for r in rows for t in (r, hsep)][:-1], dim=1)
    arr = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return shrink(Image.fromarray(arr), scale, colors)


def shrink(img, scale: float = 0.75, colors: int = 32):
    from PIL import Image

    img = img.convert("RGB")
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    return img.quantize(colors=colors, dither=Image.Dither.NONE)


def strip_name(prompt: str) -> str:
    return prompt.replace(",", "").replace(" ", "_") + ".png"


def main(argv=None) -> int:
    from .sampling import generate_toy, load_toy_dit

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "strips")
    ap.add_argument("--frames", type=int, default=129)
    ap.add_argument("--every", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, help="DiT weights to draw with (default: the committed ones)")
    args = ap.parse_args(argv)
    model = load_toy_dit(args.model) if args.model else None
    args.out.mkdir(parents=True, exist_ok=True)
    for prompt in STRIP_PROMPTS:
        videos = [generate_toy(prompt, args.frames, args.seed, preset, model=model) for preset in STRIP_PRESETS]
        path = args.out / strip_name(prompt)
        strip_image(videos, args.every).save(path, optimize=True)
        print(f"{path}: {prompt!r}, seed {args.seed}, rows {', '.join(STRIP_PRESETS)}, every {args.every}th frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
