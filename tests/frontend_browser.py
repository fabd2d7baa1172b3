"""The real ComfyUI frontend in headless Chromium, for tests that load the shipped workflows as a user does.

* Frontends: each ``comfyui-frontend-package`` version is installed by ``.ci/setup`` into its own folder,
  ``<frontends>/<version>/comfyui_frontend_package/static`` (``<frontends>`` = ``$HISTREAM_FRONTENDS`` or
  ``.venv/frontends``), so several versions coexist; a server serves one through ``--front-end-root``.
  A host is tested with the frontend its ``requirements.txt`` pins, plus :data:`NEWEST_FRONTEND` on hosts from
  :data:`NEWEST_FRONTEND_MIN_HOST` on (the newest frontend does not serve against older servers).
* Browser: Debian's ``chromium`` (``$CHROMIUM`` or ``/usr/bin/chromium``) driven by ``playwright`` from PyPI,
  pointed at that executable (playwright's own browser download cannot work offline).
* :func:`load_workflow_as_drop` drops a workflow file on the canvas (a synthetic ``drop`` event carrying the file,
  which is what the frontend's drop handler reads) and returns what the page then shows (:data:`PAGE_STATE_JS`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from comfy_host import REPO_ROOT

NEWEST_FRONTEND = "1.58.1"  # newest comfyui-frontend-package on PyPI when this was written
NEWEST_FRONTEND_MIN_HOST = (0, 8, 0)
VIEWPORT = {"width": 1600, "height": 900}  # a laptop-sized window: the shipped view must fit it
ALLOWLIST_FILE = Path(__file__).resolve().parent / "data" / "browser_console_allowlist.json"
# the frontend's settings a returning user has: no first-run template browser or tour over the canvas
USER_SETTINGS = {"Comfy.TutorialCompleted": True}


def frontends_dir() -> Path:
    env = os.environ.get("HISTREAM_FRONTENDS")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / ".venv" / "frontends"


def frontend_static(version: str) -> Path:
    """The ``static`` folder of an installed frontend version (it may not exist)."""
    return frontends_dir() / version / "comfyui_frontend_package" / "static"


def host_version(comfy_root: Path) -> tuple[int, ...]:
    text = (Path(comfy_root) / "comfyui_version.py").read_text()
    found = re.search(r"__version__\s*=\s*['\"]([0-9.]+)", text)
    if not found:
        raise ValueError(f"no __version__ in {comfy_root}/comfyui_version.py")
    return tuple(int(p) for p in found.group(1).split("."))


def pinned_frontend(comfy_root: Path) -> str:
    text = (Path(comfy_root) / "requirements.txt").read_text()
    found = re.search(r"^comfyui-frontend-package==([0-9.]+)", text, re.MULTILINE)
    if not found:
        raise ValueError(f"{comfy_root}/requirements.txt pins no comfyui-frontend-package")
    return found.group(1)


def frontends_for_host(comfy_root: Path) -> list[str]:
    """Frontend versions to test against this host: its pin, and the newest where it serves."""
    versions = [pinned_frontend(comfy_root)]
    if host_version(comfy_root) >= NEWEST_FRONTEND_MIN_HOST and NEWEST_FRONTEND not in versions:
        versions.append(NEWEST_FRONTEND)
    return versions


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def console_allowlist() -> list[dict]:
    """Console messages a test may ignore: ``[{"pattern": regex, "reason": why}]`` (a reason is required)."""
    entries = json.loads(ALLOWLIST_FILE.read_text())
    for entry in entries:
        if not entry.get("reason") or not entry.get("pattern"):
            raise ValueError(f"{ALLOWLIST_FILE.name}: every entry needs a pattern and a reason: {entry}")
    return entries


def allowed(message: str, allowlist: list[dict]) -> bool:
    return any(re.search(entry["pattern"], message) for entry in allowlist)


APP_READY_JS = "() => !!(window.app && window.app.graph && window.app.canvas && window.app.canvas.ds)"

DROP_JS = """async ([name, text]) => {
  const file = new File([text], name, {type: 'application/json'});
  const transfer = new DataTransfer();
  transfer.items.add(file);
  const target = document.querySelector('canvas#graph-canvas') || window.app.canvasEl;
  const box = target.getBoundingClientRect();
  const at = {clientX: box.left + box.width / 2, clientY: box.top + box.height / 2};
  for (const type of ['dragenter', 'dragover', 'drop']) {
    target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer, ...at}));
  }
}"""

# What the page shows once the graph has loaded and been drawn: the nodes' bounding boxes (title bar included) in
# graph units, the view (ds offset/scale) and the canvas's size on screen, error toasts and open dialogs.
PAGE_STATE_JS = """() => {
  const app = window.app, graph = app.graph, canvas = app.canvas;
  const LG = window.LiteGraph, ctx = canvas.canvas.getContext('2d');
  const textWidth = (text, font) => { ctx.save(); ctx.font = font; const w = ctx.measureText(text).width;
                                      ctx.restore(); return w; };
  const nodes = (graph._nodes || graph.nodes).map(n => {
    const b = n.getBounding ? Array.from(n.getBounding()) : [n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30];
    // the frontend cuts a title short beyond the node's width less a title bar's height each side
    const title_room = n.size[0] - 2 * LG.NODE_TITLE_HEIGHT;
    const title_width = textWidth(n.title, `${LG.NODE_TEXT_SIZE}px ${LG.NODE_FONT}`);
    return {id: n.id, type: n.type, title: n.title, bounding: b, size: Array.from(n.size),
            min_size: Array.from(n.computeSize()), title_width, title_room};
  });
  const groups = (graph._groups || graph.groups || []).map(g => {
    // the title at the larger of the group's font and the frontend's own group font
    const title_width = textWidth(g.title, `${Math.max(g.font_size || 0, LG.GROUP_TEXT_SIZE || 0)}px ${LG.GROUP_FONT}`);
    return {title: g.title, bounding: Array.from(g._bounding || g.bounding), title_width};
  });
  const box = canvas.canvas.getBoundingClientRect();
  const visible = el => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const texts = sel => Array.from(document.querySelectorAll(sel)).filter(visible).map(e => e.innerText.trim());
  return {
    nodes, groups,
    ds: {scale: canvas.ds.scale, offset: Array.from(canvas.ds.offset)},
    low_quality: !!canvas.low_quality,
    canvas_box: [box.left, box.top, box.width, box.height],
    error_toasts: texts('.p-toast-message-error, .p-toast-message-warn'),
    dialogs: texts('.p-dialog'),
  };
}"""

PROMPT_JS = "async () => (await window.app.graphToPrompt()).output"


# counts finished app.loadGraphData calls (the drop handler ends in one), so a test can wait for the load to end
COUNT_LOADS_JS = """() => {
  const app = window.app;
  if (app.__histreamLoads !== undefined) return;
  app.__histreamLoads = 0;
  const load = app.loadGraphData.bind(app);
  app.loadGraphData = async (...args) => { try { return await load(...args); } finally { app.__histreamLoads++; } };
}"""


# closes the toasts an earlier load left (alerts stay until closed), so each load is judged on its own
CLOSE_TOASTS_JS = """() => document.querySelectorAll('.p-toast-message .p-toast-close-button')
  .forEach(b => b.click())"""


def load_workflow_as_drop(page, name: str, workflow_text: str, settle_ms: int = 500) -> dict:
    """Drop ``workflow_text`` (as the file ``name``) on the canvas and return :data:`PAGE_STATE_JS` after the
    frontend has configured, sized and drawn the graph."""
    page.evaluate(COUNT_LOADS_JS)
    page.evaluate(CLOSE_TOASTS_JS)
    page.wait_for_function("() => !document.querySelector('.p-toast-message')", timeout=5000)
    before = page.evaluate("() => window.app.__histreamLoads")
    page.evaluate(DROP_JS, [name, workflow_text])
    page.wait_for_function("n => window.app.__histreamLoads > n", arg=before, timeout=20000)
    page.wait_for_timeout(settle_ms)  # toasts, dialogs and the first frames of the loaded graph
    return page.evaluate(PAGE_STATE_JS)


def boxes_overlap(a, b) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def overlapping_pairs(nodes: list[dict]) -> list[tuple[str, str]]:
    pairs = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if boxes_overlap(a["bounding"], b["bounding"]):
                pairs.append((f"{a['id']} {a['title']}", f"{b['id']} {b['title']}"))
    return pairs


def to_screen(bounding, ds) -> list[float]:
    """A graph-space box [x, y, w, h] in canvas pixels: screen = (graph + offset) * scale."""
    x, y, w, h = bounding
    s, (ox, oy) = ds["scale"], ds["offset"]
    return [(x + ox) * s, (y + oy) * s, w * s, h * s]


# For page points [label, x, y]: the labels of those where something other than the canvas (or a node's own DOM
# widget, such as a text box or a video preview) is on top: the menu, the side bar, the run bar, the minimap, ...
COVERED_JS = """points => {
  const canvas = window.app.canvas.canvas;
  return points.filter(([label, x, y]) => {
    const top = document.elementFromPoint(x, y);
    return !(top === canvas || (top && top.closest('.dom-widget')));
  }).map(([label, x, y]) => {
    const top = document.elementFromPoint(x, y);
    return `${label} at (${Math.round(x)}, ${Math.round(y)}) under ${top ? top.tagName.toLowerCase() + '.' +
      String(top.className).split(' ').slice(0, 2).join('.') : 'nothing'}`;
  });
}"""


def covered(page, state: dict) -> list[str]:
    """Nodes whose corners or centre are hidden under the frontend's own UI as the workflow opens."""
    left, top = state["canvas_box"][:2]
    points = []
    for node in state["nodes"]:
        x, y, w, h = to_screen(node["bounding"], state["ds"])
        for px, py in ((x + 2, y + 2), (x + w - 2, y + 2), (x + 2, y + h - 2), (x + w - 2, y + h - 2),
                       (x + w / 2, y + h / 2)):
            points.append([f"{node['title']}", left + px, top + py])
    return page.evaluate(COVERED_JS, points)


def cut_node_titles(state: dict) -> list[str]:
    """Nodes whose title the frontend draws cut short (it does not fit the node's width)."""
    return [f"{n['title']} ({n['title_width']:.0f} px, room for {n['title_room']:.0f})"
            for n in state["nodes"] if n["title_width"] > n["title_room"]]


def clipped_group_titles(state: dict) -> list[str]:
    """Groups whose title is wider than the group (it runs into the next one)."""
    return [f"{g['title']} ({g['title_width']:.0f} px in a {g['bounding'][2]:.0f} px group)"
            for g in state["groups"] if g["title_width"] + 20 > g["bounding"][2]]


def outside_view(state: dict) -> list[str]:
    """Nodes and groups not wholly inside the canvas as the workflow opens."""
    _, _, width, height = state["canvas_box"]
    out = []
    for item in [*state["nodes"], *state["groups"]]:
        x, y, w, h = to_screen(item["bounding"], state["ds"])
        if x < 0 or y < 0 or x + w > width or y + h > height:
            out.append(f"{item['title']} at {[round(v) for v in (x, y, w, h)]} (canvas {width:.0f}x{height:.0f})")
    return out
