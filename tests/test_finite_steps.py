"""A run that goes non-finite stops at the chunk and step where it happened, naming the likely causes, instead of
finishing as an all-NaN video; non-finite inputs are refused where they enter the core."""

from __future__ import annotations

import pytest
import torch
from core_helpers import tiny_model

from histream_core import HiStreamConfig, HiStreamPipeline
from histream_core.finite import NonFiniteError, check_input, first_non_finite_weight


def test_a_nan_weight_stops_the_run_at_its_first_step():
    model = tiny_model()
    with torch.no_grad():
        model.blocks[0].ffn[0].weight[0, 0] = float("nan")
    cfg = HiStreamConfig.preset("histream", width=64, height=64, num_frames=9)
    ctx = torch.randn(1, 8, model.config.text_dim, generator=torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteError, match=r"non-finite \(NaN/inf\) at chunk 0, step 0 \(low resolution\).*"
                                             r"NaN/inf weights.*LoRA"):
        HiStreamPipeline(model, cfg).generate(ctx, seed=1)


def test_fp16_runs_name_the_overflow_first():
    with pytest.raises(NonFiniteError, match="fp16 overflow"):
        from histream_core.finite import check_step

        check_step(torch.tensor([1.0, float("inf")]), 2, 1, "high", torch.float16)


def test_inputs_and_weights():
    with pytest.raises(NonFiniteError, match="the text context holds 1 NaN/inf value of 6: re-encode"):
        check_input(torch.tensor([[1.0, 2, 3], [4, float("nan"), 6]]), "the text context", "re-encode")
    fp8 = torch.tensor([1.0, 2.0]).to(torch.float8_e4m3fn)
    bad = torch.tensor([1.0, float("inf")])
    assert first_non_finite_weight([("a", fp8), ("b", torch.arange(3)), ("c", bad)]) == "c"
    assert first_non_finite_weight([("a", fp8)]) is None
