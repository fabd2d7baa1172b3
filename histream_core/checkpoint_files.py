"""Reading checkpoint files: safetensors (single or sharded, optionally shape-only on `meta`) and PyTorch pickles
(always `weights_only=True`; a refused pickle is classified by what it refers to, read without running it)."""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .pickle_scan import runs_code, scan_globals

log = logging.getLogger(__name__)

SAFETENSORS_EXTS = (".safetensors", ".sft")
PICKLE_EXTS = (".pt", ".pth", ".ckpt", ".bin")
SHARD_RE = re.compile(r"^(?P<base>.+)-(?P<idx>\d{5})-of-(?P<total>\d{5})\.safetensors$")

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": getattr(torch, "float8_e4m3fn", torch.uint8), "F8_E5M2": getattr(torch, "float8_e5m2", torch.uint8),
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A checkpoint that HiStream cannot use; the message names what was found and the fix."""


# ---- reading files -----------------------------------------------------------------------------------------------
def read_state_dict(path: str | Path, meta: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a checkpoint file → (loaded dict, safetensors metadata or {}).

    `.pt`-style files may nest state dicts (see `unwrap_checkpoint`). They are always loaded with
    `weights_only=True`. `meta=True` returns shape-only `meta` tensors for safetensors (no data read) and
    memory-maps zip-format `.pt` files, for a cheap look at a large file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}; check the path and that the download finished")
    ext = path.suffix.lower()
    if ext in SAFETENSORS_EXTS:
        return _read_safetensors_set(path, meta)
    if ext in PICKLE_EXTS:
        return _read_pickle(path, meta), {}
    raise CheckpointError(f"{path.name} has an unsupported extension {ext!r}; expected a .safetensors file or a "
                          f"PyTorch checkpoint ({', '.join(PICKLE_EXTS)})")


def _corrupt(path: Path, why: object) -> CheckpointError:
    return CheckpointError(f"{path.name} could not be read ({why}): the file looks truncated or corrupt; "
                           f"re-download it and compare its size with the source")


def _read_safetensors_set(path: Path, meta: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """One file, or every shard of a `name-0000i-of-0000N.safetensors` set."""
    m = SHARD_RE.match(path.name)
    if not m:
        return _read_safetensors(path, meta)
    total = int(m["total"])
    shards = [path.with_name(f"{m['base']}-{i:05d}-of-{total:05d}.safetensors") for i in range(1, total + 1)]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise CheckpointError(f"{path.name} is one shard of {total}, but {', '.join(missing)} is missing next to it; "
                              f"download every shard into the same folder")
    sd, metadata = {}, {}
    for shard in shards:
        part, part_meta = _read_safetensors(shard, meta)
        sd.update(part)
        metadata.update(part_meta)
    log.info("merged %d safetensors shards of %s", total, m["base"])
    return sd, metadata


def _read_safetensors(path: Path, meta: bool) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            if meta:
                sd, names = {}, f.keys()
                for k in names:
                    sl = f.get_slice(k)
                    sd[k] = torch.empty(sl.get_shape(), dtype=_ST_DTYPES.get(sl.get_dtype(), torch.uint8),
                                        device="meta")
                return sd, metadata
        return load_file(str(path), device="cpu"), metadata
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:  # header/length problems
        raise _corrupt(path, f"safetensors: {e}") from None


def _read_pickle(path: Path, meta: bool) -> dict[str, Any]:
    mmap = meta and zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise _unreadable_pickle(path, e) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, not a state dict of tensors; "
                              f"HiStream needs a Wan2.1 text-to-video state dict")
    return obj


def _unreadable_pickle(path: Path, error: Exception) -> CheckpointError:
    """Why torch's weights-only loader refused the file, from what its pickles refer to (read, never run)."""
    names = scan_globals(path)
    code = [n for n in names if runs_code(n)]
    if code:
        return CheckpointError(f"{path.name} contains code ({', '.join(code)}): not a plain checkpoint; nothing was "
                               f"executed. Delete it unless you trust its source, and use the model's .safetensors "
                               f"file (it cannot carry code)")
    if names:
        return CheckpointError(f"{path.name} stores Python objects besides tensors ({', '.join(names[:4])}), which "
                               f"HiStream will not unpickle (weights_only=True); re-save it as a plain state dict or "
                               f"as .safetensors")
    why = str(error).splitlines()[0][:120] if str(error) else "empty"
    return _corrupt(path, f"{type(error).__name__}: {why}")
