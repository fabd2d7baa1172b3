"""Generate a video from a prompt with the embedded toy model, through HiStream's schedule, on any CPU.

    python -m histream_toy.demo "red circle moving right, fast" --frames 161 --out demo.gif

Writes a GIF (Pillow) or an MP4 (PyAV) by the file extension; logs time per chunk and the KV-cache size, which
stays the same however long the video is (anchor + window).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from .sampling import TOY_GUIDANCE, generate_toy

log = logging.getLogger("histream")


def save_video(video: torch.Tensor, path: Path, fps: int = 16) -> None:
    """video [3, F, H, W] in [-1, 1] → .gif (Pillow) or .mp4 (PyAV)."""
    frames = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    if path.suffix.lower() == ".gif":
        try:
            from PIL import Image
        except ImportError:
            raise SystemExit("writing a GIF needs Pillow: pip install pillow (or use --out name.mp4 with PyAV)")
        imgs = [Image.fromarray(f) for f in frames]
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
        return
    try:
        import av
    except ImportError:
        raise SystemExit("writing an MP4 needs PyAV: pip install av (or use --out name.gif with Pillow)")
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prompt", nargs="?", default="red circle moving right, fast")
    ap.add_argument("--frames", type=int, default=65, help="pixel frames, 1 + 4k (any length: memory stays flat)")
    ap.add_argument("--size", type=int, default=128, help="side in pixels (multiple of 32)")
    ap.add_argument("--preset", default="histream", choices=["histream", "histream_plus", "self_forcing"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cfg", type=float, default=TOY_GUIDANCE,
                    help="classifier-free guidance against the empty prompt (1 = off: the object fades)")
    ap.add_argument("--out", type=Path, default=Path("histream_toy_demo.gif"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    video = generate_toy(args.prompt, frames=args.frames, seed=args.seed, preset=args.preset, size=args.size,
                         guidance_scale=args.cfg)
    seconds = time.perf_counter() - t0
    save_video(video, args.out)
    print(f"{args.out}: {video.shape[1]} frames of {args.size}x{args.size} from {args.prompt!r} "
          f"({args.preset}, cfg {args.cfg:g}, seed {args.seed}) in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
