"""A render request on disk: what a headless run (tools/render_parallel.py, one process or many under torchrun)
needs besides the weights — the generation settings, the prompts (text contexts, optionally switching at given
chunks), the negative prompt, VACE control and the seed.

The file is a `torch.save` of plain data (dicts, lists, numbers, strings, tensors), so `torch.load(...,
weights_only=True)` reads it without running code. Settings are a step preset name plus HiStreamConfig's scalar
fields; a custom step plan is not representable and is refused at save time, as is a plan with a prefix (the request
has no prefix latent).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import HiStreamConfig
from .prompt_schedule import PromptSchedule
from .schedule import STEP_PRESETS, StepPlan
from .vace import VaceControl

FORMAT = "histream-render-request/1"
_SCALARS = (bool, int, float, str, type(None))


@dataclass
class RenderRequest:
    config: HiStreamConfig
    context: torch.Tensor | PromptSchedule
    seed: int = 0
    negative: torch.Tensor | None = None
    control: VaceControl | None = None


def _settings(config: HiStreamConfig, preset: str) -> dict:
    if preset not in STEP_PRESETS:
        raise ValueError(f"unknown step preset {preset!r}; choose one of {', '.join(STEP_PRESETS)}")
    if config.steps != StepPlan.preset(preset):
        raise ValueError(f"the config's step plan is not the {preset!r} preset's: a render request stores steps "
                         f"as a preset name; pass the preset the plan came from")
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name != "steps":
            if not isinstance(value, _SCALARS):
                raise ValueError(f"setting {f.name}={value!r} cannot be stored in a render request")
            out[f.name] = value
    return out


def save_render_request(path: str | Path, request: RenderRequest, preset: str) -> Path:
    """Write `request` (its config built from step preset `preset`) to `path`; returns the path."""
    if request.config.prefix_frames:  # a request has no field for the prefix latent that stream() would need
        raise ValueError(f"the plan starts with a prefix of {request.config.prefix_frames} latent frames, but prefix "
                         f"runs are not supported by the headless renderer yet: run them in ComfyUI or the Python "
                         f"API (HiStreamPipeline.stream with prefix_latent), or plan prefix_frames=0")
    ctx = PromptSchedule.of(request.context)
    data = {
        "format": FORMAT, "preset": preset, "settings": _settings(request.config, preset), "seed": int(request.seed),
        "prompts": [[int(s), c.detach().float().cpu().contiguous()] for s, c in ctx.entries],
        "negative": None if request.negative is None else request.negative.detach().float().cpu().contiguous(),
        "control": None if request.control is None else {
            "frames": [f.detach().float().cpu().contiguous() for f in request.control.frames],
            "masks": [m.detach().float().cpu().contiguous() for m in request.control.masks],
            "strengths": [float(s) for s in request.control.strengths]},
    }
    path = Path(path)
    torch.save(data, path)
    return path


def load_render_request(path: str | Path) -> RenderRequest:
    path = Path(path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path.name} is not a HiStream render request ({FORMAT}): write one with "
                         f"histream_core.render_request.save_render_request")
    settings = dict(data["settings"])
    preset = data["preset"]
    config = HiStreamConfig.preset(preset, **settings)  # stored settings override the preset's (window_chunks)
    prompts = [(int(s), c) for s, c in data["prompts"]]
    context = prompts[0][1] if len(prompts) == 1 else PromptSchedule(tuple(prompts))
    ctl = data["control"]
    control = None if ctl is None else VaceControl(ctl["frames"], ctl["masks"], ctl["strengths"])
    return RenderRequest(config, context, int(data["seed"]), data["negative"], control)
