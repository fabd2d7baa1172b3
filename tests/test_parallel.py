"""Sequence parallelism (Ulysses over heads, KV cache sharded by head) on CPU with gloo, 2 and 3 ranks spawned
here: the sharded run equals the single-process run, each rank's caches are the head slice of the single-process
caches and cost 1/N, the exchanges equal slicing, and a group size that does not divide the heads is refused."""

import pytest
import torch
from core_helpers import video_config
from parallel_helpers import (
    SCENARIOS,
    SEED,
    SIX_HEADS,
    exchange_inputs,
    run_scenario,
    scenario,
    six_head_model,
    spawn_ranks,
)

from histream_core import HiStreamPipeline
from histream_core.parallel import SequenceParallel, parallel_from_environment, token_split

RANKS = (2, 3)


@pytest.fixture(scope="module")
def single():
    """The single-process reference of every scenario (no parallel context: today's code path)."""
    return {name: run_scenario(name) for name in SCENARIOS}


@pytest.fixture(scope="module", params=RANKS, ids=lambda n: f"{n}ranks")
def sharded(request):
    return request.param, spawn_ranks(request.param, "scenarios")


@pytest.mark.parametrize("name", SCENARIOS)
def test_sharded_run_equals_single_process(single, sharded, name):
    n, ranks = sharded
    want = single[name]["latent"]
    for r, res in enumerate(ranks):
        got = res[name]["latent"]
        assert got.shape == want.shape
        err = (got - want).abs().max().item()
        assert err <= 1e-5, f"{name}, {n} ranks, rank {r}: max |diff| {err:.3g}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_each_rank_caches_its_head_slice_at_one_nth_the_bytes(single, sharded, name):
    n, ranks = sharded
    ref = single[name]
    heads = SIX_HEADS.num_heads
    assert len(ref["caches"]) >= 1 + (name not in ("self_forcing",))  # both resolutions (and VACE) are covered
    for r, res in enumerate(ranks):
        got = res[name]
        assert got["caches"].keys() == ref["caches"].keys()
        for cname, (k, v) in ref["caches"].items():
            lo, hi = r * heads // n, (r + 1) * heads // n
            gk, gv = got["caches"][cname]
            assert gk.shape == k[..., lo:hi, :].shape
            for what, g, w in (("K", gk, k[..., lo:hi, :]), ("V", gv, v[..., lo:hi, :])):
                if g.dtype == torch.float8_e4m3fn:  # stored rounded: an input 1e-7 off may round one step apart
                    g, w = g.float(), w.float()
                    step = 2.0 ** (torch.floor(torch.log2(w.abs().clamp_min(2**-6))) - 3)  # e4m3: 3 mantissa bits
                    off = (g - w).abs()
                    assert (off <= step).all() and (off > 0).float().mean() <= 1e-3, (name, n, r, cname, what)
                    continue
                # relative to the cache's largest entry: linear layers over fewer rows round differently
                err = ((g - w).abs().max() / w.abs().max()).item()
                assert err <= 1e-6, f"{name}, {n} ranks, rank {r}, {cname} {what}: {err:.3g}"
            assert got["nbytes"][cname] * n == ref["nbytes"][cname]
        assert got["sent"]["qkv"] > 0 and got["sent"]["out"] > 0


def test_exchanges_equal_slicing_the_full_tensors():
    n = 3  # 16 tokens per frame over 3 ranks: uneven shards 6/5/5
    ranks = spawn_ranks(n, "exchange")
    x = exchange_inputs()
    f, hw, sizes = x["frames"], x["hw"], token_split(16, n)
    assert sizes == [6, 5, 5]
    for r, res in enumerate(ranks):
        lo, hi = sum(sizes[:r]), sum(sizes[:r + 1])
        heads = slice(2 * r, 2 * r + 2)

        def tokens_of(t, lo=lo, hi=hi):  # this rank's slice of every frame of a [.., F·hw, ..] tensor
            b = t.shape[0]
            return t.view(b, f, hw, *t.shape[2:])[:, :, lo:hi].reshape(b, f * (hi - lo), *t.shape[2:])

        assert torch.equal(res["shard"], tokens_of(x["tokens"]))
        assert torch.equal(res["gathered"], x["tokens"])
        assert torch.equal(res["to_heads"], x["qkv"][..., heads, :])
        assert torch.equal(res["to_tokens"], tokens_of(x["out"]))
        # bytes sent to the other ranks: q/k/v and out pieces of this rank's tokens with the others' heads
        mine = 2 * f * (hi - lo) * 2 * 4 * 4  # batch 2, 2 heads of 4, float32
        assert res["sent"]["qkv"] == 3 * mine * (n - 1)
        assert res["sent"]["out"] == sum(2 * f * m * 2 * 4 * 4 for q, m in enumerate(sizes) if q != r)
        env = res["environment"]  # parallel_from_environment in the initialised world
        assert env["nothing"] is None
        assert env["registered"] == env["yunchang"] == env["env_flag"] == (r, n)
        assert "ring degree 3" in env["ring_refused"] and "set the ring degree to 1" in env["ring_refused"]


def test_group_size_not_dividing_the_heads_is_refused_with_the_fix():
    model = six_head_model()
    with pytest.raises(ValueError, match=r"4 processes cannot share the model's 6 attention heads.*\[2, 3, 6\]"):
        HiStreamPipeline(model, video_config("histream"), parallel=SequenceParallel(0, 4))
    with pytest.raises(ValueError, match=r"low-res grid has 4 patch tokens per frame, fewer than the 6"):
        HiStreamPipeline(model, video_config("histream"), parallel=SequenceParallel(0, 6))


def test_single_process_has_no_parallel_context():
    import torch.distributed as dist

    assert not dist.is_initialized()
    assert parallel_from_environment() is None
    pipe = HiStreamPipeline(six_head_model(), video_config("histream"))
    assert pipe.parallel is None and all(c.parallel is None and c.heads == 6 for c in pipe.plan_caches())


def test_bytes_counted_in_a_gloo_run_equal_a_shape_only_meta_run(sharded):
    """The bench counts on `meta` with a transport that moves nothing: the same bytes as the real collectives."""
    n, ranks = sharded
    for r, res in enumerate(ranks):
        model, cfg, kw = scenario("histream")
        sp = SequenceParallel(r, n)
        with torch.no_grad():
            HiStreamPipeline(model.to("meta"), cfg, output_device=None, parallel=sp).generate(seed=SEED, **kw)
        assert dict(sp.sent) == res["histream"]["sent"] and sp.sent["gather"] > 0


def test_a_group_of_one_is_bitwise_the_single_process_run():
    """All the sharding plumbing with N = 1 (exchanges are copies): not one bit changes."""
    model, cfg, kw = scenario("histream")
    with torch.no_grad():
        want = HiStreamPipeline(model, cfg).generate(seed=SEED, **kw)
        got = HiStreamPipeline(model, cfg, parallel=SequenceParallel(0, 1, _LocalTransport())).generate(seed=SEED, **kw)
    assert torch.equal(got, want)


class _LocalTransport:
    """A group of one: the only piece goes to this rank itself."""

    def all_to_all(self, recv, send, recv_sizes, send_sizes):
        recv.copy_(send)
