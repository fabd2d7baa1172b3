"""Convert a UI-format ComfyUI workflow (what the editor saves and users drag in) to the API format that
``POST /prompt`` takes.

ComfyUI does this conversion in the browser only. This converter follows the editor's rules, driven by the
server's ``/object_info``:

* A node's ``widgets_values`` list holds its widget values in the order of its widget inputs: the ``required``
  inputs, then the ``optional`` ones (``input_order`` when the server gives it), skipping socket-only inputs
  (node types such as ``MODEL``, and inputs marked ``forceInput``). Widgets are ``INT``, ``FLOAT``, ``STRING``,
  ``BOOLEAN``, ``COMBO`` and list-valued (combo) inputs.
* A widget whose spec has ``control_after_generate`` (seeds) is followed in ``widgets_values`` by the value of the
  editor's "control after generate" widget (``fixed``/``increment``/``decrement``/``randomize``), which is not an
  input and is dropped.
* A widget converted to an input keeps its slot in ``widgets_values``; when the input is linked the link wins.
* Links (``inputs[].link`` → the ``links`` table) become ``[str(origin_node_id), origin_slot]``.
* ``Reroute`` nodes are resolved through to their source; a ``PrimitiveNode`` contributes its value as a literal;
  ``Note``/``MarkdownNote`` are dropped.
* Muted nodes (mode 2) are dropped together with the inputs they fed; bypassed nodes (mode 4) are dropped and
  each link from one is routed to the bypassed node's input of the same type (as the editor does), or dropped when
  it has none.

Subgraphs and third-party virtual nodes (e.g. Set/Get nodes) are not supported: an unknown node type raises
:class:`WorkflowConvertError` naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
REROUTE_TYPES = frozenset({"Reroute"})
PRIMITIVE_TYPES = frozenset({"PrimitiveNode"})
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})


class WorkflowConvertError(ValueError):
    pass


def load_workflow(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def is_api_format(workflow: Mapping[str, Any]) -> bool:
    """True for an API-format prompt (``{node_id: {"class_type", "inputs"}}``)."""
    return bool(workflow) and all(isinstance(v, dict) and "class_type" in v for v in workflow.values())


def _is_widget(spec: Any) -> bool:
    if not isinstance(spec, (list, tuple)) or not spec:
        return False
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES


def _has_control_widget(spec: Any) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return bool(options.get("control_after_generate"))


def widget_inputs(info: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(name, spec)`` of a node class's widget inputs, in ``widgets_values`` order."""
    inputs = info.get("input", {})
    order = info.get("input_order", {})
    result = []
    for group in ("required", "optional"):
        specs = inputs.get(group) or {}
        for name in order.get(group) or list(specs):
            spec = specs.get(name)
            if spec is not None and _is_widget(spec):
                result.append((name, spec))
    return result


def _default(spec: Any) -> Any:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    if isinstance(kind, (list, tuple)) and kind:
        return kind[0]
    if kind == "COMBO" and options.get("options"):
        return options["options"][0]
    raise KeyError


def map_widgets(node: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
    """Widget values of a UI node by input name."""
    values = node.get("widgets_values")
    widgets = widget_inputs(info)
    if isinstance(values, dict):  # some nodes save their widgets by name
        return {name: values[name] for name, _ in widgets if name in values}
    values = list(values or [])
    out: dict[str, Any] = {}
    i = 0
    for name, spec in widgets:
        if i < len(values):
            out[name] = values[i]
            i += 1
            if _has_control_widget(spec) and i < len(values) and values[i] in CONTROL_VALUES:
                i += 1
        else:
            try:
                out[name] = _default(spec)
            except KeyError:
                pass
    return out


class _Graph:
    def __init__(self, workflow: Mapping[str, Any], object_info: Mapping[str, Any]):
        if "nodes" not in workflow:
            raise WorkflowConvertError("not a UI-format workflow (no 'nodes' list)")
        if (workflow.get("definitions") or {}).get("subgraphs"):
            raise WorkflowConvertError("workflows with subgraphs are not supported")
        self.object_info = object_info
        self.nodes = {int(n["id"]): n for n in workflow["nodes"]}
        self.links: dict[int, tuple[int, int]] = {}
        for link in workflow.get("links") or []:
            if isinstance(link, dict):
                self.links[int(link["id"])] = (int(link["origin_id"]), int(link["origin_slot"]))
            else:
                self.links[int(link[0])] = (int(link[1]), int(link[2]))

    def node(self, node_id: int) -> Mapping[str, Any]:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise WorkflowConvertError(f"a link refers to node {node_id}, which is not in the workflow") from None

    def resolve(self, link_id: int | None, seen: frozenset = frozenset()) -> tuple[str, Any] | None:
        """What a link delivers: ``("link", [id, slot])``, ``("value", v)``, or None (nothing: muted source)."""
        if link_id is None:
            return None
        if link_id not in self.links:
            raise WorkflowConvertError(f"link {link_id} is not in the workflow's links table")
        if link_id in seen:
            raise WorkflowConvertError(f"link {link_id} is part of a cycle of Reroute/bypassed nodes")
        seen = seen | {link_id}
        origin_id, origin_slot = self.links[link_id]
        origin = self.node(origin_id)
        kind = origin["type"]
        mode = origin.get("mode", MODE_ALWAYS)
        if kind in PRIMITIVE_TYPES:
            values = origin.get("widgets_values") or []
            return ("value", values[0]) if values else None
        if kind in REROUTE_TYPES:
            inputs = origin.get("inputs") or []
            return self.resolve(inputs[0].get("link") if inputs else None, seen)
        if mode == MODE_NEVER:
            return None
        if mode == MODE_BYPASS:
            return self._through_bypass(origin, origin_slot, seen)
        return ("link", [str(origin_id), origin_slot])

    def _through_bypass(self, node: Mapping[str, Any], slot: int, seen: frozenset) -> tuple[str, Any] | None:
        outputs = node.get("outputs") or []
        out_type = outputs[slot].get("type") if slot < len(outputs) else None
        inputs = node.get("inputs") or []
        same_type = [i for i in inputs if i.get("link") is not None and i.get("type") == out_type]
        # the editor prefers the input in the same position as the output, then the first of the same type
        preferred = [inputs[slot]] if slot < len(inputs) and inputs[slot] in same_type else []
        for candidate in preferred + same_type:
            found = self.resolve(candidate["link"], seen)
            if found is not None:
                return found
        return None


def ui_to_api(workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, dict]:
    """Convert a UI-format workflow to an API-format prompt, using the server's ``/object_info``."""
    graph = _Graph(workflow, object_info)
    prompt: dict[str, dict] = {}
    for node_id, node in sorted(graph.nodes.items()):
        kind = node["type"]
        if kind in NOTE_TYPES or kind in REROUTE_TYPES or kind in PRIMITIVE_TYPES:
            continue
        if node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
            continue
        info = object_info.get(kind)
        if info is None:
            raise WorkflowConvertError(
                f"node {node_id} has type {kind!r}, which the server does not know (is its node pack loaded?)"
            )
        inputs: dict[str, Any] = dict(map_widgets(node, info))
        for slot in node.get("inputs") or []:
            name = slot.get("name")
            if isinstance(slot.get("widget"), dict):
                name = slot["widget"].get("name", name)
            if slot.get("link") is None:
                continue
            found = graph.resolve(slot["link"])
            if found is not None:  # else the source is muted: a widget keeps its own value
                inputs[name] = found[1]
        title = node.get("title") or info.get("display_name") or kind
        prompt[str(node_id)] = {"class_type": kind, "inputs": inputs, "_meta": {"title": title}}
    return prompt
