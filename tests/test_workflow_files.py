"""The shipped workflow files (no host needed): up to date with tools/make_workflows.py, model entries the frontend's
schema accepts (every properties.models entry has a name, a public url ending in that name, and a folder; the user's
own LoRA has none), and a Note that says where to get each file the missing-models dialog cannot download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import make_workflows, workflow_graph

WORKFLOWS = sorted((Path(__file__).resolve().parent.parent / "workflows").glob("*.json"))
DOWNLOADABLE = (".safetensors", ".sft")  # what the frontend's missing-models dialog downloads


def generated() -> dict[str, dict]:
    out = {name: make_workflows.build(**kw) for name, kw in make_workflows.WORKFLOWS.items()}
    out.update({name: builder() for name, builder in make_workflows.BUILDERS.items()})
    return out


def test_committed_workflows_are_the_generators_output():
    fresh = generated()
    assert sorted(fresh) == [p.name for p in WORKFLOWS]
    for path in WORKFLOWS:
        assert json.loads(path.read_text()) == fresh[path.name], (
            f"{path.name} is stale: run python -m tools.make_workflows")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_model_entries_name_a_url_and_a_folder(path):
    wf = json.loads(path.read_text())
    note = "\n".join(n["widgets_values"][0] for n in wf["nodes"] if n["type"] == "Note")
    for node in wf["nodes"]:
        for entry in node.get("properties", {}).get("models", []):
            assert set(entry) == {"name", "url", "directory"}, (path.name, node["type"], entry)
            assert entry["url"].startswith("https://huggingface.co/") and entry["url"].endswith("/" + entry["name"])
            assert entry["name"] in node["widgets_values"], (path.name, node["type"], entry["name"])
            assert f"{entry['name']} -> ComfyUI/models/{entry['directory']}/" in note, (path.name, entry["name"])
            if not entry["name"].endswith(DOWNLOADABLE):  # the Note is the only way to learn where to get it
                assert entry["url"] in note, (path.name, entry["name"])
        if node["type"] == "LoraLoaderModelOnly":  # the user's own file: nothing to download
            assert "models" not in node["properties"], path.name


def test_self_forcing_weights_are_not_downloadable_by_the_dialog_and_the_note_says_where():
    wf = json.loads((WORKFLOWS[0].parent / "histream_t2v_1080p.json").read_text())
    note = next(n["widgets_values"][0] for n in wf["nodes"] if n["type"] == "Note")
    assert ("self_forcing_dmd.pt -> ComfyUI/models/diffusion_models/ (the missing-models dialog cannot download a .pt "
            "file: download it from https://huggingface.co/gdhe17/Self-Forcing/resolve/main/checkpoints/"
            "self_forcing_dmd.pt)") in note


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_groups_hold_their_nodes_and_the_note_is_outside_them(path):
    wf = json.loads(path.read_text())
    title_bar = workflow_graph.TITLE_H
    for node in wf["nodes"]:
        (x, y), (w, h) = node["pos"], node["size"]
        inside = [g["title"] for g in wf["groups"]
                  if g["bounding"][0] <= x and x + w <= g["bounding"][0] + g["bounding"][2]
                  and g["bounding"][1] + workflow_graph.GROUP_TITLE <= y - title_bar
                  and y + h <= g["bounding"][1] + g["bounding"][3]]
        if node["type"] == "Note":
            assert not inside, (path.name, inside)
        else:
            assert len(inside) == 1, (path.name, node["type"], inside)
