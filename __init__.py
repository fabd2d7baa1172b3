"""HiStream for ComfyUI: 1080p autoregressive video on a causal Wan2.1 (arXiv 2512.21338). Registration only."""

import importlib.util

if importlib.util.find_spec("comfy") is None:  # imported outside a ComfyUI host (e.g. by pytest walking the repo)
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
