"""The toy yardstick: its detectors pass true videos (as rendered and through the toy autoencoder, which is what the
yardstick scores) and fail spoiled ones (stripes, smears, lumpy blobs, two objects); the fast component labelling
agrees with its reference; batched generation equals per-pair runs; the yardstick runs end to end with paired
intervals and orders the modes' FLOPs as their schedules say."""

import random

import pytest
import torch

from bench.quality_toy import SCORES, bootstrap_interval, generate_batch, markdown, run, summarise
from histream_toy.autoencoder import load_toy_ae
from histream_toy.data import VideoSpec, random_spec, render
from histream_toy.metrics import (
    CONTROLS,
    control_video,
    label_components,
    label_components_reference,
    swept_template,
    swept_template_reference,
    video_scores,
)
from histream_toy.sampling import generate_latent, load_toy_dit

SEED = 20261201  # every random draw below comes from it
PER_FRAME = ("one_object", "shape", "area", "compact", "speed", "direction")


@pytest.fixture(scope="module")
def ae():
    return load_toy_ae()


def _specs(n: int) -> list[VideoSpec]:
    """n random specs (printed seed) plus one of every shape, so each shape's detector is exercised."""
    rng = random.Random(SEED)
    print(f"specs drawn from random.Random({SEED})")
    fixed = [VideoSpec("red", "circle", "right", "fast", "gradient", 1), VideoSpec("blue", "square", "up", "slow"),
             VideoSpec("green", "triangle", "left", "fast", "plain", 2)]
    return fixed + [random_spec(rng) for _ in range(n)]


@pytest.mark.parametrize("through_ae", [False, True], ids=["rendered", "autoencoder"])
def test_true_videos_pass_every_check(ae, through_ae):
    frames = 41  # several bounces at the fast speed, long enough for every motion window
    scores = []
    for spec in _specs(3):
        video = render(spec, frames, 128, 128)
        if through_ae:
            with torch.no_grad():
                video = ae.decode(ae.encode(video.unsqueeze(0)))[0]
        s = video_scores(video, spec.prompt)
        scores.append(s)
        for k in ("one_object", "area", "direction", "initial_direction", "speed_class", "identity_all"):
            assert s[k] == 1.0, (spec, k, s)
        assert s["all"] >= 0.85, (spec, s)  # the autoencoder rounds a fast square's ends now and then
    mean_all = sum(s["all"] for s in scores) / len(scores)
    assert mean_all >= (0.999 if not through_ae else 0.95), scores


@pytest.mark.parametrize("kind", CONTROLS)
def test_spoiled_videos_fail(ae, kind):
    """Each control fails "all at once" in every frame, and for the reason it was built to show."""
    reason = {"stripe": "compact", "smear": "compact", "blob": "area", "two_objects": "one_object"}[kind]
    for spec in _specs(2):
        with torch.no_grad():
            video = ae.decode(ae.encode(control_video(spec, kind, 21, 128, 128).unsqueeze(0)))[0]
        s = video_scores(video, spec.prompt)
        assert s["all"] == 0.0, (spec, kind, s)
        assert s[reason] <= 0.35, (spec, kind, reason, s)  # a trail shortened by the wall may pass now and then


def test_another_prompts_true_video_fails(ae):
    """A perfect video of the wrong colour has no object of the prompted colour; the same colour moving the other
    way fails direction."""
    red = render(VideoSpec("red", "circle", "right", "fast", seed=3), 13, 128, 128)  # before its first bounce
    assert video_scores(red, "blue circle moving right, fast")["one_object"] == 0.0
    s = video_scores(red, "red circle moving left, fast")
    assert s["initial_direction"] == 0.0 and s["direction"] < 0.5 and s["all"] < 0.5


def test_identity_notices_a_changed_look():
    """Frame 0 from another seed's layout (size, tint, gradient) spliced before the rest fails identity."""
    spec = VideoSpec("white", "square", "down", "slow", "gradient", seed=4)
    other = VideoSpec("white", "square", "down", "slow", "plain", seed=9)
    video = render(spec, 21, 128, 128)
    assert video_scores(video, spec.prompt)["identity_all"] == 1.0
    spliced = torch.cat([render(other, 21, 128, 128)[:, :1], video[:, 1:]], dim=1)
    assert video_scores(spliced, spec.prompt)["identity_all"] == 0.0


def test_fast_labelling_matches_reference():
    g = torch.Generator().manual_seed(SEED)
    mask = torch.rand(3, 40, 48, generator=g) > 0.55  # many components, some touching diagonally
    fast, ref = label_components(mask), label_components_reference(mask)
    assert torch.equal(fast > 0, ref > 0)
    # the same partition: a one-to-one map between the two labellings
    pairs = torch.stack([fast[mask], ref[mask]], dim=1).unique(dim=0)
    assert pairs[:, 0].unique().numel() == pairs.shape[0] == pairs[:, 1].unique().numel()
    # no component crosses frames
    frame = torch.arange(3).view(3, 1, 1).expand_as(fast)[mask]
    assert torch.stack([fast[mask], frame], 1).unique(dim=0).shape[0] == fast[mask].unique().numel()


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_swept_templates_match_reference(shape):
    for axis in (0, 1):
        for across, along in ((20, 20), (37, 37), (20, 60), (37, 100), (25, 31)):
            h, w = (across, along) if axis == 0 else (along, across)
            assert torch.equal(swept_template(shape, h, w, axis), swept_template_reference(shape, h, w, axis))


def test_batched_generation_equals_single_runs():
    model = load_toy_dit()
    prompts, seeds = ["red circle moving right, fast", "blue square moving up, slow"], [5, 123]
    batch = generate_batch(prompts, seeds, 9, "histream", 64, model)
    for b in range(2):
        single = generate_latent(prompts[b], 9, seeds[b], "histream", 64, model)
        torch.testing.assert_close(batch[b:b + 1], single, atol=1e-3, rtol=0)


def test_paired_bootstrap_interval():
    g = torch.Generator().manual_seed(SEED)
    d = (0.3 + torch.randn(400, generator=g)).tolist()
    lo, hi = bootstrap_interval(d, seed=1)
    m, se = sum(d) / len(d), torch.tensor(d).std().item() / len(d) ** 0.5
    assert lo < m < hi and abs((hi - lo) - 2 * 1.96 * se) < 0.2 * (2 * 1.96 * se)  # ≈ the normal interval
    row = {k: 1.0 for k in SCORES}
    a = [{"prompt": "p", "seed": i, **row} for i in range(5)]
    b = [{"prompt": "p", "seed": i, **row, "all": 0.0} for i in range(5)]
    summ = summarise({"histream": a, "self_forcing": b})
    assert summ["paired"]["histream - self_forcing"]["all"]["mean"] == 1.0
    assert summ["paired"]["histream - self_forcing"]["shape"]["ci"] == (0.0, 0.0)


def test_yardstick_structure_and_flop_order():
    res = run(pairs=2, frames=9, anchor_pairs=2, size=64, batch=2, validate_specs=1, flop_frames=9,
              log=lambda *_: None)
    modes = res["summary"]["modes"]
    assert set(modes) == {"histream", "histream_plus", "self_forcing", "histream_anchor0"}
    for r in modes.values():
        assert r["pairs"] == 2 and all(0 <= r[m]["mean"] <= 1 for m in SCORES)
    assert set(res["summary"]["paired"]) == {"histream - self_forcing", "histream_plus - histream",
                                             "histream_plus - self_forcing", "histream - histream_anchor0"}
    f = res["flops_per_frame"]
    # 8 full-res steps > 4 low + 4 high > sparser later chunks
    assert f["self_forcing"] > f["histream"] > f["histream_plus"] > 0
    table = markdown(res)
    assert "| anchor 1 - anchor 0 (paired) |" in table and "control: two objects" in table
