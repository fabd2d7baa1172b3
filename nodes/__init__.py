"""ComfyUI adapters for the HiStream stages (no math here: see histream_core)."""

from .denoise_nodes import CachedUpsampleRefine, LowResDenoise
from .loader_node import LoadHiStreamModel
from .plan_nodes import AnchorCacheChunker, SparseStepSampler
from .prefix_nodes import HiStreamStartImage, HiStreamVideoPrefix
from .sampler_node import HiStreamSampler
from .schedule_node import HiStreamPromptSchedule
from .toy_nodes import HiStreamToyDecode, HiStreamToyPrompt

NODE_CLASS_MAPPINGS = {
    "LoadHiStreamModel": LoadHiStreamModel,
    "AnchorCacheChunker": AnchorCacheChunker,
    "SparseStepSampler": SparseStepSampler,
    "LowResDenoise": LowResDenoise,
    "CachedUpsampleRefine": CachedUpsampleRefine,
    "HiStreamPromptSchedule": HiStreamPromptSchedule,
    "HiStreamSampler": HiStreamSampler,
    "HiStreamToyPrompt": HiStreamToyPrompt,
    "HiStreamToyDecode": HiStreamToyDecode,
    "HiStreamStartImage": HiStreamStartImage,
    "HiStreamVideoPrefix": HiStreamVideoPrefix,
}
# the classic node API (V3 is marked unstable in both supported hosts); each class names its own display TITLE
NODE_DISPLAY_NAME_MAPPINGS = {name: cls.TITLE for name, cls in NODE_CLASS_MAPPINGS.items()}
