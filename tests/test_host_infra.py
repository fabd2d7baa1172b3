"""The host test infrastructure itself: in-process imports, the headless server fixture, the UI→API converter."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import torch
from comfy_host import PACK_DIR_NAME, TEST_NODES_NAME, QueueError, WorkflowError
from workflow_convert import load_workflow, ui_to_api

DATA = Path(__file__).resolve().parent / "data"

STOCK_NODES = [
    "UNETLoader", "LoraLoaderModelOnly", "VAELoader", "VAEDecode", "VAEDecodeTiled", "CLIPLoader", "CLIPTextEncode",
    "WanVaceToVideo", "SamplerCustomAdvanced", "CreateVideo", "SaveVideo", "SaveWEBM", "SaveAnimatedWEBP",
]

# A throwaway node pack for the error and interrupt paths, written to a temporary directory by the fixture below.
PROBE_PACK = textwrap.dedent('''
    import time

    import comfy.utils


    class HiStreamProbeFail:
        CATEGORY = "testing"
        RETURN_TYPES = ()
        OUTPUT_NODE = True
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"message": ("STRING", {"default": "probe failure"})}}

        def run(self, message):
            raise RuntimeError(message)


    class HiStreamProbeSteps:
        CATEGORY = "testing"
        RETURN_TYPES = ()
        OUTPUT_NODE = True
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"steps": ("INT", {"default": 10, "min": 1}),
                                 "delay": ("FLOAT", {"default": 0.01, "min": 0.0})}}

        def run(self, steps, delay):
            pbar = comfy.utils.ProgressBar(steps)
            for _ in range(steps):
                time.sleep(delay)
                pbar.update(1)  # the server's progress hook raises InterruptProcessingException after /interrupt
            return {"ui": {"steps": [steps]}}


    NODE_CLASS_MAPPINGS = {"HiStreamProbeFail": HiStreamProbeFail, "HiStreamProbeSteps": HiStreamProbeSteps}
''')


# ----------------------------------------------------------------------------------------------------- in-process
@pytest.mark.comfy
def test_in_process_tiny_wan_forward(comfy_modules):
    """The host's WanModel builds and runs on CPU in fp32 from inside the test process."""
    mm = comfy_modules.model_management
    assert mm.get_torch_device().type == "cpu"
    torch.manual_seed(0)
    model = comfy_modules.wan_model.WanModel(
        model_type="t2v", dim=128, ffn_dim=256, num_heads=1, num_layers=2, text_dim=4096, freq_dim=256,
        in_dim=16, out_dim=16, operations=comfy_modules.ops.disable_weight_init, dtype=torch.float32,
    )
    with torch.no_grad():
        for p in model.parameters():  # disable_weight_init leaves weights uninitialised
            p.normal_(0, 0.02)
        x = torch.randn(1, 16, 3, 8, 8)
        out = model(x, torch.tensor([500.0]), torch.randn(1, 6, 4096))
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert Path(comfy_modules.folder_paths.base_path).resolve() != comfy_modules.root  # host tree not written


# --------------------------------------------------------------------------------------------------------- server
@pytest.mark.comfy
def test_object_info_has_stock_nodes(comfy_server):
    info = comfy_server.object_info()
    missing = [name for name in STOCK_NODES if name not in info]
    assert not missing, f"stock nodes missing from /object_info: {missing}"
    stats = comfy_server.get_json("/system_stats")
    assert stats["devices"][0]["type"] == "cpu"


@pytest.mark.comfy
def test_pack_imports_without_errors(comfy_server):
    assert (comfy_server.custom_nodes_dir / PACK_DIR_NAME).resolve() == comfy_server.pack_dir
    failures = [line for line in comfy_server.import_failures() if PACK_DIR_NAME in line or TEST_NODES_NAME in line]
    assert not failures, "\n".join(failures) + comfy_server.log_tail(60)


@pytest.mark.comfy
def test_model_files_written_after_start_are_listed(comfy_server):
    """Model folders are rescanned when their directory changes: files may be added while the server runs."""
    comfy_server.write_model("loras", "infra_probe_lora.safetensors", {"x": torch.zeros(1)})
    choices = comfy_server.object_info("LoraLoaderModelOnly", refresh=True)["input"]["required"]["lora_name"][0]
    assert "infra_probe_lora.safetensors" in choices


@pytest.mark.comfy
def test_stock_ui_workflow_end_to_end(comfy_server):
    workflow = load_workflow(DATA / "stock_tiny_video.ui.json")
    prompt = ui_to_api(workflow, comfy_server.object_info())

    assert sorted(prompt, key=int) == ["1", "2", "6", "7", "8"]  # no Note, Reroute, PrimitiveNode, muted, bypassed
    assert prompt["1"]["inputs"] == {"width": 64, "height": 64, "batch_size": 4, "color": 0}
    assert prompt["2"]["inputs"] == {"image": ["1", 0], "seed": 42, "strength": 0.5}
    assert prompt["6"]["inputs"] == {"images": ["2", 0], "fps": 8}  # through the Reroute and the bypassed node
    assert prompt["8"]["inputs"]["images"] == ["2", 0]
    assert prompt["8"]["inputs"]["codec"] == "vp9"

    entry = comfy_server.run(prompt, timeout=120)
    assert entry["status"]["status_str"] == "success"
    assert set(entry["outputs"]) == {"7", "8"}
    files = comfy_server.output_files(entry)
    assert {f.suffix for f in files} == {".mp4", ".webm"}
    for f in files:
        assert f.is_file() and f.stat().st_size > 0, f

    import av

    with av.open(str(next(f for f in files if f.suffix == ".webm"))) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3)
    mean = sum(float(f.mean()) for f in frames) / len(frames)
    assert mean < 128, f"frames look inverted (mean {mean:.0f}): the bypassed ImageInvert ran"


@pytest.mark.comfy
def test_invalid_prompt_raises_queue_error(comfy_server):
    with pytest.raises(QueueError) as err:
        comfy_server.queue({"1": {"class_type": "SaveWEBM", "inputs": {"filename_prefix": "x"}}})
    assert err.value.response["node_errors"]


# ------------------------------------------------------------------------------------ errors, interrupt, free
@pytest.fixture(scope="module")
def probe_server(comfy_server_factory, tmp_path_factory):
    pack = tmp_path_factory.mktemp("probe_pack")
    (pack / "__init__.py").write_text(PROBE_PACK)
    return comfy_server_factory("--cache-none", pack=False, test_nodes=False,
                                extra_custom_nodes={"histream_infra_probe": pack})


@pytest.mark.comfy
def test_extra_server_args_and_runtime_error(probe_server):
    assert "--cache-none" in probe_server.get_json("/system_stats")["system"]["argv"]
    prompt = {"1": {"class_type": "HiStreamProbeFail", "inputs": {"message": "probe says no"}}}
    with pytest.raises(WorkflowError) as err:
        probe_server.run(prompt, timeout=60)
    assert "probe says no" in str(err.value) and "HiStreamProbeFail" in str(err.value)
    assert not err.value.interrupted


@pytest.mark.comfy
def test_interrupt_and_free(probe_server):
    ok = probe_server.run({"1": {"class_type": "HiStreamProbeSteps", "inputs": {"steps": 3, "delay": 0.0}}})
    assert ok["outputs"]["1"]["steps"] == [3]

    prompt_id = probe_server.queue({"1": {"class_type": "HiStreamProbeSteps", "inputs": {"steps": 2000, "delay": 0.01}}})
    deadline = time.monotonic() + 30
    while not probe_server.queue_state()["queue_running"]:
        assert time.monotonic() < deadline, "the prompt never started"
        time.sleep(0.05)
    started = time.monotonic()
    probe_server.interrupt()
    with pytest.raises(WorkflowError) as err:
        probe_server.wait(prompt_id, timeout=30)
    assert err.value.interrupted
    assert time.monotonic() - started < 10  # far less than the 20 s the prompt would take

    probe_server.free()
    probe_server.wait_idle()
