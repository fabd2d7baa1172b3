"""The engine the toy runs on: the pack's ``histream_core``, imported by its place beside this package.

Inside ComfyUI both are subpackages of the pack (``<pack>.histream_core``); from the repository root (the command
line, the tests) both are top-level. The toy depends on the engine, never the reverse.
"""

from __future__ import annotations

import importlib

_CORE = f"{__package__.rpartition('.')[0]}.histream_core".lstrip(".")


def _core(module: str):
    return importlib.import_module(f"{_CORE}.{module}")


attention = _core("attention").attention
HiStreamConfig, WanConfig = _core("config").HiStreamConfig, _core("config").WanConfig
CausalWanModel, frame_mask_to_tokens = _core("model").CausalWanModel, _core("model").frame_mask_to_tokens
HiStreamPipeline = _core("pipeline").HiStreamPipeline
apply_rope = _core("rope").apply_rope
ChunkSchedule, StepPlan = _core("schedule").ChunkSchedule, _core("schedule").StepPlan


def load_wan_state_dict(*args, **kwargs):
    return _core("loading").load_wan_state_dict(*args, **kwargs)
