"""UI→API workflow conversion against a hand-written /object_info (no host needed)."""

from __future__ import annotations

import pytest
from workflow_convert import WorkflowConvertError, is_api_format, map_widgets, ui_to_api, widget_inputs

SEED = ["INT", {"default": 0, "min": 0, "control_after_generate": True}]
OBJECT_INFO = {
    "Source": {
        "input": {"required": {"width": ["INT", {"default": 8}], "mode": [["a", "b"], {}]}},
        "input_order": {"required": ["width", "mode"]},
        "output": ["IMAGE", "MASK"],
    },
    "Sampler": {
        "input": {
            "required": {
                "image": ["IMAGE"],
                "seed": SEED,
                "steps": ["INT", {"default": 20}],
                "name": ["COMBO", {"options": ["x", "y"]}],
            },
            "optional": {"mask": ["MASK", {}], "scale": ["FLOAT", {"default": 1.5}], "extra": ["INT", {"forceInput": True}]},
        },
        "input_order": {"required": ["image", "seed", "steps", "name"], "optional": ["mask", "scale", "extra"]},
        "output": ["IMAGE"],
    },
    "TwoIn": {
        "input": {"required": {"mask": ["MASK"], "image": ["IMAGE"]}},
        "input_order": {"required": ["mask", "image"]},
        "output": ["IMAGE"],
    },
}


def node(node_id, kind, inputs=(), outputs=(), widgets=None, mode=0):
    return {"id": node_id, "type": kind, "mode": mode, "inputs": list(inputs), "outputs": list(outputs),
            "widgets_values": widgets if widgets is not None else []}


def slot(name, kind, link=None, widget=False):
    out = {"name": name, "type": kind, "link": link}
    if widget:
        out["widget"] = {"name": name}
    return out


def test_widget_order_and_control_after_generate():
    info = OBJECT_INFO["Sampler"]
    assert [name for name, _ in widget_inputs(info)] == ["seed", "steps", "name", "scale"]
    values = map_widgets({"widgets_values": [7, "randomize", 4, "y", 2.0]}, info)
    assert values == {"seed": 7, "steps": 4, "name": "y", "scale": 2.0}
    # missing trailing values fall back to the defaults (first option for a combo)
    assert map_widgets({"widgets_values": [7, "fixed"]}, info) == {"seed": 7, "steps": 20, "name": "x", "scale": 1.5}
    assert map_widgets({"widgets_values": {"steps": 3, "seed": 1}}, info) == {"seed": 1, "steps": 3}


def test_links_reroutes_primitives_and_linked_widgets():
    workflow = {
        "nodes": [
            node(1, "Source", widgets=[16, "b"]),
            node(2, "Reroute", inputs=[slot("", "*", 1)]),
            node(3, "Reroute", inputs=[slot("", "*", 2)]),
            node(4, "PrimitiveNode", widgets=[5, "fixed"]),
            node(5, "Sampler", inputs=[slot("image", "IMAGE", 3), slot("mask", "MASK", 5), slot("seed", "INT", 4, True),
                                       slot("extra", "INT", 6)],
                 widgets=[99, "fixed", 4, "y", 2.0]),
            node(6, "Note", widgets=["hello"]),
            node(7, "PrimitiveNode", widgets=[11]),
        ],
        # both link encodings: list rows and dict rows
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "*"], {"id": 3, "origin_id": 3, "origin_slot": 0,
                                                                    "target_id": 5, "target_slot": 0, "type": "IMAGE"},
                  [4, 4, 0, 5, 2, "INT"], [5, 1, 1, 5, 1, "MASK"], [6, 7, 0, 5, 3, "INT"]],
    }
    prompt = ui_to_api(workflow, OBJECT_INFO)
    assert is_api_format(prompt) and not is_api_format(workflow)
    assert sorted(prompt) == ["1", "5"]
    assert prompt["1"]["inputs"] == {"width": 16, "mode": "b"}
    assert prompt["5"]["inputs"] == {"image": ["1", 0], "mask": ["1", 1], "seed": 5, "steps": 4, "name": "y",
                                     "scale": 2.0, "extra": 11}
    assert prompt["5"]["class_type"] == "Sampler" and prompt["5"]["_meta"]["title"] == "Sampler"


def test_muted_and_bypassed_nodes():
    workflow = {
        "nodes": [
            node(1, "Source", widgets=[8, "a"]),
            node(2, "Source", widgets=[8, "a"], mode=2),  # muted
            node(3, "TwoIn", inputs=[slot("mask", "MASK", 2), slot("image", "IMAGE", 3)],
                 outputs=[{"name": "IMAGE", "type": "IMAGE"}], mode=4),  # bypassed: IMAGE passes through
            node(4, "Sampler", inputs=[slot("image", "IMAGE", 4), slot("mask", "MASK", 5), slot("seed", "INT", 6, True)],
                 widgets=[3, "fixed", 20, "x", 1.0]),
            node(5, "TwoIn", inputs=[slot("mask", "MASK", 1), slot("image", "IMAGE")],
                 outputs=[{"name": "IMAGE", "type": "IMAGE"}], mode=4),  # bypassed, no linked IMAGE input
            node(6, "PrimitiveNode", widgets=[9]),
            node(7, "Sampler", inputs=[slot("image", "IMAGE", 7)], widgets=[1, "fixed"]),
        ],
        "links": [[1, 1, 1, 5, 0, "MASK"], [2, 1, 1, 3, 0, "MASK"], [3, 1, 0, 3, 1, "IMAGE"],
                  [4, 3, 0, 4, 0, "IMAGE"], [5, 2, 1, 4, 1, "MASK"], [6, 6, 0, 4, 2, "INT"], [7, 5, 0, 7, 0, "IMAGE"]],
    }
    prompt = ui_to_api(workflow, OBJECT_INFO)
    assert sorted(prompt) == ["1", "4", "7"]
    inputs = prompt["4"]["inputs"]
    assert inputs["image"] == ["1", 0]  # routed through the bypassed node's IMAGE input
    assert "mask" not in inputs  # its source is muted
    assert inputs["seed"] == 9
    assert "image" not in prompt["7"]["inputs"]  # a bypassed node with nothing of the type to pass on


def test_unknown_node_type_is_named():
    with pytest.raises(WorkflowConvertError, match="HiStreamMissing"):
        ui_to_api({"nodes": [node(1, "HiStreamMissing")], "links": []}, OBJECT_INFO)
    with pytest.raises(WorkflowConvertError, match="UI-format"):
        ui_to_api({"1": {"class_type": "Source", "inputs": {}}}, OBJECT_INFO)
