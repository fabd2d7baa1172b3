"""Constants, scales and frame arithmetic shared by every part of the GPU benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
PARTS = ("histream", "self_forcing", "wan21", "histream_long", "backends", "profile", "vae")
CHOICES = (*PARTS, "all", "summary")
# rough H100 seconds per part at --scale real (see the module docstring); used by --deadline-s
PART_ESTIMATE_S = {"histream": 70, "self_forcing": 65, "wan21": 40, "histream_long": 130, "backends": 75,
                   "profile": 30, "vae": 50}
WAN_STEPS, WAN_CFG = 50, 2  # Wan2.1 sampling: 50 steps, classifier-free guidance doubles the forwards
TEXT_LEN = 512
GIB = 2 ** 30
MEMORY_GOAL_GIB = 24.0  # "fits a 24 GB card"
# Paper (arXiv 2512.21338), 1080p, 81 frames, denoising only: s/frame and the ratios it quotes.
PAPER_S_PER_FRAME = {"wan21": 36.56, "self_forcing": 1.2, "histream": 0.48, "histream_plus": 0.34}
PAPER_RATIO = {("histream", "self_forcing"): 2.5, ("histream", "wan21"): 76.2, ("histream_plus", "wan21"): 107.5,
               ("histream_plus", "self_forcing"): round(1.2 / 0.34, 1)}  # the last one derived from s/frame
GOAL_RATIO = {("histream", "self_forcing"): 3.0, ("histream_plus", "self_forcing"): 4.0,
              ("histream", "wan21"): 100.0, ("histream_plus", "wan21"): 150.0}


@dataclass(frozen=True)
class Scale:
    model: str
    width: int
    height: int
    short: int  # latent frames of the paper-length run (21 = 81 pixel frames)
    long: int  # latent frames of the long run (63 = 249 pixel frames)
    warmup: int  # latent frames of the warm-up stream
    wan_frames: int  # latent frames of the bidirectional Wan2.1 forward
    vae_dim: int  # Wan2.1 VAE base width (96)
    vae_frames: int  # latent frames decoded by the VAE part
    chunk: int = 3


SCALES = {
    "real": Scale("1.3B", 1920, 1088, short=21, long=63, warmup=9, wan_frames=21, vae_dim=96, vae_frames=21),
    # the same lengths (so chunk 20 exists), a 128x128 video (latent 16x16: 64 tokens/frame) on the tiny model
    "tiny": Scale("tiny", 128, 128, short=21, long=63, warmup=9, wan_frames=21, vae_dim=8, vae_frames=3),
}


def pixel_frames(latent_frames: int) -> int:
    return 1 + 4 * (latent_frames - 1)


def chunk_pixel_frames(frame_start: int, frames: int) -> int:
    """Pixel frames a chunk decodes to: 4 per latent frame, the video's first latent frame only 1."""
    return 4 * frames - (3 if frame_start == 0 else 0)


def _gib(n) -> float | None:
    return None if n is None else n / GIB


def _env_line(s: str) -> str:
    return s.replace("|", "/")



def _fmt_gib(n) -> str:
    return "—" if n is None else f"{n / GIB:.2f}"

