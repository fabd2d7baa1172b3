"""Attention backends: sageattention (lazy, optional, CUDA fp16/bf16 only) with a torch SDPA fallback.

The backend is carried by the caller: `CausalWanModel(attention_backend=...)` passes it to every attention call of
its forward and of its KV caches. Where that is None, the process default applies: `set_backend()` if set, else the
env var HISTREAM_ATTENTION = auto | sdpa | sageattention (default auto). Masked attention (the reference
block-causal forward) always uses SDPA. All tensors are [B, S, heads, head_dim].
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

log = logging.getLogger("histream")
BACKENDS = ("auto", "sdpa", "sageattention")

_state = {"backend": None, "sage": None, "sage_failed": False, "warned": False}


def check_backend(name: str | None) -> str | None:
    if name is not None and name not in BACKENDS:
        raise ValueError(f"attention backend {name!r} is unknown; choose one of {list(BACKENDS)}")
    return name


def set_backend(name: str | None) -> None:
    """The process default for callers that carry no backend (None: back to HISTREAM_ATTENTION)."""
    _state["backend"] = check_backend(name)


def current_backend(carried: str | None = None) -> str:
    """The backend a call uses: the one it carries, else the process default."""
    name = carried or _state["backend"] or os.environ.get("HISTREAM_ATTENTION", "auto")
    if name not in BACKENDS:
        raise ValueError(f"HISTREAM_ATTENTION={name!r} is unknown; choose one of {list(BACKENDS)}")
    return name


def _load_sage():
    if _state["sage"] is None and not _state["sage_failed"]:
        try:
            from sageattention import sageattn

            _state["sage"] = sageattn
        except (ImportError, OSError, RuntimeError) as exc:
            _state["sage_failed"] = True
            log.info("sageattention unavailable (%s); using torch SDPA", exc)
    return _state["sage"]


def sage_available() -> bool:
    return torch.cuda.is_available() and _load_sage() is not None


def _use_sage(q: torch.Tensor, mask, backend: str | None = None) -> bool:
    backend = current_backend(backend)
    if backend == "sdpa" or mask is not None or not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    if _load_sage() is None:
        if backend == "sageattention" and not _state["warned"]:
            _state["warned"] = True
            log.warning("sageattention was requested but cannot be imported; falling back to torch SDPA")
        return False
    return True


def sdpa(q, k, v, mask=None):
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              backend: str | None = None) -> torch.Tensor:
    """softmax(q·kᵀ/√d)·v; `mask` is a boolean [Sq, Sk] (True = attend); `backend` None = the process default."""
    if _use_sage(q, mask, backend):
        try:
            # sageattention smooths k in place (k -= mean): hand it a copy, k is often a view of the KV cache
            return _state["sage"](q, k.clone(), v, tensor_layout="NHD", is_causal=False)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - unsupported arch/head size, Triton errors: disable sage
            _state["sage_failed"], _state["sage"] = True, None
            log.warning("sageattention failed (%s: %s); using torch SDPA from now on", type(exc).__name__, exc)
    return sdpa(q, k, v, mask)
