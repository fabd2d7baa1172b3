"""HOST_API.md is the pack's whole dependency on the host: every host module attribute that `nodes/` names is
listed there, and every listed one exists on the host this run imports (the matrix runs it once per host)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"`((?:comfy|comfy_execution|folder_paths|latent_preview)(?:\.\w+)+)`")


def listed_rows() -> list[tuple[str, str]]:
    """The first table's host names (its first column) with the hosts that have them (its third)."""
    text = (ROOT / "HOST_API.md").read_text()
    table = text.split("## Module attributes", 1)[1].split("\n## ", 1)[0]
    rows = [row.split("|") for row in table.splitlines() if row.startswith("| `")]
    return [(m.group(1), cells[3].strip()) for cells in rows if (m := NAME.match(cells[1].strip()))]


def listed() -> list[str]:
    return [name for name, _ in listed_rows()]


def host_version(root) -> tuple[int, ...]:
    text = (Path(root) / "comfyui_version.py").read_text()
    return tuple(int(x) for x in re.search(r'__version__ = "([\d.]+)"', text).group(1).split("."))


def used_in_nodes() -> set[str]:
    """Host module attributes named in nodes/: `import comfy.x as y` / `from m import a` and dotted uses."""
    used = set()
    for path in (ROOT / "nodes").glob("*.py"):
        src = path.read_text()
        aliases = {alias: mod for mod, alias in re.findall(r"^import ((?:comfy|comfy_execution|folder_paths|"
                                                            r"latent_preview)[\w.]*) as (\w+)", src, re.MULTILINE)}
        for mod, names in re.findall(r"^from ((?:comfy|comfy_execution|folder_paths|latent_preview)[\w.]*) "
                                     r"import ([\w, ]+)", src, re.MULTILINE):
            used |= {f"{mod}.{n.strip()}" for n in names.split(",")}
        for alias, mod in aliases.items():
            used |= {f"{mod}.{attr}" for attr in re.findall(rf"\b{alias}\.(\w+)", src)}
        for dotted in re.findall(r"\b((?:comfy|comfy_execution|folder_paths|latent_preview)(?:\.\w+)+)", src):
            if not re.search(rf"^import {re.escape(dotted)}$", src, re.MULTILINE):  # a plain `import comfy.sd` line
                used.add(dotted)
    return used


def test_every_host_attribute_the_nodes_use_is_listed():
    missing = sorted(u for u in used_in_nodes() if u not in listed() and not any(
        name.startswith(u + ".") for name in listed()))
    assert not missing, f"add these to HOST_API.md's first table: {missing}"


@pytest.mark.comfy
def test_every_listed_attribute_exists_on_this_host(comfy_modules):
    absent, present_too_early = [], []
    from_v080 = host_version(comfy_modules.root) >= (0, 8, 0)
    for name, hosts in listed_rows():
        if hosts.startswith("v0.8.0 only") and not from_v080:  # must be absent here: the pack refuses without it
            try:
                importlib.import_module(name.rsplit(".", 1)[0])
                present_too_early.append(name)
            except ImportError:
                pass
            continue
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            break
        else:
            absent.append(name)
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                absent.append(name)
                break
            obj = getattr(obj, attr)
    assert not absent, f"ComfyUI at {comfy_modules.root} lacks {absent}"
    assert not present_too_early, f"ComfyUI at {comfy_modules.root} has {present_too_early}: fix their host column"
