"""The committed toy model follows its prompt's colour through HiStream: on prompt/seed pairs drawn at random at test
time (not a snapshot; the draw is printed on failure), the generated videos show the asked colour well above chance
(1/8). Thresholds sit about 3 binomial standard deviations (n = 40) below the accuracy measured on 50 held-out pairs
(histream 0.54, full-res 0.68; see bench/RESULTS.md) - single 40-pair draws were seen as low as 0.35 for histream -
so the test is stable yet fails if the weights, the sampler or the HiStream path stop following the prompt (a
model at chance, 0.125, fails it with near certainty).

Motion direction is NOT asserted: the model does not follow the direction word yet (its direction accuracy is at
chance, 1/4, and a paired test - same seed, opposite direction words - wins about half the time), and a threshold at
or below chance would assert nothing. Issue 7 stays open for that."""

from __future__ import annotations

import random

import pytest

from histream_core.toy import random_spec
from histream_core.toy.sampling import prompt_accuracy

PAIRS = 40
MIN_COLOR = {"histream": 0.25, "self_forcing": 0.45}  # measured: see the module docstring


def random_pairs(draw: int, n: int = PAIRS, frames: int = 33):
    rng = random.Random(draw)
    return [(random_spec(rng), rng.randrange(2**31), frames) for _ in range(n)]


@pytest.mark.parametrize("preset", list(MIN_COLOR))
def test_videos_show_the_prompted_colour(preset):
    draw = random.SystemRandom().randrange(2**32)
    acc = prompt_accuracy(random_pairs(draw), preset, 128)
    msg = f"{preset}, draw {draw}: colour {acc['color']:.2f} (direction {acc['direction']:.2f}); {acc['misses'][:6]}"
    assert acc["color"] >= MIN_COLOR[preset], msg
