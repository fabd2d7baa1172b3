"""A plain module name for pickled HiStream SAMPLERs.

Engines that wrap SamplerCustomAdvanced ship samplers to worker processes by pickling them. ComfyUI imports the pack
under its folder's name, which a worker need not share, so a pickled HiStream Sampler refers to
`histream_pickle.restore_sampler` instead: any process with the pack's folder on sys.path imports it by that name.
Its state is plain data (numbers, strings, dicts). The pack itself (and with it ComfyUI's modules) is loaded only when
a sampler is restored in a process that has not loaded it yet.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent
_sampler_class = None  # set by nodes/sampler_node.py when the pack is loaded


def register(cls) -> None:
    global _sampler_class
    _sampler_class = cls


def restore_sampler(state: dict):
    if _sampler_class is None:
        _load_pack()
    return _sampler_class.from_state(state)


def _load_pack() -> None:
    """The pack as ComfyUI loads a custom node: its root package under its folder's name."""
    name = PACK_ROOT.name
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PACK_ROOT / "__init__.py",
                                                      submodule_search_locations=[str(PACK_ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    if _sampler_class is None:
        raise RuntimeError(f"a pickled HiStream Sampler needs the HiStream pack at {PACK_ROOT} loaded with its nodes: "
                           f"put the ComfyUI root (the folder holding the `comfy` package) on sys.path")
