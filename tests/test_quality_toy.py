"""The toy yardstick runs end to end and its FLOP accounting orders the modes as the schedules say."""

from bench.quality_toy import markdown, run


def test_yardstick_structure_and_flop_order():
    res = run(pairs=2, frames=9, long=13, long_pairs=1, size=64, log=lambda *_: None)
    rows = res["rows"]
    assert set(rows) == {"histream", "histream_plus", "self_forcing", "low_res_only"}
    for r in rows.values():
        assert 0 <= r["color_acc"] <= 1 and 0 <= r["direction_acc"] <= 1 and r["pairs"] == 2
    f = {k: r["flops_per_frame"] for k, r in rows.items()}
    # 8 full-res steps > 4 low + 4 high > sparser later chunks; all-low-res is cheapest
    assert f["self_forcing"] > f["histream"] > f["histream_plus"] > f["low_res_only"] > 0
    assert rows["self_forcing"]["flops_vs_full_res"] == 1.0
    assert set(res["anchor_ablation"]) == {"anchor 1", "anchor 0"}
    assert all(0 <= r["start_end_same_color"] <= 1 for r in res["anchor_ablation"].values())
    assert "low-res only" in markdown(res) and "| anchor 0 |" in markdown(res)
