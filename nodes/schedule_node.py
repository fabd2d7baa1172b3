"""HiStreamPromptSchedule: several CONDITIONINGs, each from a chunk (or second) on, for long videos.

The node only tags each conditioning entry with its start (as stock ConditioningSetTimestepRange tags entries with
a range), so the output is ordinary CONDITIONING; `conditioning.text_inputs` turns the tagged entries into a core
PromptSchedule once the chunk plan is known.
"""

from __future__ import annotations

from ..histream_core.prompt_schedule import UNITS, PromptScheduleError, check_starts, start_in_chunks
from .conditioning import START_KEY, UNIT_KEY
from .stage_types import CATEGORY

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
    TITLE = "HiStream Prompt Schedule"
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
