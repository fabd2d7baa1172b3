"""Procedural videos for the embedded toy model: one coloured shape moving and bouncing over a dark background.

Geometry is in fractions of the frame, so a spec rendered at 64 and 128 px is the same video at two resolutions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

COLORS = {  # name -> RGB in [0, 1]; all bright, far from the dark backgrounds and from each other
    "red": (0.95, 0.1, 0.1),
    "green": (0.1, 0.85, 0.15),
    "blue": (0.15, 0.3, 1.0),
    "yellow": (0.95, 0.95, 0.1),
    "magenta": (0.95, 0.1, 0.95),
    "cyan": (0.1, 0.95, 0.95),
    "orange": (1.0, 0.55, 0.0),
    "white": (0.95, 0.95, 0.95),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
SPEEDS = ("slow", "fast")
BACKGROUNDS = ("plain", "gradient")
SPEED_PER_FRAME = {"slow": 0.03, "fast": 0.06}  # fraction of the side per frame
_DIR_VEC = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
FG_THRESHOLD = 0.3  # RGB distance (in [0, 1] units) from the background estimate that counts as foreground


@dataclass(frozen=True)
class VideoSpec:
    color: str
    shape: str
    direction: str
    speed: str
    background: str = "plain"
    seed: int = 0

    @property
    def prompt(self) -> str:
        return f"{self.color} {self.shape} moving {self.direction}, {self.speed}"


def random_spec(rng: random.Random) -> VideoSpec:
    return VideoSpec(rng.choice(list(COLORS)), rng.choice(SHAPES), rng.choice(DIRECTIONS), rng.choice(SPEEDS),
                     rng.choice(BACKGROUNDS), rng.randrange(2**31))


def parse_prompt(text: str) -> dict:
    """"red circle moving right, fast" -> {color, shape, direction, speed}. Raises ValueError if a field is missing."""
    words = text.lower().replace(",", " ").split()
    out = {}
    for key, names in (("color", COLORS), ("shape", SHAPES), ("direction", DIRECTIONS), ("speed", SPEEDS)):
        hits = [w for w in words if w in names]
        if len(hits) != 1:
            raise ValueError(f"prompt {text!r}: expected exactly one {key} out of {list(names)}")
        out[key] = hits[0]
    return out


def _layout(spec: VideoSpec):
    """Seeded size, start position and background colours (all resolution-free)."""
    g = random.Random(spec.seed)
    size = g.uniform(0.25, 0.33)  # side of the shape's box, fraction of min(H, W)
    lo, hi = size / 2, 1 - size / 2
    dx, dy = _DIR_VEC[spec.direction]
    start = []
    for d in (dx, dy):  # along the motion: start in the trailing 40% so a few frames pass before the first bounce
        if d > 0:
            start.append(g.uniform(lo, lo + 0.4 * (hi - lo)))
        elif d < 0:
            start.append(g.uniform(hi - 0.4 * (hi - lo), hi))
        else:
            start.append(g.uniform(lo, hi))
    tint = [g.uniform(0.05, 0.25) for _ in range(3)]
    tint2 = [min(0.35, max(0.0, t + g.uniform(-0.15, 0.15))) for t in tint]
    return size, start, tint, tint2


def _bounce(p: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Reflect positions into [lo, hi] (triangle wave): the shape reverses on the wall."""
    span = hi - lo
    u = torch.remainder(p - lo, 2 * span)
    return lo + torch.where(u > span, 2 * span - u, u)


@dataclass(frozen=True)
class Degradation:
    """How a rendered object is spoiled to imitate a weak generator's output (faded, off-colour, soft-edged);
    train_dit conditions on such frames so that the model learns to restore the object instead of losing it."""

    opacity: float = 1.0  # object opacity over the background
    color_mix: float = 0.0  # fraction of `other_color` mixed into the object colour
    other_color: tuple = (0.5, 0.5, 0.5)
    softness: float = 1.0  # edge width in pixels (1 = the normal antialiased edge)

    @staticmethod
    def random(g: random.Random) -> Degradation:
        return Degradation(opacity=g.uniform(0.25, 0.9), color_mix=g.uniform(0.0, 0.35),
                           other_color=tuple(g.uniform(0.0, 1.0) for _ in range(3)), softness=g.uniform(1.0, 4.0))


def render(spec: VideoSpec, frames: int, height: int, width: int, with_mask: bool = False,
           degrade: Degradation | None = None):
    """[3, frames, H, W] float in [-1, 1] (and the [frames, H, W] coverage mask if with_mask); `degrade` spoils the
    object's look (never its position)."""
    size, (x0, y0), tint, tint2 = _layout(spec)
    side = min(height, width)
    half_x, half_y = size * side / (2 * width), size * side / (2 * height)  # half box, in fractions of each axis
    dx, dy = _DIR_VEC[spec.direction]
    t = torch.arange(frames, dtype=torch.float32)
    step = SPEED_PER_FRAME[spec.speed]
    cx = _bounce(x0 + dx * step * side / width * t, half_x, 1 - half_x)
    cy = _bounce(y0 + dy * step * side / height * t, half_y, 1 - half_y)
    top, bottom = tint, tint if spec.background == "plain" else tint2
    return draw(spec.color, spec.shape, size, cx, cy, top, bottom, height, width, with_mask, degrade)


def draw(color: str, shape: str, size: float, cx: torch.Tensor, cy: torch.Tensor, top, bottom, height: int,
         width: int, with_mask: bool = False, degrade: Degradation | None = None):
    """Frames [3, F, H, W] in [-1, 1] of one `shape` of `color` whose box side is `size` (fraction of the shorter
    side) centred at (cx, cy) [F] (fractions of each axis), over a background that runs linearly from the `top`
    row's RGB to the `bottom` row's (equal: plain). `render` draws a spec through this; the rollout teacher
    (histream_toy.teacher) draws a measured state."""
    frames = cx.shape[0]
    side = min(height, width)
    # pixel-centre coordinates in pixels of the min side, relative to the centre: [F, H, W]
    ys = (torch.arange(height, dtype=torch.float32) + 0.5).view(1, -1, 1)
    xs = (torch.arange(width, dtype=torch.float32) + 0.5).view(1, 1, -1)
    px = xs - (cx * width).view(-1, 1, 1)
    py = ys - (cy * height).view(-1, 1, 1)
    r = size * side / 2
    if shape == "circle":
        sd = torch.sqrt(px**2 + py**2) - r
    elif shape == "square":
        sd = torch.maximum(px.abs(), py.abs()) - r
    else:  # upward triangle in the box: apex at top centre, base at bottom
        base = py - r
        slope = 2 * px.abs() - (py + r)  # |x| <= (y + r) / 2 inside
        sd = torch.maximum(base, slope / (5 ** 0.5))
    soft = degrade.softness * side / 128 if degrade else 1.0
    alpha = (0.5 - sd / soft).clamp(0, 1)  # ~1 px antialiased edge (wider when degraded)
    if list(top) == list(bottom):  # plain
        bg = torch.tensor(top).view(3, 1, 1, 1).expand(3, frames, height, width)
    else:  # vertical gradient between two dark tints
        w = torch.linspace(0, 1, height).view(1, 1, -1, 1)
        bg = torch.tensor(top).view(3, 1, 1, 1) * (1 - w) + torch.tensor(bottom).view(3, 1, 1, 1) * w
        bg = bg.expand(3, frames, height, width)
    fg = torch.tensor(COLORS[color]).view(3, 1, 1, 1)
    if degrade is not None:
        fg = (1 - degrade.color_mix) * fg + degrade.color_mix * torch.tensor(degrade.other_color).view(3, 1, 1, 1)
        alpha = alpha * degrade.opacity
    video = (bg * (1 - alpha) + fg * alpha) * 2 - 1
    return (video, alpha) if with_mask else video


# ---- analysis helpers (tests, yardstick) -----------------------------------------------------------------------

def foreground(video: torch.Tensor) -> torch.Tensor:
    """[3, F, H, W] (or [3, H, W]) -> bool mask [F, H, W]: far from the per-row median (handles vertical gradients)."""
    if video.dim() == 3:
        video = video.unsqueeze(1)
    v = (video.float().clamp(-1, 1) + 1) / 2
    bg = v.median(dim=3, keepdim=True).values  # per frame, per row
    return (v - bg).norm(dim=0) > FG_THRESHOLD


def detect_color(frame_rgb: torch.Tensor) -> str:
    """Nearest named colour of the foreground pixels of a frame [3, H, W] (or a video [3, F, H, W]); "none" if empty."""
    v = frame_rgb if frame_rgb.dim() == 4 else frame_rgb.unsqueeze(1)
    mask = foreground(v)
    if not mask.any():
        return "none"
    pix = ((v.float().clamp(-1, 1) + 1) / 2)[:, mask]  # [3, N]
    mean = pix.median(dim=1).values
    names = list(COLORS)
    ref = torch.tensor([COLORS[n] for n in names])
    return names[int((ref - mean).norm(dim=1).argmin())]


def centroid_track(video: torch.Tensor) -> torch.Tensor:
    """[3, F, H, W] -> [F, 2] foreground centroid (x, y) in 0-1; NaN where a frame has no foreground."""
    mask = foreground(video).float()
    _, h, w = mask.shape
    total = mask.sum(dim=(1, 2))
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    cx = (mask.sum(dim=1) * xs).sum(dim=1) / total
    cy = (mask.sum(dim=2) * ys).sum(dim=1) / total
    return torch.stack([cx, cy], dim=1)  # 0/0 -> NaN for empty frames


def detect_direction(track: torch.Tensor, frames: int = 3) -> str:
    """Dominant displacement over the first `frames` steps (before the first bounce) -> left/right/up/down."""
    k = min(frames, track.shape[0] - 1)
    d = torch.nan_to_num(track[k] - track[0])
    if d[0].abs() >= d[1].abs():
        return "right" if d[0] > 0 else "left"
    return "down" if d[1] > 0 else "up"


def object_area(video: torch.Tensor) -> torch.Tensor:
    """[3, F, H, W] -> [F] foreground area as a fraction of the frame."""
    return foreground(video).float().mean(dim=(1, 2))
