"""ComfyUI adapters for the HiStream stages (no math here: see histream_core)."""

from .denoise_nodes import CachedUpsampleRefine, LowResDenoise
from .loader_node import LoadHiStreamModel
from .plan_nodes import AnchorCacheChunker, SparseStepSampler
from .schedule_node import HiStreamPromptSchedule

NODE_CLASS_MAPPINGS = {
    "LoadHiStreamModel": LoadHiStreamModel,
    "AnchorCacheChunker": AnchorCacheChunker,
    "SparseStepSampler": SparseStepSampler,
    "LowResDenoise": LowResDenoise,
    "CachedUpsampleRefine": CachedUpsampleRefine,
    "HiStreamPromptSchedule": HiStreamPromptSchedule,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadHiStreamModel": "Load HiStream Model",
    "AnchorCacheChunker": "Anchor Cache Chunker (temporal)",
    "SparseStepSampler": "Sparse Step Sampler (timestep)",
    "LowResDenoise": "Low-Res Denoise (spatial 1)",
    "CachedUpsampleRefine": "Cached Upsample Refine (spatial 2)",
    "HiStreamPromptSchedule": "HiStream Prompt Schedule",
}
