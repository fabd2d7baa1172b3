"""Calls into host APIs whose signatures grew between ComfyUI releases: decided by signature, never by version."""

from __future__ import annotations

import inspect
from collections.abc import Callable


def accepted_keywords(fn: Callable, **optional) -> dict:
    """The keywords of `optional` that `fn` accepts (all of them where it takes **kwargs)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(optional)
    names = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                  inspect.Parameter.KEYWORD_ONLY)}
    return {k: v for k, v in optional.items() if k in names}


def call_accepting(fn: Callable, *args, optional: dict | None = None, **kwargs):
    """`fn(*args, **kwargs, **<the optional keywords fn accepts>)`: pass a newer host's extra arguments only to
    a host that has them (e.g. `load_diffusion_model_state_dict(..., metadata=, disable_dynamic=)`)."""
    return fn(*args, **kwargs, **accepted_keywords(fn, **(optional or {})))
