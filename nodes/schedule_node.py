"""HiStreamPromptSchedule: several CONDITIONINGs, each from a chunk (or second) on, for long videos.

The node only tags each conditioning entry with its start (as stock ConditioningSetTimestepRange tags entries with
a range), so the output is ordinary CONDITIONING. `host_model.conditioning_to_context` turns tagged entries into
timed contexts, and `prompts_for_plan` makes a core PromptSchedule once the chunk plan is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..histream_core.prompt_schedule import (
    UNITS,
    PromptScheduleError,
    build_prompt_schedule,
    check_starts,
    start_in_chunks,
)
from .stage_types import CATEGORY

START_KEY = "histream_start"
UNIT_KEY = "histream_unit"
SLOTS = 4


class HiStreamPromptSchedule:
    @classmethod
    def INPUT_TYPES(cls):
        starts = {f"start_{i}": ("FLOAT", {"default": float(i - 1), "min": 0.0, "max": 100000.0, "step": 0.25,
                                           "tooltip": f"Where conditioning_{i} takes over (in `unit`). The first "
                                                      f"connected one must start at 0; starts must increase."})
                  for i in range(1, SLOTS + 1)}
        return {
            "required": {
                "unit": (list(UNITS), {"tooltip": "chunk: chunk index (3 latent frames = 12 video frames each). "
                                                  "second: seconds of video at 16 fps, rounded to the chunk "
                                                  "holding that frame."}),
                **starts,
            },
            "optional": {f"conditioning_{i}": ("CONDITIONING",) for i in range(1, SLOTS + 1)},
        }

    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("positive",)
    FUNCTION = "schedule"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Prompt schedule for long videos: each connected conditioning drives the video from its start "
                   "on. At a switch the text cache is replaced and the recent window of the KV cache is re-encoded "
                   "under the new prompt (the anchor keeps the first frames' identity), so transitions stay smooth. "
                   "Connect to Low-Res Denoise's positive.")

    def schedule(self, unit, **kw):
        used = [i for i in range(1, SLOTS + 1) if kw.get(f"conditioning_{i}")]
        if not used:
            raise ValueError("HiStream Prompt Schedule: connect at least conditioning_1 (Wan CLIPTextEncode)")
        starts = [float(kw[f"start_{i}"]) for i in used]
        try:  # order and whole-chunk checks now; the video length is checked when the loop starts
            check_starts([start_in_chunks(s, "chunk", 1) if unit == "chunk" else s for s in starts], unit=unit)
        except PromptScheduleError as exc:
            names = ", ".join(f"conditioning_{i} at {s:g}" for i, s in zip(used, starts))
            raise ValueError(f"HiStream Prompt Schedule ({names}): {exc}") from None
        out = []
        for i, start in zip(used, starts):
            out += [[cond, {**opts, START_KEY: start, UNIT_KEY: unit}] for cond, opts in kw[f"conditioning_{i}"]]
        return (out,)


@dataclass(frozen=True)
class TimedContexts:
    """Text contexts with their starts in a unit, waiting for the chunk plan (see `prompts_for_plan`)."""

    items: tuple[tuple[float, str, torch.Tensor], ...]

    def __post_init__(self):  # all starts are seconds or all are chunks: mixing would hide ordering mistakes
        if len({u for _, u, _ in self.items}) > 1:
            raise ValueError("the prompt schedule mixes 'chunk' and 'second' starts: use one unit")


def timed_context(positive: list, batch: int, text_dim: int, to_context) -> TimedContexts:
    """Tagged CONDITIONING → TimedContexts; entries with the same start are joined along tokens by `to_context`
    (the untagged path), as stock ConditioningCombine entries are."""
    if any(START_KEY not in opts for _, opts in positive):
        raise ValueError("the positive CONDITIONING mixes HiStream Prompt Schedule entries with other entries: "
                         "connect every prompt through the schedule node")
    groups: dict[tuple[float, str], list] = {}
    for cond, opts in positive:
        key = (float(opts[START_KEY]), opts[UNIT_KEY])
        rest = {k: v for k, v in opts.items() if k not in (START_KEY, UNIT_KEY)}
        groups.setdefault(key, []).append([cond, rest])
    items = [(s, u, to_context(entries, batch, text_dim)) for (s, u), entries in sorted(groups.items())]
    return TimedContexts(tuple(items))


def prompts_for_plan(context, cfg):
    """The context for HiStreamPipeline: a plain tensor as is, timed contexts → a PromptSchedule in chunks."""
    if not isinstance(context, TimedContexts):
        return context
    try:
        return build_prompt_schedule(context.items, cfg.chunk_frames, cfg.num_chunks)
    except PromptScheduleError as exc:
        raise ValueError(f"HiStream Prompt Schedule: {exc}") from None
