"""The workflow graph and its layout: node sockets as the frontend draws them, node sizes from the frontend's own rule,
stage columns in titled groups, the Note beside them, and the saved view (checked in a real browser by
tests/test_workflows_browser.py)."""

from __future__ import annotations

import math

# node type → (input sockets [(name, type)], output slots [(name, type)]): every socket of the node's definition, in
# its order (the frontend draws them all, so they set the node's height), linked or not
SLOTS = {
    "LoadHiStreamModel": ([], [("MODEL", "MODEL")]),
    "LoraLoaderModelOnly": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "CLIPLoader": ([], [("CLIP", "CLIP")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "AnchorCacheChunker": ([], [("cache", "HISTREAM_CACHE"), ("latent", "LATENT")]),
    "SparseStepSampler": ([("sigmas", "SIGMAS")], [("steps", "HISTREAM_STEPS")]),
    "LowResDenoise": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("cache", "HISTREAM_CACHE"),
                       ("steps", "HISTREAM_STEPS"), ("latent", "LATENT"), ("negative", "CONDITIONING")],
                      [("low_res", "HISTREAM_LOWRES")]),
    "CachedUpsampleRefine": ([("low_res", "HISTREAM_LOWRES"), ("vae", "VAE"), ("preview_vae", "VAE")],
                             [("LATENT", "LATENT"), ("IMAGE", "IMAGE")]),
    "VAELoader": ([], [("VAE", "VAE")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "CreateVideo": ([("images", "IMAGE"), ("audio", "AUDIO")], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO")], []),
    "Note": ([], []),
    "HiStreamToyPrompt": ([], [("CONDITIONING", "CONDITIONING")]),
    "HiStreamToyDecode": ([("samples", "LATENT")], [("IMAGE", "IMAGE")]),
    "LoadVideo": ([], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ([("video", "VIDEO")], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "Canny": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "WanVaceToVideo": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
                        ("control_video", "IMAGE"), ("control_masks", "MASK"), ("reference_image", "IMAGE")],
                       [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT"),
                        ("trim_latent", "INT")]),
    "HiStreamPromptSchedule": ([(f"conditioning_{i}", "CONDITIONING") for i in range(1, 5)],
                               [("positive", "CONDITIONING")]),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "LoadLatent": ([], [("LATENT", "LATENT")]),
    "LatentCut": ([("samples", "LATENT")], [("LATENT", "LATENT")]),
    "LatentConcat": ([("samples1", "LATENT"), ("samples2", "LATENT")], [("LATENT", "LATENT")]),
    "HiStreamStartImage": ([("model", "MODEL"), ("vae", "VAE"), ("start_image", "IMAGE"), ("cache", "HISTREAM_CACHE")],
                           [("MODEL", "MODEL")]),
    "HiStreamVideoPrefix": ([("model", "MODEL"), ("latent", "LATENT")], [("MODEL", "MODEL")]),
    "UNETLoader": ([], [("MODEL", "MODEL")]),
    "CFGGuider": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                  [("GUIDER", "GUIDER")]),
    "RandomNoise": ([], [("NOISE", "NOISE")]),
    "BasicScheduler": ([("model", "MODEL")], [("SIGMAS", "SIGMAS")]),
    "HiStreamSampler": ([("cache", "HISTREAM_CACHE"), ("steps", "HISTREAM_STEPS")], [("SAMPLER", "SAMPLER")]),
    "SamplerCustomAdvanced": ([("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                               ("latent_image", "LATENT")], [("output", "LATENT"), ("denoised_output", "LATENT")]),
}

# ------------------------------------------------------------------------------------------------------- layout
# The frontend (litegraph) sizes a node's body at least as: socket rows × 20 px, plus 24 px per widget and 14 px
# margin (6 px without widgets); its title bar (30 px) sits above `pos`. Sizes below are that minimum or more.
TITLE_H, SLOT_H, WIDGET_H = 30, 20, 24
NODE_W = 280
# larger than the minimum: room for long file names, prompt text, the video previews
# (LoadVideo's preview of a square control video included)
MIN_SIZE = {"LoadHiStreamModel": (320, 0), "LoraLoaderModelOnly": (320, 0), "CLIPLoader": (320, 0),
            "VAELoader": (320, 0), "CLIPTextEncode": (320, 170), "HiStreamToyPrompt": (320, 0),
            "SaveVideo": (280, 300), "LoadVideo": (300, 400), "LoadImage": (280, 330),
            # the longest titles: whole at the newest frontend's title font
            "AnchorCacheChunker": (300, 0), "CachedUpsampleRefine": (300, 0)}
GAP_Y = 30  # between a node's body and the next node's title bar
GAP_X = 24  # between stage groups
# a group's title band (its title, then room for the source badge the frontend draws above each node's title),
# inner margin and title font (newer frontends draw every group title at their own 20 px)
GROUP_TITLE, GROUP_PAD, GROUP_FONT = 52, 14, 20
# The view the file opens with, in canvas pixels: it must fit a 1600×900 window in every frontend tested (the canvas
# starts below the menu bar in older ones; newer ones float the menu, the side bar and the run bar over it), and
# keep clear of the minimap that the frontend shows at the canvas's bottom right.
VIEW_BOX = (60, 95, 1530, 810)
MINIMAP_BOX = (1220, 555)  # from this corner to the bottom right
# below 8 px text (the frontend's default LiteGraph.Canvas.MinFontSizeForLOD: 8 / 14 px ≈ 0.57) the frontend draws
# nodes without their text: a workflow must open above that
MIN_SCALE = 0.6


def node_size(type_: str, n_widgets: int) -> list[int]:
    ins, outs = SLOTS[type_]
    body = max(len(ins), len(outs), 1) * SLOT_H + (14 + WIDGET_H * n_widgets if n_widgets else 6)
    width, height = MIN_SIZE.get(type_, (NODE_W, 0))
    return [width, max(body, height)]


def note_size(text: str, width: int) -> list[int]:
    """A Note tall enough for its text at the frontend's monospace font (measured ~6.6 px a character and ~10 px a
    line; 6.8 and 11 here, with a margin)."""
    chars = max(1, int((width - 20) / 6.8))
    lines = sum(max(1, math.ceil(len(line) / chars)) for line in text.split("\n"))
    return [width, lines * 11 + 30]


class Graph:
    """Nodes placed in stage columns (titled groups, left to right in data-flow order) and a Note below the middle
    stages; positions, group boxes and the saved view come from the node sizes (:meth:`to_json`)."""

    def __init__(self, models: dict):
        """`models`: key → the frontend's `properties.models` entry (name, url, directory) for `add(models=...)`."""
        self.models = models
        self.nodes, self.links, self.columns, self.note = [], [], {}, None

    def add(self, type_, widgets, column, size=None, models=None, title=None):
        ins, outs = SLOTS[type_]
        node = {"id": len(self.nodes) + 1, "type": type_, "pos": [0, 0],
                "size": list(size or node_size(type_, len(widgets))), "flags": {}, "order": len(self.nodes),
                "mode": 0, "inputs": [{"name": n, "type": t, "link": None} for n, t in ins],
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outs)],
                "properties": {"Node name for S&R": type_}, "widgets_values": list(widgets)}
        if models:
            node["properties"]["models"] = [self.models[m] for m in models]
        if title:
            node["title"] = title
        self.nodes.append(node)
        self.columns.setdefault(column, []).append(node["id"])
        return node["id"]

    def add_note(self, text, title, under=None):
        """The Note, below the columns named in `under` (default: all but the first and the last)."""
        self.note = (text, title, under)

    def link(self, src, src_slot, dst, dst_name):
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        slot = next(i for i, inp in enumerate(d["inputs"]) if inp["name"] == dst_name)
        type_ = s["outputs"][src_slot]["type"]
        assert d["inputs"][slot]["type"] == type_, (s["type"], d["type"], dst_name)
        assert d["inputs"][slot]["link"] is None, (d["type"], dst_name)
        lid = len(self.links) + 1
        self.links.append([lid, src, src_slot, dst, slot, type_])
        s["outputs"][src_slot]["links"].append(lid)
        d["inputs"][slot]["link"] = lid

    def _place(self) -> tuple[list[dict], list[float]]:
        groups, x, spans = [], 0, {}
        for title, ids in self.columns.items():
            width = max(self.nodes[i - 1]["size"][0] for i in ids) + 2 * GROUP_PAD
            y = GROUP_TITLE
            for i in ids:
                node = self.nodes[i - 1]
                node["pos"] = [x + GROUP_PAD, y + TITLE_H]
                y += TITLE_H + node["size"][1] + GAP_Y
            height = y - GAP_Y + GROUP_PAD
            groups.append({"title": title, "bounding": [x, 0, width, height], "color": "#3f789e", "font_size": GROUP_FONT,
                           "flags": {}})
            spans[title] = (x, x + width, height)
            x += width + GAP_X
        box = [0, 0, x - GAP_X, max(g["bounding"][3] for g in groups)]
        if self.note:
            text, title, under = self.note
            names = under or list(self.columns)[1:-1]
            left, right = spans[names[0]][0], spans[names[-1]][1]
            top = max(spans[n][2] for n in names) + GAP_Y + TITLE_H
            note = self.add("Note", [text], "(note)", size=note_size(text, right - left), title=title)
            self.columns.pop("(note)")
            self.nodes[note - 1]["pos"] = [left, top]
            box[3] = max(box[3], top + self.nodes[note - 1]["size"][1])
        return groups, box

    def _view(self, box) -> dict:
        """Scale and offset that show the whole graph (box: x, y, w, h in graph units) inside VIEW_BOX, clear of
        the minimap; screen = (graph + offset) × scale."""
        x0, y0, x1, y1 = VIEW_BOX
        scale = min(1.0, (x1 - x0) / box[2], (y1 - y0) / box[3])
        items = [[n["pos"][0], n["pos"][1] - TITLE_H, n["size"][0], n["size"][1] + TITLE_H] for n in self.nodes]
        while True:
            if not any((bx + bw) * scale + x0 > MINIMAP_BOX[0] and (by + bh) * scale + y0 > MINIMAP_BOX[1]
                       for bx, by, bw, bh in items):
                break
            scale *= 0.98
        scale = math.floor(scale * 100) / 100
        if scale < MIN_SCALE:
            raise ValueError(f"the graph ({box[2]:.0f} x {box[3]:.0f}) needs zoom {scale} to fit the view: below "
                             f"{MIN_SCALE} the frontend hides text; make the layout more compact")
        return {"scale": scale, "offset": [round(x0 / scale - box[0], 1), round(y0 / scale - box[1], 1)]}

    def to_json(self):
        groups, box = self._place()
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": groups, "config": {}, "extra": {"ds": self._view(box)},
                "version": 0.4}
