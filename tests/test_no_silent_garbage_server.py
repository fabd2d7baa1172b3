"""Nothing lost, nothing silent, on a real headless server: non-finite inputs get one clear error where they enter
(nothing written to the output folder, the next good run succeeds), a run that cannot fit is refused before any
large allocation, (the Stop that keeps the finished chunks is
tested in process, where it can be pressed at an exact step: test_nodes_in_process.py)."""

from __future__ import annotations

import pytest
from comfy_host import QueueError, WorkflowError
from nodes_support import histream_prompt, tiny_state_dict, write_self_forcing_pt

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def server(comfy_server_factory):
    srv = comfy_server_factory()
    write_self_forcing_pt(srv.model_dir("diffusion_models") / "tiny_self_forcing.pt", tiny_state_dict(seed=0))
    return srv


def _outputs(server) -> set:
    return {p for p in server.output_dir.rglob("*") if p.is_file()}


def _error(server, prompt) -> str:
    try:
        server.run(prompt)
    except QueueError as exc:
        return str(exc) + str(exc.response)
    except WorkflowError as exc:
        return str(exc)
    raise AssertionError("the bad prompt ran")


def _poisoned(value: str, where: str = "positive") -> dict:
    prompt = histream_prompt("tiny_self_forcing.pt")
    prompt["30"] = {"class_type": "HiStreamTestPoison", "inputs": {"conditioning": ["3", 0], "value": value,
                                                                   "where": "text"}}
    if where == "positive":
        prompt["6"]["inputs"]["positive"] = ["30", 0]
    else:  # guided: the poisoned copy is the negative
        prompt["6"]["inputs"].update(negative=["30", 0], cfg=2.0)
    return prompt


def _custom_sigmas(values: str) -> dict:
    prompt = histream_prompt("tiny_self_forcing.pt", preset="custom")
    prompt["31"] = {"class_type": "HiStreamTestSigmas", "inputs": {"values": values}}
    prompt["5"]["inputs"]["sigmas"] = ["31", 0]
    return prompt


@pytest.mark.parametrize("prompt,expect", [
    (_poisoned("nan"), "the positive CONDITIONING holds 1 NaN/inf value"),
    (_poisoned("inf"), "the positive CONDITIONING holds 1 NaN/inf value"),
    (_poisoned("-inf", where="negative"), "the negative CONDITIONING holds 1 NaN/inf value"),
    (_custom_sigmas("1.0, nan, 0.5, 0.0"), "must be a finite number in (0, 1]"),
], ids=["nan-positive", "inf-positive", "inf-negative", "nan-sigmas"])
def test_non_finite_inputs_are_refused_where_they_enter(server, prompt, expect):
    before = _outputs(server)
    text = _error(server, prompt)
    assert expect in text, text[:2000]
    assert _outputs(server) == before  # nothing written for a refused request
    server.run(histream_prompt("tiny_self_forcing.pt"))  # and the next good run succeeds


def _peak_rss_kib(server) -> int:
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):  # the process's peak resident set size
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_run_that_cannot_fit_is_refused_before_allocating(server):
    server.run(histream_prompt("tiny_self_forcing.pt"))  # the model loaded: the peak of a normal run
    peak, before = _peak_rss_kib(server), _outputs(server)
    # every value inside the widgets' ranges; about a terabyte of caches and outputs
    text = _error(server, histream_prompt("tiny_self_forcing.pt", width=8192, height=8192, frames=81, batch=16))
    assert "HiStream needs ≈" in text and "is free" in text and "Nothing was allocated" in text, text[:2000]
    assert "window_chunks" in text or "batch_size 1" in text  # the cheapest fixes are named
    assert _peak_rss_kib(server) - peak < 512 * 1024  # refused before any large allocation
    assert _outputs(server) == before
    server.run(histream_prompt("tiny_self_forcing.pt"))


def test_shift_zero_from_model_sampling_names_the_node(server):
    prompt = histream_prompt("tiny_self_forcing.pt")
    prompt["32"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 0.0}}
    prompt["6"]["inputs"]["model"] = ["32", 0]
    text = _error(server, prompt)
    assert "ModelSamplingSD3" in text and "shift 0.0" in text, text[:2000]
