"""The committed toy model follows its prompt through HiStream: on prompt/seed pairs drawn at test time (not a
snapshot) from a printed seed - HISTREAM_TEST_SEED when set (to reproduce a failure), else the UTC date, so the
pairs change daily and a failure reproduces with `HISTREAM_TEST_SEED=<the printed seed>` - the generated videos show the asked colour and move in the asked
direction well above chance (colour 1/8, direction 1/4).

Thresholds sit about 3 binomial standard deviations (n = 40) below the accuracy measured on held-out pairs with the
committed weights and sampler (euler, 4 low-res + 4 full-res steps, cfg 3; MODEL_CARD.md and bench/RESULTS.md:
HiStream colour 0.70-0.76, direction 0.58-0.65 on 40-50 pairs; full-res colour 0.92), so the test is stable yet
fails if the weights, the sampler, guidance or the HiStream path stop following the prompt: a model at chance
passes the direction check with probability ~2 % and the colour checks essentially never.

Full resolution from the first step (the Self-Forcing-style baseline) is checked for colour only: this small model
often draws the first frame at 128 px as several fragments (HiStream draws it at 64 px first, which keeps one
object), and its direction accuracy (~0.48) is too close to chance for a threshold that means something."""

from __future__ import annotations

import datetime
import os
import random

import pytest

from histream_toy import random_spec
from histream_toy.sampling import prompt_accuracy

PAIRS = 40
MIN_ACCURACY = {  # preset -> (colour, direction or None)
    "histream": (0.50, 0.40),
    "self_forcing": (0.70, None),
}


def random_pairs(draw: int, n: int = PAIRS, frames: int = 33):
    rng = random.Random(draw)
    return [(random_spec(rng), rng.randrange(2**31), frames) for _ in range(n)]


def run_seed() -> int:
    env = os.environ.get("HISTREAM_TEST_SEED")
    return int(env) if env else int(datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d"))


@pytest.mark.parametrize("preset", list(MIN_ACCURACY))
def test_videos_follow_the_prompt(preset):
    draw = run_seed()
    print(f"toy behaviour pairs drawn from seed {draw} (rerun with HISTREAM_TEST_SEED={draw})")
    acc = prompt_accuracy(random_pairs(draw), preset, 128)
    msg = f"{preset}, HISTREAM_TEST_SEED={draw}: colour {acc['color']:.2f}, direction {acc['direction']:.2f}; {acc['misses'][:6]}"
    min_color, min_direction = MIN_ACCURACY[preset]
    assert acc["color"] >= min_color, msg
    if min_direction is not None:
        assert acc["direction"] >= min_direction, msg
