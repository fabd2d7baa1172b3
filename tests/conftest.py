"""Shared fixtures: the ComfyUI host, in-process (``comfy_modules``) and as a server (``comfy_server``).

Host tests are marked ``@pytest.mark.comfy``. Where no host is found they skip, except under CI (``CI`` set),
where a missing host is an error: CI must run them.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for p in (str(ROOT), str(TESTS)):  # histream_core as a top-level package; test helpers by name
    if p not in sys.path:
        sys.path.insert(0, p)
# Never import this repository's `nodes/` package as the top-level name `nodes`: that name is ComfyUI's
# `nodes.py` (import_comfy puts the host root first on sys.path). Import the pack with comfy_host.load_pack.

from comfy_host import (
    TEST_NODES,
    TEST_NODES_NAME,
    ComfyServer,
    comfyui_available,
    comfyui_path,
    import_comfy,
    load_pack,
)

HOST_FIXTURES = {"comfy_root", "comfy_modules", "comfy_server", "comfy_server_factory"}


def pytest_collection_modifyitems(config, items):
    """Tests that use a host fixture are marked ``comfy`` too, so ``-m "not comfy"`` leaves out every host test."""
    for item in items:
        if HOST_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.comfy)


def _host_or_skip():
    root = comfyui_path()
    if not comfyui_available(root):
        reason = f"no ComfyUI host at {root}: set COMFYUI_PATH to a ComfyUI checkout to run the host tests"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run them)", pytrace=False)
        pytest.skip(reason)
    return root


@pytest.fixture(scope="session")
def comfy_root():
    """The host ComfyUI root (skips the test when there is none)."""
    return _host_or_skip()


@pytest.fixture(scope="session")
def pack(comfy_modules):
    """This repository imported as ComfyUI loads a custom node (see comfy_host.load_pack), in process."""
    return load_pack()


@pytest.fixture(scope="session")
def comfy_modules(comfy_root, tmp_path_factory):
    """The host's modules imported in this process on CPU, once per session.

    Returns a namespace: ``root``, ``model_management``, ``ops``, ``utils``, ``sd``, ``model_patcher``,
    ``latent_formats``, ``wan_model`` (``comfy.ldm.wan.model``), ``folder_paths``. Other host modules
    (``nodes``, ``comfy_extras.nodes_wan``, ...) can be imported normally after this fixture has run.
    """
    import_comfy(comfy_root, cpu=True, base_directory=tmp_path_factory.mktemp("comfy-base"))
    import comfy.latent_formats
    import comfy.ldm.wan.model
    import comfy.model_management
    import comfy.model_patcher
    import comfy.ops
    import comfy.sd
    import comfy.utils
    import folder_paths

    return types.SimpleNamespace(
        root=comfy_root,
        model_management=comfy.model_management,
        ops=comfy.ops,
        utils=comfy.utils,
        sd=comfy.sd,
        model_patcher=comfy.model_patcher,
        latent_formats=comfy.latent_formats,
        wan_model=comfy.ldm.wan.model,
        folder_paths=folder_paths,
    )


@pytest.fixture(scope="session")
def comfy_server_factory(comfy_root, tmp_path_factory):
    """``make(*extra_args, pack=True, test_nodes=True, **kwargs) -> ComfyServer``: start another server (for
    instance with ``--cache-none``), stopped at the end of the session. ``pack=False`` leaves this repository out
    of ``custom_nodes``; ``test_nodes`` links ``tests/comfy_test_nodes`` (when present) as ``HiStreamTestNodes``;
    ``kwargs`` go to :class:`ComfyServer` (``extra_custom_nodes={name: dir}``, ``env``, ...)."""
    servers: list[ComfyServer] = []

    def make(*extra_args: str, pack: bool = True, test_nodes: bool = True, **kwargs) -> ComfyServer:
        if not pack:
            kwargs["pack_dir"] = None
        if test_nodes and (TEST_NODES / "__init__.py").is_file():
            kwargs["extra_custom_nodes"] = {TEST_NODES_NAME: TEST_NODES, **(kwargs.get("extra_custom_nodes") or {})}
        server = ComfyServer(tmp_path_factory.mktemp("comfy-server"), comfy_root=comfy_root,
                             extra_args=extra_args, **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def comfy_server(comfy_server_factory):
    """One headless ComfyUI server for the session, with this repository in ``custom_nodes/ComfyUI-HiStream`` and
    the test-only nodes of ``tests/comfy_test_nodes`` in ``custom_nodes/HiStreamTestNodes``."""
    return comfy_server_factory()


@pytest.fixture
def previews(comfy_modules):
    """The streaming-decode tests' record of (kind, ...) events: progress-bar updates with their preview size (a
    test adds model forwards and decoder calls through hooks)."""
    from comfy.cli_args import LatentPreviewMethod, args

    events = []
    old = args.preview_method
    args.preview_method = LatentPreviewMethod.Latent2RGB
    comfy_modules.utils.set_progress_bar_global_hook(lambda v, total, preview, node_id=None: events.append(
        ("bar", v, None if preview is None else preview[1].size)))
    yield events
    comfy_modules.utils.set_progress_bar_global_hook(None)
    args.preview_method = old


@pytest.fixture(scope="module")
def patcher(comfy_modules):
    """The tiny Wan2.1 model (tiny_state_dict(seed=0)) loaded the stock "Load Diffusion Model" way, once per module."""
    from nodes_support import tiny_state_dict

    sd = {f"model.diffusion_model.{k}": v for k, v in tiny_state_dict(seed=0).items()}
    return comfy_modules.sd.load_diffusion_model_state_dict(sd)
