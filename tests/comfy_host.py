"""Helpers to test the pack against a real ComfyUI host, in-process or as a headless server (see README.md here)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_DIR_NAME = "ComfyUI-HiStream"
TEST_NODES = REPO_ROOT / "tests" / "comfy_test_nodes"  # test-only node pack (never shipped)
TEST_NODES_NAME = "HiStreamTestNodes"  # its folder name in a test server's custom_nodes/

# ----------------------------------------------------------------------------------------------- locating the host
def comfyui_path() -> Path:
    """The host ComfyUI root: ``$COMFYUI_PATH`` or ``<repo>/../shared/comfyui``."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "comfyui").resolve()


def comfyui_available(path: Path | None = None) -> bool:
    root = path or comfyui_path()
    return (root / "main.py").is_file() and (root / "comfy" / "model_management.py").is_file()


def require_comfyui() -> Path:
    """Return the host root, or skip the calling test when no ComfyUI host is found."""
    import pytest

    root = comfyui_path()
    if not comfyui_available(root):
        pytest.skip(
            f"no ComfyUI host at {root}: set COMFYUI_PATH to a ComfyUI checkout to run the host integration tests"
        )
    return root


# ------------------------------------------------------------------------------------------------ in-process host
_IMPORTED_ROOT: Path | None = None


def _module_root(module_name: str) -> Path | None:
    """Directory holding an imported module's file, or a namespace package's first directory."""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if file is not None:
        return Path(file).resolve().parent
    paths = list(getattr(module, "__path__", []) or [])
    return Path(paths[0]).resolve() if paths else None


def import_comfy(root: Path | None = None, *, cpu: bool = True, base_directory: str | os.PathLike | None = None) -> Path:
    """Make the host's modules importable in this process; return the host root.

    After this call ``import comfy.model_management``, ``comfy.ops``, ``comfy.ldm.wan.model``, ``comfy.sd``,
    ``folder_paths``, ``nodes`` (ComfyUI's ``nodes.py``) and ``comfy_extras.*`` work. Idempotent.

    * The host root goes first on ``sys.path``: the host's top-level names (``nodes``, ``utils``, ``app``, ...)
      must win over this repository's ``nodes/`` package, which is only ever imported as part of the pack.
    * ``comfy.cli_args.args`` is parsed from an empty command line (as ComfyUI does when imported as a
      library); ``cpu=True`` sets ``args.cpu`` before ``comfy.model_management`` is imported, so its device is the
      CPU even where an accelerator exists.
    * ``args.base_directory`` is set to ``base_directory`` (a fresh temporary directory when None) before
      ``folder_paths`` is imported, because importing ``folder_paths`` creates its input directory.
    * Bytecode writing is turned off for the rest of the process so that the host tree stays unmodified.
    """
    global _IMPORTED_ROOT
    root = Path(root).resolve() if root is not None else comfyui_path()
    if _IMPORTED_ROOT is not None:
        if _IMPORTED_ROOT != root:
            raise RuntimeError(f"ComfyUI was already imported from {_IMPORTED_ROOT}; cannot also import {root}")
        return root
    if not comfyui_available(root):
        raise FileNotFoundError(f"no ComfyUI host at {root} (set COMFYUI_PATH)")

    for name in ("comfy", "nodes", "folder_paths", "utils"):
        if name not in sys.modules:
            continue
        loaded_from = _module_root(name)
        if loaded_from is None or root not in (loaded_from, loaded_from.parent):
            raise RuntimeError(
                f"module {name!r} is already imported from {loaded_from}, not from the ComfyUI host {root}: "
                "import this repository's packages through the pack (see load_pack), never as top-level names"
            )

    sys.dont_write_bytecode = True
    with contextlib.suppress(ValueError):
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))

    import comfy.options  # noqa: F401  (args_parsing stays False: arguments come from an empty command line)
    from comfy.cli_args import args

    if cpu:
        args.cpu = True
    if "folder_paths" not in sys.modules:
        if base_directory is None and args.base_directory is None:
            base_directory = tempfile.mkdtemp(prefix="histream-comfy-base-")
            atexit.register(shutil.rmtree, base_directory, ignore_errors=True)
        if base_directory is not None:
            args.base_directory = str(base_directory)

    import comfy.model_management as mm

    if cpu and mm.get_torch_device().type != "cpu":
        raise RuntimeError("comfy.model_management was imported before args.cpu could be set")
    _IMPORTED_ROOT = root
    return root


def load_pack(module_name: str = "comfyui_histream_under_test"):
    """Import this repository as a package the way ComfyUI loads a custom node (its root ``__init__.py``, with
    relative imports to ``nodes/`` and ``histream_core/``). Call :func:`import_comfy` first."""
    import importlib.util

    if module_name in sys.modules:
        return sys.modules[module_name]
    init = REPO_ROOT / "__init__.py"
    if not init.is_file():
        raise FileNotFoundError(f"the pack has no {init.name} at the repository root")
    spec = importlib.util.spec_from_file_location(module_name, init, submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


# ---------------------------------------------------------------------------------------------------- the server
class ServerError(RuntimeError):
    """The server failed to start or died; the message ends with the tail of its log."""


class QueueError(RuntimeError):
    """``POST /prompt`` rejected the graph (HTTP 400); ``.response`` holds the decoded answer (``node_errors``)."""

    def __init__(self, message: str, response: Any):
        super().__init__(message)
        self.response = response


class WorkflowError(RuntimeError):
    """A queued prompt ended with ``status_str == 'error'``; ``.entry`` is its history entry."""

    def __init__(self, message: str, entry: dict, interrupted: bool):
        super().__init__(message)
        self.entry = entry
        self.interrupted = interrupted


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None):
    """Write ``tensors`` (name → torch.Tensor) as a safetensors file; returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=dict(metadata or {}))
    return path


class ComfyServer:
    """A headless ComfyUI server for integration tests.

    ``workdir`` receives everything the server writes: ``base/`` (its ``--base-directory``: ``models/``,
    ``custom_nodes/``, ``input/``, ``output/``, ``temp/``, ``user/``, the database), an empty front-end root and
    ``server.log`` (stdout and stderr). ``pack_dir`` (default: this repository) is linked into
    ``custom_nodes/<pack_name>``; pass ``pack_dir=None`` to run only the stock nodes, and ``extra_custom_nodes``
    (name → directory) to add other node packs. ``extra_args`` go to ``main.py`` as they are (``--cache-none``, ...).
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        comfy_root: str | os.PathLike | None = None,
        pack_dir: str | os.PathLike | None = REPO_ROOT,
        pack_name: str = PACK_DIR_NAME,
        extra_custom_nodes: Mapping[str, str | os.PathLike] | None = None,
        extra_args: Iterable[str] = (),
        python: str = sys.executable,
        cpu: bool = True,
        env: Mapping[str, str] | None = None,
    ):
        self.comfy_root = Path(comfy_root).resolve() if comfy_root else comfyui_path()
        self.workdir = Path(workdir).resolve()
        self.base_dir = self.workdir / "base"
        self.frontend_dir = self.workdir / "frontend"
        self.log_path = self.workdir / "server.log"
        self.custom_nodes_dir = self.base_dir / "custom_nodes"
        self.output_dir = self.base_dir / "output"
        self.input_dir = self.base_dir / "input"
        self.temp_dir = self.base_dir / "temp"
        self.user_dir = self.base_dir / "user"
        self.pack_dir = Path(pack_dir).resolve() if pack_dir is not None else None
        self.pack_name = pack_name
        self.extra_custom_nodes = dict(extra_custom_nodes or {})
        self.extra_args = list(extra_args)
        self.python = python
        self.cpu = cpu
        self.env = dict(env or {})
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.client_id = uuid.uuid4().hex
        self._object_info: dict | None = None

    # ------------------------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerError("the server is not started")
        return f"http://127.0.0.1:{self.port}"

    def model_dir(self, kind: str) -> Path:
        """``models/<kind>`` of the server (``diffusion_models``, ``vae``, ``loras``, ``text_encoders``, ...),
        created on demand."""
        path = self.base_dir / "models" / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_model(self, kind: str, name: str, tensors: Mapping[str, Any], metadata=None) -> Path:
        """Save ``tensors`` as ``models/<kind>/<name>`` (safetensors); returns the path."""
        return save_safetensors(self.model_dir(kind) / name, tensors, metadata)

    def _prepare(self) -> None:
        for path in (self.custom_nodes_dir, self.frontend_dir, self.output_dir, self.input_dir, self.temp_dir,
                     self.user_dir):
            path.mkdir(parents=True, exist_ok=True)
        links = dict(self.extra_custom_nodes)
        if self.pack_dir is not None:
            links[self.pack_name] = self.pack_dir
        for name, target in links.items():
            link = self.custom_nodes_dir / name
            if link.is_symlink() or link.exists():
                continue
            link.symlink_to(Path(target).resolve(), target_is_directory=True)

    def command(self) -> list[str]:
        args = [self.python, "main.py"]
        if self.cpu:
            args.append("--cpu")
        args += [
            "--listen", "127.0.0.1",
            "--port", str(self.port),
            "--disable-auto-launch",
            "--dont-print-server",
            "--front-end-root", str(self.frontend_dir),
            "--base-directory", str(self.base_dir),
            "--database-url", f"sqlite:///{self.base_dir / 'comfyui.db'}",
        ]
        return args + self.extra_args

    def start(self, timeout: float = 120.0) -> ComfyServer:
        """Start ``main.py`` and wait until ``GET /system_stats`` answers."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        if not comfyui_available(self.comfy_root):
            raise ServerError(f"no ComfyUI host at {self.comfy_root} (set COMFYUI_PATH)")
        self._prepare()
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", **self.env}
        deadline = time.monotonic() + timeout
        for attempt in range(3):  # the free port may be taken between probing and binding
            self.port = free_port()
            with open(self.log_path, "ab") as log:  # the child keeps its own handle
                log.write(f"\n=== start: {' '.join(self.command())}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    self.command(), cwd=self.comfy_root, env=env, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT,
                )
            atexit.register(self.stop)  # also when a test run is cut short
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    self.get_json("/system_stats", timeout=2)
                    return self
                except (OSError, urllib.error.URLError, ValueError):
                    time.sleep(0.2)
            else:
                self.stop()
                raise ServerError(f"ComfyUI did not answer /system_stats within {timeout:.0f} s{self._tail()}")
            in_use = "address already in use" in self.log_tail(20).lower()
            self.stop()
            if not in_use or attempt == 2:
                raise ServerError(f"ComfyUI exited during startup{self._tail()}")
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def restart(self, timeout: float = 120.0) -> ComfyServer:
        self.stop()
        self._object_info = None
        return self.start(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def cleanup(self) -> None:
        """Stop the server and delete its work directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --------------------------------------------------------------------------------------------------- logs
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _tail(self, lines: int = 60) -> str:
        return f"\n--- last {lines} lines of {self.log_path} ---\n{self.log_tail(lines)}"

    def import_failures(self) -> list[str]:
        """Log lines in which ComfyUI reports a custom node or extra node module that failed to import."""
        return [
            line.strip() for line in self.log_text().splitlines()
            if "(IMPORT FAILED)" in line or "IMPORT FAILED:" in line or "module for custom nodes:" in line
        ]

    # --------------------------------------------------------------------------------------------------- HTTP
    def _request(self, method: str, path: str, data: Any = None, timeout: float = 30.0) -> tuple[int, bytes]:
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    @staticmethod
    def _decode(raw: bytes) -> Any:
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def get_json(self, path: str, params: Mapping[str, Any] | None = None, timeout: float = 30.0) -> Any:
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        status, raw = self._request("GET", path, timeout=timeout)
        if status != 200:
            raise ServerError(f"GET {path} answered HTTP {status}: {raw[:2000]!r}")
        return self._decode(raw)

    def post_json(self, path: str, data: Any = None, timeout: float = 30.0, check: bool = True) -> Any:
        """POST ``data`` as JSON; returns the decoded answer (None for an empty body). With ``check=False`` the
        answer is returned as ``(status, decoded)`` instead of raising on a non-200 status."""
        status, raw = self._request("POST", path, {} if data is None else data, timeout=timeout)
        if not check:
            return status, self._decode(raw)
        if status != 200:
            raise ServerError(f"POST {path} answered HTTP {status}: {raw[:2000]!r}")
        return self._decode(raw)

    def object_info(self, node_class: str | None = None, refresh: bool = False) -> dict:
        """``/object_info`` (all node classes, cached) or one class's entry."""
        if self._object_info is None or refresh:
            self._object_info = self.get_json("/object_info", timeout=60)
        if node_class is None:
            return self._object_info
        if node_class not in self._object_info:
            raise KeyError(f"node class {node_class!r} is not registered in the server")
        return self._object_info[node_class]

    # ------------------------------------------------------------------------------------------------- prompts
    def queue(self, prompt: Mapping[str, Any], extra_data: Mapping[str, Any] | None = None) -> str:
        """Queue an API-format prompt; returns its prompt id. Raises :class:`QueueError` when validation fails."""
        payload = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = dict(extra_data)
        status, answer = self.post_json("/prompt", payload, check=False)
        if status != 200:
            raise QueueError(
                f"POST /prompt answered HTTP {status}:\n{json.dumps(answer, indent=1)[:6000]}{self._tail(30)}", answer
            )
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return (self.get_json(f"/history/{prompt_id}") or {}).get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 300.0, check: bool = True, poll: float = 0.1) -> dict:
        """Wait for a prompt to finish; returns its history entry (``outputs``, ``status``, ``prompt``, ``meta``).

        With ``check`` (the default) a prompt that ended in error raises :class:`WorkflowError` carrying the
        exception text and traceback; an interrupted prompt raises it with ``.interrupted = True``."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") == "success" or not check:
                    return entry
                raise self._workflow_error(prompt_id, entry)
            if self.proc is None or self.proc.poll() is not None:
                raise ServerError(f"the server died while prompt {prompt_id} ran{self._tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s{self._tail(30)}")
            time.sleep(poll)

    def run(self, prompt: Mapping[str, Any], timeout: float = 300.0, check: bool = True) -> dict:
        """Queue a prompt and wait for it; returns its history entry."""
        return self.wait(self.queue(prompt), timeout=timeout, check=check)

    def _workflow_error(self, prompt_id: str, entry: dict) -> WorkflowError:
        messages = entry.get("status", {}).get("messages", [])
        interrupted = any(event == "execution_interrupted" for event, _ in messages)
        details = []
        for event, data in messages:
            if event == "execution_error":
                details.append(
                    f"node {data.get('node_id')} ({data.get('node_type')}) raised "
                    f"{data.get('exception_type')}: {data.get('exception_message')}\n"
                    + "".join(data.get("traceback") or [])
                )
            elif event == "execution_interrupted":
                details.append(f"interrupted in node {data.get('node_id')} ({data.get('node_type')})")
        text = "\n".join(details) or json.dumps(messages)[:4000]
        return WorkflowError(f"prompt {prompt_id} failed:\n{text}{self._tail(30)}", entry, interrupted)

    def interrupt(self, prompt_id: str | None = None) -> None:
        """``POST /interrupt``: stops the running prompt (only ``prompt_id`` when given)."""
        self.post_json("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        """``POST /free``: asks the worker to unload all models and (``free_memory``) drop cached node outputs.
        The worker acts on it asynchronously, once the running prompt (if any) has finished."""
        self.post_json("/free", {"unload_models": unload_models, "free_memory": free_memory})

    def queue_state(self) -> dict:
        return self.get_json("/queue")

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until nothing is running or pending."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.queue_state()
            if not state["queue_running"] and not state["queue_pending"]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the queue did not drain within {timeout:.0f} s{self._tail(30)}")
            time.sleep(0.1)

    # ------------------------------------------------------------------------------------------------- outputs
    def output_files(self, entry: dict, node_id: str | None = None) -> list[Path]:
        """Paths of the files a history entry lists under ``outputs`` (images, videos, ...), optionally of one
        node; output and temp files alike."""
        roots = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}
        found = []
        for nid, outputs in entry.get("outputs", {}).items():
            if node_id is not None and str(nid) != str(node_id):
                continue
            for items in outputs.values():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and "filename" in item and item.get("type", "output") in roots:
                        found.append(roots[item.get("type", "output")] / item.get("subfolder", "") / item["filename"])
        return found
