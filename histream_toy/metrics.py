"""What a person sees in a toy video, frame by frame: how many objects of the prompted colour, which shape, how big,
how compact, how fast and which way it moves; and whether the unprompted look of frame 0 (object size, background
tint and gradient) is still there at the end.

Everything is measured against what `data.render` draws for the prompt: one object of side 0.25-0.33 of the frame
(`data._layout`), a circle / square / upward triangle filling its square box to pi/4, 1 and 1/2, moving 0.03 (slow)
or 0.06 (fast) of the side per frame along one axis and reflecting off the walls, over a dark background (plain or
a vertical gradient). `tests/test_quality_toy.py` checks that rendered videos (also after the toy autoencoder)
pass every check and that stripes, smears, lumpy blobs and two objects fail.

Pixel values are in [-1, 1] as everywhere in the toy; lengths are fractions of the frame's shorter side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import COLORS, SPEED_PER_FRAME, parse_prompt

SHAPE_FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}  # shape area / its box's area
AREA_RANGE = (0.25, 0.33)  # the side of the shape's box that data._layout draws, fraction of the frame's side
AREA_TOLERANCE = 0.35  # area within -35 % of the smallest to +35 % of the largest rendered area
FILL_TOLERANCE = 0.2  # bounding-box fill within ±0.2 of the true (swept) shape's
ASPECT_MIN = 0.75  # box extent along the motion at least this × across (true shapes: 1)
MAX_SMEAR = 4  # ... and at most across + this many frames' travel (the autoencoder smears one latent frame's motion)
SPAN = 4  # motion is measured over spans of 4 frames (one latent frame)
SHAPE_MIN_IOU = 0.6  # the prompted shape's template fits the object at least this well (IoU over the box's ends)
SHAPE_MARGIN = 0.05  # ... and within this of the best-fitting shape (the autoencoder rounds a fast square's ends)
MIN_OBJECT = 0.1  # a component counts as an object from a tenth of the smallest rendered area (smaller: specks)
DARK = 0.5  # background pixels have every channel below this (tints <= 0.35; every named colour has one >= 0.95)
COVERAGE = 0.5  # a pixel is the colour's when at least half of it is (un-mixed against the local background)
OFF_COLOUR = 0.25  # ... and what is left after un-mixing is within this RGB distance (orange is 0.46 off red)
# |displacement| per frame, fraction of the side: split at the geometric mean of 0.03 and 0.06
SPEED_BANDS = {"slow": (0.015, 0.0424), "fast": (0.0424, 0.09)}
MOTION_WINDOW = 5  # steps either side of a frame for its speed (a median: one bounce step does not move it)
WALL_MARGIN = 0.02  # a step this close (plus one step) to a wall may bounce: its sign is not judged
IDENTITY_SIZE = 0.2  # identity: object area within ±20 % of frame 0's
IDENTITY_TINT = 0.05  # ... mean background colour and its top-to-bottom gradient within this RGB distance
TAIL = 32  # "the last 32 frames" (one training clip is 33)


def _unit(video: torch.Tensor) -> torch.Tensor:
    return (video.float().clamp(-1, 1) + 1) / 2


def background_rows(video: torch.Tensor) -> torch.Tensor:
    """[3, F, H, W] -> [3, F, H, 1]: per row, the median of its dark pixels (the object's excluded); rows with
    fewer than 8 dark pixels (a stripe across the frame) take the median of their frame's row values."""
    v = _unit(video)
    dark = (v.amax(dim=0, keepdim=True) < DARK).expand_as(v)
    masked = torch.where(dark, v, torch.nan)
    row = masked.nanmedian(dim=3, keepdim=True).values
    few = dark[:1].sum(dim=3, keepdim=True) < 8
    row = torch.where(few, torch.nan, row)
    frame = torch.nan_to_num(row.nanmedian(dim=2, keepdim=True).values, nan=0.15)
    return torch.where(row.isnan(), frame, row)


def color_mask(video: torch.Tensor, color: str, bg: torch.Tensor | None = None) -> torch.Tensor:
    """[3, F, H, W] -> bool [F, H, W]: pixels that are at least half `color` over the local background (`bg`:
    background_rows(video), when the caller has it)."""
    v = _unit(video)
    bg = background_rows(video) if bg is None else bg
    c = torch.tensor(COLORS[color]).view(3, 1, 1, 1)
    d = c - bg
    alpha = ((v - bg) * d).sum(0) / d.pow(2).sum(0).clamp_min(1e-6)
    rest = (v - bg - alpha.unsqueeze(0) * d).pow(2).sum(0).sqrt()
    return (alpha >= COVERAGE) & (rest <= OFF_COLOUR)


def label_components_reference(mask: torch.Tensor) -> torch.Tensor:
    """bool [F, H, W] -> int64 [F, H, W]: 8-connected components within each frame, each labelled by its largest
    flat pixel index + 1 (0 = not in the mask). Label propagation: every pixel takes its neighbours' largest label
    until nothing moves (the slow reference for label_components)."""
    f, h, w = mask.shape
    idx = torch.arange(1, f * h * w + 1, dtype=torch.float64).view(f, 1, h, w)
    m = mask.view(f, 1, h, w)
    lab = torch.where(m, idx, 0.0)
    while True:
        nxt = torch.where(m, F.max_pool2d(lab, 3, stride=1, padding=1), 0.0)
        if torch.equal(nxt, lab):
            return lab.view(f, h, w).long()
        lab = nxt


def label_components(mask: torch.Tensor) -> torch.Tensor:
    """Same components as label_components_reference (numbered 1..n in scan order instead), by scipy.ndimage when
    it is installed (it comes with ComfyUI's requirements), else by the reference."""
    try:
        from scipy import ndimage
    except ImportError:
        return label_components_reference(mask)
    within_frame = torch.zeros(3, 3, 3, dtype=torch.bool)
    within_frame[1] = True  # 8-connected in (H, W), never across frames
    lab, _ = ndimage.label(mask.numpy(), structure=within_frame.numpy())
    return torch.from_numpy(lab).long()


@dataclass
class FrameObjects:
    """Per frame: the number of objects of the colour and the largest one's measurements (NaN where none)."""

    count: torch.Tensor  # [F] int
    area: torch.Tensor  # [F] largest object's area, fraction of side**2
    box: torch.Tensor  # [F, 4] x0, y0, x1, y1 (pixel edges, fractions of the side)
    centroid: torch.Tensor  # [F, 2] x, y (fractions of the side)
    crops: list  # [F] bool array of the largest object cut out by its box (None where none)
    extent: tuple = (1.0, 1.0)  # the frame's width and height, fractions of the side

    @property
    def wh(self) -> torch.Tensor:
        return self.box[:, 2:] - self.box[:, :2]


def find_objects(video: torch.Tensor, color: str, shape: str, bg: torch.Tensor | None = None) -> FrameObjects:
    """The objects of `color` in each frame of [3, F, H, W]; `shape` (the prompted one) sets the smallest area that
    counts as an object (MIN_OBJECT of its expected area)."""
    import numpy as np

    mask = color_mask(video, color, bg)
    f, h, w = mask.shape
    side = min(h, w)
    lab = label_components(mask).numpy()
    min_pixels = MIN_OBJECT * SHAPE_FILL[shape] * (AREA_RANGE[0] * side) ** 2
    count = torch.zeros(f, dtype=torch.long)
    area, box, cen = torch.full((f,), float("nan")), torch.full((f, 4), float("nan")), torch.full((f, 2), float("nan"))
    crops = [None] * f
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    frame_of = np.zeros_like(sizes)
    ids = lab.reshape(f, -1)
    for i in range(f):
        present = np.unique(ids[i])
        present = present[present > 0]
        if present.size == 0:
            continue
        frame_of[present] = i
        sz = sizes[present]
        count[i] = int((sz >= min_pixels).sum())
        k = present[int(sz.argmax())]
        py, px = np.nonzero(lab[i] == k)
        x0, x1, y0, y1 = px.min(), px.max() + 1, py.min(), py.max() + 1
        area[i] = float(sz.max()) / side**2
        box[i] = torch.tensor([x0, y0, x1, y1], dtype=torch.float32) / side
        cen[i] = torch.tensor([px.mean() + 0.5, py.mean() + 0.5], dtype=torch.float32) / side
        crop = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        crop[py - y0, px - x0] = True
        crops[i] = crop
    return FrameObjects(count, area, box, cen, crops, (w / side, h / side))


def swept_template(shape: str, h: int, w: int, axis: int) -> torch.Tensor:
    """bool [h, w]: `shape` filling an h×w box, swept along `axis` (0 = x) the way a moving object is smeared: a box
    longer along the motion than across is the shape of side `across` moved through `along - across` (the toy
    autoencoder blends the 4 frames of a latent frame; equal sides: the plain shape as data.render draws it).
    Closed forms of the union over the sweep (`swept_template_reference` takes the union of copies)."""
    import numpy as np

    across, along = (h, w) if axis == 0 else (w, h)
    delta = max(0, along - across)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    a, c = (xs, ys) if axis == 0 else (ys, xs)  # along / across coordinates, pixels
    s = float(across)
    if shape == "square":
        inside = np.ones((h, w), dtype=bool)
    elif shape == "circle":  # within s/2 of the centre segment: a stadium
        r = s / 2
        nearest = np.clip(a, r, r + delta)
        inside = (a - nearest) ** 2 + (c - r) ** 2 <= r * r
    elif axis == 0:  # upward triangle swept sideways: at height v its span grows by delta
        v = ys / s
        inside = (xs >= s * (1 - v) / 2) & (xs <= delta + s * (1 + v) / 2)
    else:  # swept vertically: below the apex line of the first copy, above the last copy's base
        half_width = np.abs(2 * xs / s - 1)
        inside = (ys >= s * half_width) & (ys <= delta + s)
    return torch.from_numpy(inside)


def swept_template_reference(shape: str, h: int, w: int, axis: int) -> torch.Tensor:
    """The union of copies of the shape at every quarter-pixel offset of the sweep (the slow reference)."""
    import numpy as np

    across, along = (h, w) if axis == 0 else (w, h)
    delta = max(0, along - across)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    inside_any = np.zeros((h, w), dtype=bool)
    for off in np.linspace(0.0, delta, 4 * delta + 1):
        ox, oy = (off, 0.0) if axis == 0 else (0.0, off)
        u, v = (xs - ox) / across, (ys - oy) / across  # in the copy's own unit box
        if shape == "circle":
            inside = (2 * u - 1) ** 2 + (2 * v - 1) ** 2 <= 1
        elif shape == "square":
            inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
        else:
            inside = (np.abs(2 * u - 1) <= v) & (v <= 1)
        inside_any |= inside
    return torch.from_numpy(inside_any)


def shape_scores(crop, axis: int) -> tuple[dict, dict]:
    """IoU of an object's crop with each shape's swept template fitted to its box, over the box's two ends (half the
    across extent each): a sweep makes every shape a bar in the middle, the ends keep the round, flat or pointed
    outline (an unswept object's ends are the whole box)."""
    c = torch.from_numpy(crop)
    h, w = c.shape
    across, along = (h, w) if axis == 0 else (w, h)
    pos = torch.arange(along).view(1, -1) if axis == 0 else torch.arange(along).view(-1, 1)
    ends = ((pos < across / 2) | (pos >= along - across / 2)).expand(h, w)
    out, templates = {}, {}
    for name in SHAPE_FILL:
        t = templates[name] = swept_template(name, h, w, axis)
        out[name] = (c & t & ends).sum().item() / max(1, ((c | t) & ends).sum().item())
    return out, templates


def _spans(obj: FrameObjects, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame t: the centroid's displacement per frame over the SPAN frames around t (shifted inwards at the
    video's ends, so every span is SPAN frames long) along and across the axis (NaN where an end has no object)."""
    c = obj.centroid
    n = c.shape[0]
    if n <= SPAN:
        nan = torch.full((n,), float("nan"))
        return nan, nan.clone()
    a = (torch.arange(n) - SPAN // 2).clamp(0, n - 1 - SPAN)
    d = (c[a + SPAN] - c[a]) / SPAN
    return d[:, axis], d[:, 1 - axis]


def _window_median(x: torch.Tensor, t: int, k: int) -> float:
    """Median of the finite entries of the 2k+1 entries of x around t (shifted inwards at the ends; NaN if fewer
    than 3)."""
    a = min(max(0, t - k), max(0, x.shape[0] - (2 * k + 1)))
    seg = x[a: a + 2 * k + 1]
    seg = seg[seg.isfinite()]
    return seg.median().item() if seg.numel() >= 3 else float("nan")


def motion_checks(obj: FrameObjects, direction: str, speed: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame, from the largest object's centroid track: (speed class right, direction right).

    Motion at frame t is the displacement per frame over the SPAN frames around it (the toy autoencoder moves an
    object in jumps of one latent frame, 4 pixel frames). Speed: the median |motion| along the prompted axis over
    the frames within MOTION_WINDOW falls in the prompted SPEED_BANDS band (a median: a bounce does not move it).
    Direction: that motion is along the prompted axis (median perpendicular motion at most half of it) and goes
    the expected way, which starts as the prompted one and reverses when the object bounces: where the object's
    leading edge is within one span's travel (+ WALL_MARGIN) of the wall ahead, the way is not judged and the
    expected way becomes the way it went; never in the first SPAN frames (data.render starts every object far
    enough from the wall ahead, so going the other way there is a wrong start, not a bounce)."""
    axis = 0 if direction in ("left", "right") else 1
    heading = 1.0 if direction in ("right", "down") else -1.0
    along, across = _spans(obj, axis)
    lo, hi = SPEED_BANDS[speed]
    n = along.shape[0]
    speed_ok, dir_ok = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    reach = SPAN * SPEED_PER_FRAME[speed] + WALL_MARGIN
    for t in range(n):
        a = _window_median(along.abs(), t, MOTION_WINDOW)
        p = _window_median(across.abs(), t, MOTION_WINDOW)
        speed_ok[t] = lo <= a < hi
        step = along[t].item()
        if not (math.isfinite(step) and math.isfinite(a) and math.isfinite(p)):
            continue
        s = min(max(0, t - SPAN // 2), max(0, n - 1 - SPAN))  # where this frame's span starts
        lead = obj.box[s, 2 + axis].item() if heading > 0 else obj.box[s, axis].item()  # edge ahead
        to_wall = (obj.extent[axis] - lead) if heading > 0 else lead
        along_axis = p <= 0.5 * a
        if t >= SPAN and (not math.isfinite(to_wall) or to_wall <= reach):  # may bounce: follow the way it went
            dir_ok[t] = along_axis
            heading = math.copysign(1.0, step) if step != 0 else heading
        else:
            dir_ok[t] = along_axis and step * heading > 0
    return speed_ok, dir_ok


def initial_direction(obj: FrameObjects, steps: int = 4) -> str:
    """Which way the largest object goes over its first `steps` frames (before the first bounce), "none" if absent."""
    c = obj.centroid
    k = min(steps, c.shape[0] - 1)
    d = c[k] - c[0]
    if k < 1 or not bool(d.isfinite().all()):
        return "none"
    if d[0].abs() >= d[1].abs():
        return "right" if d[0] > 0 else "left"
    return "down" if d[1] > 0 else "up"


def speed_class(obj: FrameObjects, direction: str) -> str:
    """Slow / fast / "neither" from the median |motion| along the prompted axis over the whole track."""
    along, _ = _spans(obj, 0 if direction in ("left", "right") else 1)
    along = along[along.isfinite()].abs()
    if along.numel() < 3:
        return "neither"
    a = along.median().item()
    return next((name for name, (lo, hi) in SPEED_BANDS.items() if lo <= a < hi), "neither")


def desmeared_area(obj: FrameObjects, axis: int) -> torch.Tensor:
    """[F] the object's area with its box squeezed back to square along the motion axis (a moving object smeared
    over its latent frame's motion has the area of the still shape)."""
    wh = obj.wh
    along, across = wh[:, axis], wh[:, 1 - axis]
    return obj.area * torch.where(along > across, across / along.clamp_min(1e-9), torch.ones_like(along))


def frame_checks(video: torch.Tensor, prompt: str, bg: torch.Tensor | None = None) -> tuple[dict, FrameObjects]:
    """Per-frame bool tensors [F] for a video [3, F, H, W] against its prompt, and their conjunction "all".

    one_object: exactly one object of the prompted colour. shape: the prompted shape's swept template fits (IoU over
    the box's ends) at least SHAPE_MIN_IOU and within SHAPE_MARGIN of the best-fitting shape's. area: the (de-smeared) area within ±AREA_TOLERANCE of the range data.render draws. compact: box fill
    within ±FILL_TOLERANCE of the prompted shape's swept template's, box not narrower along the motion than
    ASPECT_MIN × across, and not longer than across + MAX_SMEAR of the prompted speed's travel. speed, direction:
    motion_checks."""
    want = parse_prompt(prompt)
    shape, axis = want["shape"], 0 if want["direction"] in ("left", "right") else 1
    obj = find_objects(video, want["color"], shape, bg)
    n = obj.count.shape[0]
    speed_ok, dir_ok = motion_checks(obj, want["direction"], want["speed"])
    fill_true = SHAPE_FILL[shape]
    lo, hi = (fill_true * r**2 for r in AREA_RANGE)
    area = desmeared_area(obj, axis)
    side = min(video.shape[2], video.shape[3])
    shape_ok, compact = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    smear = MAX_SMEAR * SPEED_PER_FRAME[want["speed"]]
    for i, crop in enumerate(obj.crops):
        if crop is None:
            continue
        scores, templates = shape_scores(crop, axis)
        shape_ok[i] = scores[shape] >= max(SHAPE_MIN_IOU, max(scores.values()) - SHAPE_MARGIN)
        w_, h_ = obj.wh[i].tolist()
        along, across = (w_, h_) if axis == 0 else (h_, w_)
        template = templates[shape]
        fill_ok = abs(crop.mean() - template.float().mean().item()) <= FILL_TOLERANCE
        compact[i] = bool(fill_ok) and ASPECT_MIN * across <= along <= across + smear + 2 / side
    checks = {
        "one_object": obj.count == 1,
        "shape": shape_ok,
        "area": (area >= lo * (1 - AREA_TOLERANCE)) & (area <= hi * (1 + AREA_TOLERANCE)),
        "compact": compact,
        "speed": speed_ok,
        "direction": dir_ok,
    }
    checks["all"] = torch.stack(list(checks.values())).all(dim=0)
    return checks, obj


def background_look(video: torch.Tensor, bg: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame: mean background colour [F, 3] and its gradient (bottom third minus top third) [F, 3]."""
    bg = (background_rows(video) if bg is None else bg)[..., 0]  # [3, F, H]
    h = bg.shape[2]
    third = max(1, h // 3)
    tint = bg.mean(dim=2).T
    grad = (bg[:, :, -third:].mean(dim=2) - bg[:, :, :third].mean(dim=2)).T
    return tint, grad


def identity_checks(video: torch.Tensor, obj: FrameObjects, axis: int, tail: int = TAIL,
                    bg: torch.Tensor | None = None) -> dict:
    """Unprompted look of frame 0 kept in each of the last `tail` frames: the object's size (area within
    ±IDENTITY_SIZE), the background tint and its gradient (within IDENTITY_TINT); "all" = the three at once.
    Fractions of the tail frames (a frame 0 without an object fails size)."""
    tint, grad = background_look(video, bg)
    t = slice(max(1, video.shape[1] - tail), None)
    area = desmeared_area(obj, axis)
    size = ((area[t] / area[0]) - 1).abs() <= IDENTITY_SIZE
    tint_ok = (tint[t] - tint[0]).norm(dim=1) <= IDENTITY_TINT
    grad_ok = (grad[t] - grad[0]).norm(dim=1) <= IDENTITY_TINT
    both = size & tint_ok & grad_ok
    return {k: v.float().mean().item() for k, v in
            (("size", size), ("tint", tint_ok), ("gradient", grad_ok), ("all", both))}


def video_scores(video: torch.Tensor, prompt: str, tail: int = TAIL) -> dict:
    """One video's yardstick numbers: the share of frames passing each check (whole video and its last `tail`),
    the video-level initial direction and speed class, and identity kept (see identity_checks)."""
    want = parse_prompt(prompt)
    bg = background_rows(video)
    checks, obj = frame_checks(video, prompt, bg)
    out = {k: v.float().mean().item() for k, v in checks.items()}
    out["all_tail"] = checks["all"][-tail:].float().mean().item()
    out["initial_direction"] = float(initial_direction(obj) == want["direction"])
    out["speed_class"] = float(speed_class(obj, want["direction"]) == want["speed"])
    axis = 0 if want["direction"] in ("left", "right") else 1
    out.update({f"identity_{k}": v for k, v in identity_checks(video, obj, axis, tail, bg).items()})
    return out


CONTROLS = ("stripe", "smear", "blob", "two_objects")


def _shift(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """x moved by k along dim, zeros where it moved from (no wrap-around)."""
    out = x.roll(k, dims=dim)
    n = x.shape[dim]
    idx = torch.arange(n)
    keep = ((idx >= k) if k >= 0 else (idx < n + k)).view([-1 if d == dim else 1 for d in range(x.dim())])
    return out * keep


def control_video(spec, kind: str, frames: int, height: int, width: int) -> torch.Tensor:
    """A rendered video spoiled the ways a weak generator spoils it (the detectors must fail these):
    "stripe" - the object stretched into a band across the frame along its motion; "smear" - the object with a
    trail 1.5× its size behind it; "blob" - three overlapping copies, a lumpy blob about twice the size;
    "two_objects" - a second copy half a frame away across the motion."""
    from .data import COLORS, Degradation, render

    _, alpha = render(spec, frames, height, width, with_mask=True)
    bg = (render(spec, frames, height, width, degrade=Degradation(opacity=0.0)) + 1) / 2
    axis = 2 if spec.direction in ("left", "right") else 1  # the motion axis of alpha [F, H, W]
    back = -1 if spec.direction in ("right", "down") else 1  # towards the trail
    side = min(height, width)
    box = round(alpha[0].sum().sqrt().item())  # ~ the object's side in pixels
    if kind == "stripe":
        a = alpha.amax(dim=axis, keepdim=True).expand_as(alpha)
    elif kind == "smear":
        a = torch.stack([_shift(alpha, back * k, axis) for k in range(int(1.5 * box) + 1)]).amax(dim=0)
    elif kind == "blob":
        s = max(1, box // 2)
        a = torch.stack([alpha, alpha.roll((s, s // 2), dims=(1, 2)), alpha.roll((-s // 2, s), dims=(1, 2))]).amax(0)
    elif kind == "two_objects":
        other = 1 if axis == 2 else 2
        a = torch.maximum(alpha, alpha.roll(side // 2, dims=other))
    else:
        raise ValueError(f"unknown control {kind!r}; choose one of {CONTROLS}")
    fg = torch.tensor(COLORS[spec.color]).view(3, 1, 1, 1)
    return (bg * (1 - a) + fg * a) * 2 - 1
