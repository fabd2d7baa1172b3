"""HiStream core: pure PyTorch causal Wan2.1 engine with Dual-Resolution Caching, an anchor + sliding-window KV
cache and sparse per-chunk step schedules (arXiv 2512.21338). Never imports ComfyUI."""

from .cache import KVCache, TextCache
from .config import ConfigError, HiStreamConfig, WanConfig
from .model import CausalWanModel
from .noise import NoiseSource
from .pipeline import ChunkResult, HiStreamPipeline
from .prompt_schedule import PromptSchedule, PromptScheduleError
from .schedule import ChunkSchedule, ScheduleError, StepPlan
from .step import StepInfo

__all__ = [
    "CausalWanModel", "ChunkResult", "ChunkSchedule", "ConfigError", "HiStreamConfig", "HiStreamPipeline",
    "KVCache", "NoiseSource", "PromptSchedule",
    "PromptScheduleError", "ScheduleError", "StepInfo", "StepPlan", "TextCache", "WanConfig",
]
