"""Flow-matching step schedules: shifted sigmas, the Self-Forcing four steps, per-chunk sparse plans (HiStream+).

Flow matching: x_t = (1-σ)·x0 + σ·ε, the model predicts v = ε - x0 at timestep 1000σ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

SELF_FORCING_TIMESTEPS = (1000, 750, 500, 250)
DEFAULT_SHIFT = 5.0


class ScheduleError(ValueError):
    """A user-facing schedule error; the message names the fix."""


def shift_sigma(sigma: float, shift: float = DEFAULT_SHIFT) -> float:
    """σ' = s·σ / (1 + (s-1)·σ) (the SD3/Wan timestep shift)."""
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def uniform_sigmas(steps: int, shift: float = DEFAULT_SHIFT) -> tuple[float, ...]:
    """`steps` sigmas at t = 1000·(1 - i/steps), shifted; for 4 steps these are Self-Forcing's."""
    if steps <= 0:
        raise ScheduleError(f"a chunk needs at least one denoising step, got {steps}")
    return tuple(shift_sigma(1.0 - i / steps, shift) for i in range(steps))


def self_forcing_sigmas(shift: float = DEFAULT_SHIFT) -> tuple[float, ...]:
    """Self-Forcing's warped t = [1000, 750, 500, 250] → σ ≈ [1, .9375, .8333, .625] at shift 5."""
    return tuple(shift_sigma(t / 1000.0, shift) for t in SELF_FORCING_TIMESTEPS)


def sigmas_from_list(values, drop_trailing_zero: bool = True) -> tuple[float, ...]:
    """A custom schedule: descending sigmas in (0, 1]. A trailing 0 (as in ComfyUI SIGMAS) is the end marker."""
    vals = [float(v) for v in values]
    if drop_trailing_zero and vals and vals[-1] == 0.0:
        vals = vals[:-1]
    if not vals:
        raise ScheduleError("the custom schedule has no steps: give at least one sigma in (0, 1]")
    bad = [i for i, v in enumerate(vals) if not math.isfinite(v)]
    if bad:  # NaN compares false with everything: checked first, or the order checks below would pass it
        raise ScheduleError(f"sigma {bad[0]} of the custom schedule is {vals[bad[0]]}: every sigma must be a finite "
                            f"number in (0, 1]; check the node that makes the SIGMAS")
    for a, b in pairwise(vals):
        if b >= a:
            raise ScheduleError(f"sigmas must strictly decrease, got {a} then {b}")
    if vals[0] > 1.0 or vals[-1] <= 0.0:
        raise ScheduleError(f"sigmas must lie in (0, 1] (flow matching), got {vals[0]} … {vals[-1]}")
    return tuple(vals)


@dataclass(frozen=True)
class ChunkSchedule:
    """The steps of one chunk: `sigmas` in order, the first `n_low` of them run at low resolution."""

    sigmas: tuple[float, ...]
    n_low: int = 0

    def __post_init__(self):
        if len(self.sigmas) == 0:
            raise ScheduleError("a chunk schedule with 0 steps cannot denoise: give at least one step")
        if not 0 <= self.n_low <= len(self.sigmas):
            raise ScheduleError(f"low-res steps ({self.n_low}) must be between 0 and the step count "
                                f"({len(self.sigmas)})")
        object.__setattr__(self, "sigmas", sigmas_from_list(self.sigmas, drop_trailing_zero=False))

    @property
    def steps(self) -> int:
        return len(self.sigmas)

    @property
    def n_high(self) -> int:
        return self.steps - self.n_low

    @property
    def timesteps(self) -> tuple[float, ...]:
        return tuple(1000.0 * s for s in self.sigmas)

    @classmethod
    def split(cls, steps: int, n_low: int, shift: float = DEFAULT_SHIFT) -> ChunkSchedule:
        return cls(uniform_sigmas(steps, shift), n_low)


@dataclass(frozen=True)
class StepPlan:
    """Per-chunk schedules: the first chunk's, and the one every later chunk uses (HiStream+ makes it sparser)."""

    first: ChunkSchedule
    later: ChunkSchedule

    def for_chunk(self, k: int) -> ChunkSchedule:
        return self.first if k == 0 else self.later

    def total_steps(self, num_chunks: int) -> int:
        return self.first.steps + max(0, num_chunks - 1) * self.later.steps

    @classmethod
    def uniform(cls, chunk: ChunkSchedule) -> StepPlan:
        return cls(chunk, chunk)

    @classmethod
    def preset(cls, name: str, shift: float = DEFAULT_SHIFT) -> StepPlan:
        """A named plan of STEP_PRESETS (4 uniform steps at shift 5 are Self-Forcing's warped t)."""
        try:
            counts = STEP_PRESETS[name]
        except KeyError:
            raise ScheduleError(f"unknown step preset {name!r}; choose one of {list(STEP_PRESETS)}") from None
        return build_step_plan(*counts, shift=shift)


# (first-chunk steps, of them at low res, later-chunk steps, of them at low res); HiStream+ gives later chunks,
# already conditioned on a rich cache, 1 + 1 steps
STEP_PRESETS = {"self_forcing": (4, 0, 4, 0), "histream": (4, 2, 4, 2), "histream_plus": (4, 2, 2, 1)}


def build_step_plan(first_steps: int, first_low: int, later_steps: int, later_low: int,
                    shift: float = DEFAULT_SHIFT, sigmas=None) -> StepPlan:
    """A plan from step counts (uniform t, shifted: 4 steps = Self-Forcing's) or from one custom sigma list used
    for every chunk; `*_low` of each chunk's steps run at low resolution."""
    if not (math.isfinite(shift) and shift > 0):  # written so that NaN fails too
        raise ScheduleError(f"shift must be a finite number > 0, got {shift}")
    if sigmas is not None:
        custom = sigmas_from_list(sigmas)
        return StepPlan(ChunkSchedule(custom, first_low), ChunkSchedule(custom, later_low))
    for name, n in (("first-chunk steps", first_steps), ("later-chunk steps", later_steps)):
        if n <= 0:
            raise ScheduleError(f"{name} is {n}: a chunk needs at least one denoising step")
    return StepPlan(ChunkSchedule(uniform_sigmas(first_steps, shift), first_low),
                    ChunkSchedule(uniform_sigmas(later_steps, shift), later_low))
