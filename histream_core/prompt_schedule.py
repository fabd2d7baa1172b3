"""Per-chunk prompt schedules for long videos: which text context drives which chunks.

A `PromptSchedule` is an ordered list of (start chunk, context [B, L, text_dim]); entry i drives chunks
[start_i, start_{i+1}). At every later start the pipeline swaps the cross-attention text cache and re-encodes the
KV-cache window under the new text (see `recache.py`); the anchor keeps the frames of the first prompt.

Starts may be given in seconds of output video. Wan's VAE makes pixel frame f (16 fps) part of latent frame 0 when
f = 0 and of latent frame 1 + (f - 1) // 4 otherwise (4 pixel frames per latent frame after the first); the chunk
is that latent frame // chunk_frames. A start of s seconds means the pixel frame shown at s: f = round(16·s).
With a clean prefix of k latent frames (prefix.py) seconds still count from the output's first frame and the
chunks from the first generated one: chunk (latent frame - k) // chunk_frames; a start inside the prefix is chunk 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .config import VAE_STRIDE_T

WAN_FPS = 16
UNITS = ("chunk", "second")


class PromptScheduleError(ValueError):
    """A user-facing prompt schedule error; the message names the fix."""


def latent_frame_of_pixel_frame(pixel_frame: int) -> int:
    """The Wan latent frame holding a pixel frame: 0 → 0, 1..4 → 1, 5..8 → 2, ..."""
    if pixel_frame < 0:
        raise PromptScheduleError(f"pixel frame {pixel_frame} is negative")
    return 0 if pixel_frame == 0 else 1 + (pixel_frame - 1) // VAE_STRIDE_T


def seconds_to_chunk(seconds: float, chunk_frames: int, fps: int = WAN_FPS, prefix_frames: int = 0) -> int:
    """The chunk that holds the pixel frame shown at `seconds` (frame round(fps·seconds))."""
    if seconds < 0:
        raise PromptScheduleError(f"a prompt cannot start at {seconds} s: starts must be >= 0")
    return max(0, latent_frame_of_pixel_frame(round(seconds * fps)) - prefix_frames) // chunk_frames


def start_in_chunks(start: float, unit: str, chunk_frames: int, fps: int = WAN_FPS, prefix_frames: int = 0) -> int:
    """A start value in `unit` ("chunk" or "second") as a chunk index."""
    if unit == "second":
        return seconds_to_chunk(float(start), chunk_frames, fps, prefix_frames)
    if unit != "chunk":
        raise PromptScheduleError(f"unknown prompt start unit {unit!r}; choose one of {list(UNITS)}")
    if float(start) != int(start) or start < 0:
        raise PromptScheduleError(f"a prompt start of {start} chunks is not a whole number >= 0: give a chunk "
                                  f"index (0, 1, 2, ...) or switch the unit to 'second'")
    return int(start)


def check_starts(starts: Sequence[float], num_chunks: int | None = None, unit: str = "chunk") -> None:
    """First start 0, then strictly increasing, each below `num_chunks` (when known, starts in chunks)."""
    if not starts:
        raise PromptScheduleError("the prompt schedule is empty: give at least one prompt starting at chunk 0")
    if starts[0] != 0:
        raise PromptScheduleError(f"the first prompt starts at {unit} {starts[0]:g}: it must start at 0 "
                                  f"(something has to drive the first frames)")
    for i in range(1, len(starts)):
        if starts[i] <= starts[i - 1]:
            raise PromptScheduleError(f"prompt {i + 1} starts at {unit} {starts[i]:g}, not after prompt {i} "
                                      f"({unit} {starts[i - 1]:g}): starts must strictly increase")
    if num_chunks is not None and starts[-1] >= num_chunks:
        raise PromptScheduleError(f"a prompt starts at chunk {starts[-1]}, but the video has only {num_chunks} "
                                  f"chunks (0..{num_chunks - 1}): lower that start or make the video longer")


@dataclass(frozen=True)
class PromptSchedule:
    """(start chunk, text context [B, L, text_dim]) entries in order; the first starts at chunk 0."""

    entries: tuple[tuple[int, torch.Tensor], ...]

    def __post_init__(self):
        object.__setattr__(self, "entries", tuple((int(s), c) for s, c in self.entries))
        check_starts(self.starts)
        for s, c in self.entries:
            if not isinstance(c, torch.Tensor):
                raise PromptScheduleError(f"the prompt starting at chunk {s} is a {type(c).__name__}, "
                                          f"not a text context tensor [batch, tokens, text_dim]")

    @classmethod
    def of(cls, context: torch.Tensor | PromptSchedule) -> PromptSchedule:
        """A schedule as is; a plain context tensor = one prompt for the whole video."""
        return context if isinstance(context, PromptSchedule) else cls(((0, context),))

    @property
    def starts(self) -> list[int]:
        return [s for s, _ in self.entries]

    def switches(self) -> dict[int, torch.Tensor]:
        """{chunk: new context} for every start after the first."""
        return dict(self.entries[1:])

    def checked(self, num_chunks: int, check_context: Callable[[torch.Tensor], torch.Tensor]) -> PromptSchedule:
        """Validate the starts against the video length and every context with `check_context`."""
        check_starts(self.starts, num_chunks)
        return PromptSchedule(tuple((s, check_context(c)) for s, c in self.entries))

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> PromptSchedule:
        """The same starts with every context replaced by fn(context)."""
        return PromptSchedule(tuple((s, fn(c)) for s, c in self.entries))

    def to(self, device) -> PromptSchedule:
        return PromptSchedule(tuple((s, c.to(device)) for s, c in self.entries))


def build_prompt_schedule(items: Sequence[tuple[float, str, torch.Tensor]], chunk_frames: int,
                          num_chunks: int | None = None, fps: int = WAN_FPS, prefix_frames: int = 0) -> PromptSchedule:
    """(start, unit, context) items → a PromptSchedule in chunks; two starts landing in one chunk are an error."""
    starts = [start_in_chunks(s, u, chunk_frames, fps, prefix_frames) for s, u, _ in items]
    for i in range(1, len(starts)):
        if starts[i] == starts[i - 1]:
            raise PromptScheduleError(f"prompts {i} and {i + 1} (starts {items[i - 1][0]} {items[i - 1][1]} and "
                                      f"{items[i][0]} {items[i][1]}) both fall in chunk {starts[i]} "
                                      f"({chunk_frames} latent frames per chunk): move them at least a chunk apart")
    check_starts(starts, num_chunks)
    return PromptSchedule(tuple((s, c) for s, (_, _, c) in zip(starts, items)))
