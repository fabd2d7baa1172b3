"""What a PyTorch pickle refers to, read with `pickletools` (its opcodes only: nothing is imported or executed).

A checkpoint of tensors refers to a few torch rebuild functions, storage and dtype classes and `OrderedDict`. Anything
else is either Python objects stored beside the tensors (a training `Namespace`, numpy arrays) or code that runs on
unpickling (`posix.system`, `builtins.eval`, ...). The loader uses this to say which, instead of reading torch's
error wording, which changes between releases.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

# globals a plain tensor checkpoint refers to (torch.save of dicts of tensors, any torch since 1.6)
_TENSOR_GLOBALS = {
    "collections.OrderedDict", "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_meta_tensor_no_storage", "torch._utils._rebuild_wrapper_subclass",
    "torch._utils._rebuild_qtensor", "torch._utils._rebuild_sparse_tensor", "torch.serialization._get_layout",
    "torch._tensor._rebuild_from_type_v2", "torch.Size", "torch.device", "torch.storage.UntypedStorage",
    "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.slice", "builtins.complex",
}
_TENSOR_PREFIXES = ("torch.float", "torch.bfloat", "torch.int", "torch.uint", "torch.bool", "torch.complex",
                    "torch.half", "torch.double", "torch.long", "torch.short", "torch.cfloat", "torch.cdouble")
# modules whose functions run code or touch the system when called by the unpickler
_CODE_MODULES = {"os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "runpy", "importlib", "pty",
                 "webbrowser", "ctypes", "code", "codeop", "multiprocessing", "asyncio", "pickle", "_pickle",
                 "marshal", "types", "operator", "functools", "commands", "platform", "signal", "tempfile"}
_CODE_BUILTINS = {"eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "__import__", "globals",
                  "locals", "vars", "input", "breakpoint", "apply", "execfile", "memoryview", "type", "object"}
_MAX_PICKLES = 8  # a legacy (non-zip) torch file is a handful of pickles followed by raw storage bytes


def is_tensor_global(name: str) -> bool:
    if name in _TENSOR_GLOBALS or name.startswith(_TENSOR_PREFIXES):
        return True
    module, _, attr = name.rpartition(".")
    return module == "torch" and attr.endswith("Storage")  # torch.FloatStorage, torch.BFloat16Storage, ...


def runs_code(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    root = module.split(".")[0]
    return root in _CODE_MODULES or (module in ("builtins", "__builtin__") and attr in _CODE_BUILTINS)


def _pickle_streams(path: Path) -> list[bytes]:
    """The pickles to scan: a zip-format file's `*.pkl` members, else the file itself (legacy or raw pickle)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return [z.read(n) for n in z.namelist() if n.endswith(".pkl")]
    return [path.read_bytes()]


_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8"}
_GET_OPS, _PUT_OPS = {"GET", "BINGET", "LONG_BINGET"}, {"PUT", "BINPUT", "LONG_BINPUT"}
_MARK = object()


def _globals_in_one(ops) -> list[str]:
    """Global names one pickle refers to. A small stack model follows strings through the memo, since protocol 4's
    STACK_GLOBAL takes module and name from the stack (often re-read from the memo)."""
    found: list[str] = []
    stack: list = []
    memo: dict = {}
    for op, arg, _pos in ops:
        name = op.name
        if name in _STRING_OPS:
            stack.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
        elif name in _GET_OPS:
            stack.append(memo.get(arg))
        elif name in _PUT_OPS:
            memo[arg] = stack[-1] if stack else None
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
        elif name == "STACK_GLOBAL":
            module, attr = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
            found.append(f"{module}.{attr}" if isinstance(module, str) and isinstance(attr, str) else "<unknown>")
            stack[-2:] = [None]
        else:
            if name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            if pickletools.markobject in op.stack_before:  # pops everything down to the last MARK
                while stack and stack.pop() is not _MARK:
                    pass
                extra = len(op.stack_before) - op.stack_before.index(pickletools.stackslice) - 1 \
                    if pickletools.stackslice in op.stack_before else 0
                del stack[len(stack) - extra:]
            else:
                del stack[max(0, len(stack) - len(op.stack_before)):]
            stack += [_MARK if item is pickletools.markobject else None for item in op.stack_after]
    return found


def _globals_of(stream: bytes) -> list[str]:
    """Global names referred to by the pickles at the start of `stream` (a legacy torch file holds several, then raw
    storage bytes, where parsing stops)."""
    found: list[str] = []
    buf = io.BytesIO(stream)
    for _ in range(_MAX_PICKLES):
        if buf.tell() >= len(stream):
            break
        collected: list = []
        try:
            collected.extend(pickletools.genops(buf))
        except Exception:  # noqa: BLE001 - raw storage bytes or a cut file: keep what parsed before it
            found += _globals_in_one(collected)
            break
        found += _globals_in_one(collected)
    return found


def scan_globals(path: str | Path) -> list[str]:
    """Every non-tensor global the file's pickles refer to, in order of first reference (empty for a plain
    checkpoint, and for a file too damaged to parse)."""
    try:
        streams = _pickle_streams(Path(path))
    except (OSError, zipfile.BadZipFile, KeyError, EOFError):
        return []
    names = [g for stream in streams for g in _globals_of(stream) if not is_tensor_global(g)]
    return list(dict.fromkeys(names))
