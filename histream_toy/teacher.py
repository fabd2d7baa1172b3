"""The exact teacher for the toy model's own rollouts (stage 2 of training, `histream_toy.train_rollout`).

A teacher-forced model only ever sees true frames as context, but at inference it conditions on its own imperfect
frames and drifts (exposure bias; Self-Forcing's remedy is training on the model's own rollouts). In the procedural
world of `data.render` there is an exact teacher for any rollout: measure the state the generated context shows
(where the object is, which way along the prompted axis it is going, frame 0's object size and background) and draw
the true continuation from that state - one crisp object of the prompted colour and shape, at the prompted speed,
bouncing off the walls, on frame 0's background. Training on (own context -> teacher's continuation) teaches the
model to repair its own errors instead of compounding them, and to keep frame 0's unprompted look (the anchor's
identity).

Latent frame i >= 1 is pixel frames 4i-3..4i (the toy AE encodes each group on its own), so its target continues
the state at pixel frame 4(i-1), the last frame of the context it is generated after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .data import _DIR_VEC, SPEED_PER_FRAME, _bounce, draw, parse_prompt
from .metrics import AREA_RANGE, SHAPE_FILL, background_rows, find_objects

TINT_RANGE = (0.0, 0.35)  # data._layout's background tints
PLAIN_BELOW = 0.02  # a fitted top-to-bottom difference below this (every channel) is a plain background


@dataclass
class RolloutState:
    """What one generated video [3, F, H, W] shows, measured frame by frame (fractions of each axis)."""

    prompt: dict  # parse_prompt of the video's prompt
    size: float  # frame 0's object box side (fraction of the shorter side), clamped to the rendered range
    top: list  # frame 0's background, top and bottom rows (RGB in [0, 1])
    bottom: list
    centre: torch.Tensor  # [F, 2] the largest object's box centre (NaN where none)
    sign: torch.Tensor  # [F] +1 / -1: the way along the prompted axis the object goes after frame t

    @property
    def axis(self) -> int:
        """The prompted motion's axis: 0 = x, 1 = y."""
        return 0 if self.prompt["direction"] in ("left", "right") else 1

    def placed_centre(self, t: int, height: int, width: int) -> torch.Tensor:
        """Frame t's box centre kept inside the frame for a box of this size at height x width, with the box's
        half sides [2] (fractions of each axis)."""
        side = min(height, width)
        half = torch.tensor([self.size * side / (2 * width), self.size * side / (2 * height)])
        return torch.minimum(torch.maximum(self.centre[t], half), 1 - half), half


def _frame0_background(video: torch.Tensor) -> tuple[list, list]:
    """Least-squares line through frame 0's background rows (per channel), read at the top and bottom rows."""
    rows = background_rows(video[:, :1])[:, 0, :, 0]  # [3, H]
    h = rows.shape[1]
    w = torch.linspace(0, 1, h)
    a = torch.stack([torch.ones(h), w], 1)  # rows = a @ [top, bottom - top]
    coef = torch.linalg.lstsq(a, rows.T).solution  # [2, 3]
    top = coef[0].clamp(*TINT_RANGE)
    bottom = (coef[0] + coef[1]).clamp(*TINT_RANGE)
    if (bottom - top).abs().max() < PLAIN_BELOW:
        bottom = top
    return top.tolist(), bottom.tolist()


def measure(video: torch.Tensor, prompt: str) -> RolloutState:
    """The state a generated video [3, F, H, W] (in [-1, 1]) shows for its prompt; `centre` is the centre of the
    object's box (what data.draw places)."""
    p = parse_prompt(prompt)
    obj = find_objects(video, p["color"], p["shape"])
    _, f, h, w = video.shape
    side = min(h, w)
    area0 = obj.area[0].item()
    size = (area0 / SHAPE_FILL[p["shape"]]) ** 0.5 if not math.isnan(area0) else sum(AREA_RANGE) / 2
    size = min(max(size, AREA_RANGE[0]), AREA_RANGE[1])
    top, bottom = _frame0_background(video)
    # centroids as fractions of each axis (find_objects measures in fractions of the shorter side)
    centre = obj.centroid * torch.tensor([side / w, side / h])
    if p["shape"] == "triangle":  # an upward triangle's centroid lies a third of its half-height below its box's centre
        centre[:, 1] -= size * side / (6 * h)
    axis = 0 if p["direction"] in ("left", "right") else 1  # RolloutState.axis, before the state exists
    half = size * side / (2 * (w if axis == 0 else h))
    step = SPEED_PER_FRAME[p["speed"]] * side / (w if axis == 0 else h)
    s = _DIR_VEC[p["direction"]][axis]
    sign = torch.empty(f)
    prev = None
    for t in range(f):  # the bounce state: the object turns only at the wall it is heading for
        c = centre[t, axis].item()
        if not math.isnan(c):
            near = c >= 1 - half - 1.5 * step or c <= half + 1.5 * step
            moved = None if prev is None else (c - prev[1]) / (t - prev[0])
            if near and moved is not None and abs(moved) >= step / 2:  # by a wall: the way it just moved
                s = 1.0 if moved > 0 else -1.0
            if (s > 0 and c >= 1 - half - step / 2) or (s < 0 and c <= half + step / 2):
                s = -s
            prev = (t, c)
        sign[t] = s
    return RolloutState(p, size, top, bottom, centre, sign)


def last_seen(state: RolloutState, t: int) -> int | None:
    """The latest frame <= t where an object was found (None: none so far)."""
    seen = (~state.centre[: t + 1, 0].isnan()).nonzero()
    return int(seen[-1]) if len(seen) else None


def continuation(state: RolloutState, t: int, frames: int, height: int, width: int,
                 with_mask: bool = False):
    """The true frames t+1..t+frames [3, frames, H, W] after frame t of the measured rollout (None if no object
    has been seen by frame t), drawn at any resolution (geometry is in fractions)."""
    seen = last_seen(state, t)
    if seen is None:
        return None
    p, axis = state.prompt, state.axis
    start, half = state.placed_centre(seen, height, width)
    step = SPEED_PER_FRAME[p["speed"]] * min(height, width) / (width if axis == 0 else height)
    k = torch.arange(t - seen + 1, t - seen + 1 + frames, dtype=torch.float32)  # frames since `seen`
    pos = _bounce(start[axis] + state.sign[seen] * step * k, half[axis].item(), 1 - half[axis].item())
    other = start[1 - axis].expand(frames)
    cx, cy = (pos, other) if axis == 0 else (other, pos)
    return draw(p["color"], p["shape"], state.size, cx, cy, state.top, state.bottom, height, width, with_mask)


def teacher_video(state: RolloutState, latent_frames: int, height: int, width: int):
    """[3, 1 + 4(T-1), H, W] whose pixel group i >= 1 continues the rollout's state at pixel frame 4(i-1) (what
    latent frame i should show after the generated latent frames < i) and whose frame 0 is the generated frame 0
    redrawn crisp at its measured state; plus the [T] bool of groups that have a target (an object seen by then)
    and the [1 + 4(T-1), H, W] object coverage."""
    blank = (torch.zeros(3, 1, height, width) - 1, torch.zeros(1, height, width))
    seen0 = last_seen(state, 0) is not None
    first = _at_frame0(state, height, width) if seen0 else blank
    frames, alphas, ok = [first[0]], [first[1]], [seen0]
    for i in range(1, latent_frames):
        out = continuation(state, 4 * (i - 1), 4, height, width, with_mask=True)
        ok.append(out is not None)
        v, a = out if out is not None else (blank[0].expand(3, 4, height, width), blank[1].expand(4, height, width))
        frames.append(v)
        alphas.append(a)
    return torch.cat(frames, 1), torch.tensor(ok), torch.cat(alphas, 0)


def _at_frame0(state: RolloutState, height: int, width: int):
    p = state.prompt
    c, _ = state.placed_centre(0, height, width)
    return draw(p["color"], p["shape"], state.size, c[:1], c[1:], state.top, state.bottom, height, width, True)
