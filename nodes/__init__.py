"""ComfyUI adapters for the HiStream stages (no math here: see histream_core)."""

from .denoise_nodes import CachedUpsampleRefine, LowResDenoise
from .loader_node import LoadHiStreamModel
from .plan_nodes import AnchorCacheChunker, SparseStepSampler
from .schedule_node import HiStreamPromptSchedule
from .toy_nodes import HiStreamToyDecode, HiStreamToyPrompt

NODE_CLASS_MAPPINGS = {
    "LoadHiStreamModel": LoadHiStreamModel,
    "AnchorCacheChunker": AnchorCacheChunker,
    "SparseStepSampler": SparseStepSampler,
    "LowResDenoise": LowResDenoise,
    "CachedUpsampleRefine": CachedUpsampleRefine,
    "HiStreamPromptSchedule": HiStreamPromptSchedule,
    "HiStreamToyPrompt": HiStreamToyPrompt,
    "HiStreamToyDecode": HiStreamToyDecode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadHiStreamModel": "Load HiStream Model",
    "AnchorCacheChunker": "Anchor Cache Chunker (temporal)",
    "SparseStepSampler": "Sparse Step Sampler (timestep)",
    "LowResDenoise": "Low-Res Denoise (spatial 1)",
    "CachedUpsampleRefine": "Cached Upsample Refine (spatial 2)",
    "HiStreamPromptSchedule": "HiStream Prompt Schedule",
    "HiStreamToyPrompt": "HiStream Toy Prompt (demo)",
    "HiStreamToyDecode": "HiStream Toy Decode (demo)",
}
