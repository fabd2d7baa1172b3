"""The memory preflight: a run that cannot fit is refused with the estimate and the fixes that fit; one that fits
(just under the limit) is never refused."""

from __future__ import annotations

import pytest

from histream_core import HiStreamConfig, WanConfig
from histream_core.memory import InsufficientMemoryError, cheaper_plans, check_fits, gib, run_bytes

MODEL = WanConfig.preset("1.3B")


def test_refuses_with_estimate_free_and_fixes_that_fit():
    cfg = HiStreamConfig(width=1920, height=1088, num_frames=81, batch_size=2, window_chunks=3)
    need = run_bytes(MODEL, cfg)
    fixes = cheaper_plans(MODEL, cfg)
    names = [n for n, _ in fixes]
    assert set(names) == {"window_chunks 1", "batch_size 1", "960x544"}
    assert all(n < need for _, n in fixes)
    free = sorted(n for _, n in fixes)[1]  # the two cheapest fixes fit, the third does not
    with pytest.raises(InsufficientMemoryError) as err:
        check_fits(need, free, "cuda:0", fixes, others="or leave the vae input empty")
    text = str(err.value)
    assert f"needs ≈ {gib(need)} on cuda:0" in text and f"{gib(free)} is free" in text
    fitting = [n for n, b in fixes if b <= free]
    assert len(fitting) == 2 and all(n in text.split("changes that fit:")[1] for n in fitting)
    assert "leave the vae input empty" in text and "Nothing was allocated" in text


def test_a_plan_just_under_the_limit_runs():
    cfg = HiStreamConfig(width=1920, height=1088, num_frames=81)
    need = run_bytes(MODEL, cfg)
    check_fits(need, need, "cuda:0")  # exactly the free amount: fits
    with pytest.raises(InsufficientMemoryError):
        check_fits(need, need - 1, "cuda:0")


def test_no_fix_fits_says_so():
    cfg = HiStreamConfig(width=1920, height=1088, num_frames=81)
    with pytest.raises(InsufficientMemoryError, match="none of these fits alone"):
        check_fits(run_bytes(MODEL, cfg), 1, "cpu", cheaper_plans(MODEL, cfg))
