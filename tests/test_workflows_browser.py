"""The shipped workflows in the real ComfyUI frontend (headless Chromium), dropped on the canvas as a user does.

Per frontend (the host's pinned one, and the newest where it serves: see frontend_browser.frontends_for_host) one
server and one page; per workflow: no error toast or dialog, no console error (but those allowlisted, with a
reason, in data/browser_console_allowlist.json), no missing node, no two nodes overlapping at the sizes the frontend
gave them, the whole graph in view as the file opens, and the frontend's own graphToPrompt() equal to the API
prompt the server tests build (tests/workflow_convert.py), which test_workflows_server.py runs. A screenshot of each
lands in tests/_artifacts/browser/<frontend>/. Under CI a missing browser, driver or frontend is a failure.
"""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import pytest
from comfy_host import comfyui_available, comfyui_path
from frontend_browser import (
    APP_READY_JS,
    PROMPT_JS,
    USER_SETTINGS,
    VIEWPORT,
    allowed,
    chromium_path,
    clipped_group_titles,
    console_allowlist,
    covered,
    cut_node_titles,
    frontend_static,
    frontends_for_host,
    load_workflow_as_drop,
    outside_view,
    overlapping_pairs,
)
from vace_helpers import write_control_video
from workflow_convert import ui_to_api

pytestmark = pytest.mark.comfy
TESTS = Path(__file__).resolve().parent
WORKFLOWS = sorted((TESTS.parent / "workflows").glob("*.json"))
ARTIFACTS = TESTS / "_artifacts" / "browser"
_HOST = comfyui_path()
FRONTENDS = frontends_for_host(_HOST) if comfyui_available(_HOST) else ["no-host"]  # comfy_root skips / fails

# widgets whose value is a file the user supplies: (node type, input) -> folder. The test server gets an empty file
# of each name, so the workflow opens as it does for a user who has the models (no missing-models dialog).
FILE_WIDGETS = {
    ("LoadHiStreamModel", "model_name"): "diffusion_models",
    ("LoadHiStreamModel", "vace_model"): "diffusion_models",
    ("LoadHiStreamModel", "lora"): "loras",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("LoadVideo", "file"): "input",
    ("LoadImage", "image"): "input",
    ("LoadLatent", "latent"): "input",
}


def need(ok, reason: str):
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI must run the browser tests: .ci/setup installs it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright is not installed")
    executable = chromium_path()
    need(executable, "no Chromium (apt-get install chromium, or set CHROMIUM)")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable, headless=True,
                                          args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def supply_model_files(server) -> None:
    """An empty file for each file name the workflows' FILE_WIDGETS hold (the toy model is the pack's own)."""
    for path in WORKFLOWS:
        for node in json.loads(path.read_text())["nodes"]:
            info = server.object_info(node["type"]) if node["type"] != "Note" else None
            if info is None:
                continue
            names = [name for name, spec in _widget_specs(info)]
            folders = {m["name"]: m["directory"] for m in node.get("properties", {}).get("models", [])}
            for name, value in zip(names, node.get("widgets_values") or []):
                folder = FILE_WIDGETS.get((node["type"], name))
                folder = folder and folders.get(value, folder)  # a TAE for VAELoader lives in vae_approx
                if folder and value not in ("none", "histream_toy_dit.safetensors"):
                    target = (server.input_dir if folder == "input" else server.model_dir(folder)) / value
                    target.touch()
    write_control_video(server.input_dir / "control_video.mp4", frames=9, size=64)  # a real one: it is previewed
    from PIL import Image

    Image.new("RGB", (80, 48), (200, 120, 40)).save(server.input_dir / "start_image.png")  # previewed as well


def _widget_specs(info):
    from workflow_convert import widget_inputs

    return widget_inputs(info)


@pytest.fixture(scope="module", params=FRONTENDS)
def frontend(request, comfy_root, comfy_server_factory, browser):
    version = request.param
    static = frontend_static(version)
    need((static / "index.html").is_file(), f"comfyui-frontend-package {version} is not installed at {static}")
    server = comfy_server_factory("--front-end-root", str(static))
    supply_model_files(server)
    server.post_json("/settings", USER_SETTINGS)
    page = browser.new_page(viewport=VIEWPORT)
    messages: list[str] = []
    page.on("console", lambda m: messages.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: messages.append(f"page error: {e}"))
    page.goto(server.url)
    page.wait_for_function(APP_READY_JS, timeout=90000)
    page.wait_for_timeout(1500)  # the start-up work (settings, extensions, the default graph) ends
    startup = list(messages)
    yield types.SimpleNamespace(version=version, server=server, page=page, messages=messages, startup=startup,
                                artifacts=ARTIFACTS / version)
    page.close()


def open_workflow(frontend, path: Path) -> dict:
    frontend.page.keyboard.press("Escape")  # nothing left open from the previous workflow
    frontend.messages.clear()
    state = load_workflow_as_drop(frontend.page, path.name, path.read_text())
    state["messages"] = list(frontend.messages)
    frontend.artifacts.mkdir(parents=True, exist_ok=True)
    frontend.page.screenshot(path=str(frontend.artifacts / f"{path.stem}.png"))
    (frontend.artifacts / f"{path.stem}.state.json").write_text(json.dumps(state, indent=1))
    return state


def skip_without_taehv(comfy_root, path) -> None:
    """A workflow with the Wan 2.1 TAE needs a host whose VAELoader lists models/vae_approx (ComfyUI >= v0.8.0)."""
    if "lighttaew2_1.safetensors" in path.read_text() and not (Path(comfy_root) / "comfy/taesd/taehv.py").is_file():
        pytest.skip("a tiny decoder (TAE) needs ComfyUI v0.8.0 or newer")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_opens_cleanly_in_the_frontend(frontend, path, comfy_root):
    skip_without_taehv(comfy_root, path)
    workflow = json.loads(path.read_text())
    state = open_workflow(frontend, path)
    problems = []
    if state["error_toasts"]:
        problems.append(f"error alert on load: {state['error_toasts']}")
    if state["dialogs"]:
        problems.append(f"a dialog opened on load: {state['dialogs']}")
    errors = [m for m in state["messages"] if not allowed(m, console_allowlist())]
    if errors:
        problems.append(f"console errors while loading: {errors}")
    missing = frontend.page.evaluate(
        "() => (window.app.graph._nodes || window.app.graph.nodes).map(n => n.type)"
        ".filter(t => !(t in window.LiteGraph.registered_node_types))")
    if missing:
        problems.append(f"node types the frontend does not know: {missing}")
    if sorted(str(n["id"]) for n in state["nodes"]) != sorted(str(n["id"]) for n in workflow["nodes"]):
        problems.append(f"nodes on the canvas {[n['id'] for n in state['nodes']]} are not the file's")
    if overlapping_pairs(state["nodes"]):
        problems.append(f"overlapping nodes: {overlapping_pairs(state['nodes'])}")
    if cut_node_titles(state):
        problems.append(f"node titles cut short: {cut_node_titles(state)}")
    if clipped_group_titles(state):
        problems.append(f"group titles wider than their group: {clipped_group_titles(state)}")
    if outside_view(state):
        problems.append(f"out of view as it opens: {outside_view(state)}")
    if state["low_quality"]:
        problems.append(f"opens zoomed out to {state['ds']['scale']}, where the frontend draws nodes without text")
    hidden = covered(frontend.page, state)
    if hidden:
        problems.append(f"under the frontend's menus or minimap as it opens: {hidden}")
    assert not problems, f"{path.name} in frontend {frontend.version}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_frontend_prompt_equals_the_tests_prompt(frontend, path, comfy_root):
    skip_without_taehv(comfy_root, path)
    open_workflow(frontend, path)
    info = frontend.server.object_info()
    from_frontend = frontend.page.evaluate(PROMPT_JS)
    for node in from_frontend.values():  # inputs the node does not define (the server ignores them), such as
        spec = info[node["class_type"]]["input"]  # LoadVideo's "video-preview" widget, are the frontend's own
        defined = {**spec.get("required", {}), **spec.get("optional", {})}
        node["inputs"] = {k: v for k, v in node["inputs"].items() if k in defined}
    from_tests = ui_to_api(json.loads(path.read_text()), info)
    # _meta.title is the title the frontend shows, which the server never reads: 1.58.1 shows some stock nodes under
    # its own translated names (Canny as "Detect Edges (Canny)"); the titles this repository sets must come through
    titles = {nid: node.pop("_meta")["title"] for nid, node in from_frontend.items()}
    for nid, node in from_tests.items():
        title = node.pop("_meta")["title"]
        if any(n["id"] == int(nid) and n.get("title") for n in json.loads(path.read_text())["nodes"]):
            assert titles[nid] == title, (path.name, nid, titles[nid], title)
    assert from_frontend == from_tests, (
        f"{path.name} in frontend {frontend.version}: graphToPrompt differs from ui_to_api:\n"
        f"frontend {json.dumps(from_frontend, sort_keys=True)}\ntests    {json.dumps(from_tests, sort_keys=True)}")
