"""Adaptive clipping on the coordinator (hearth_coordinator/adaptive_clip.py):
the clip norm follows a known quantile of synthetic norms, the privacy split
is theorem 1's, and a plain round learns its count from the updates it sees
(tests/federated/run.sh runs them; plain asserts, no pytest)."""

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hearth_coordinator.adaptive_clip import AdaptiveClip, unclipped  # noqa: E402
from test_strategy import SHAPES, hearth, reply_of, valid_content  # noqa: E402


def follow(clip: AdaptiveClip, rounds: int, cohort: int, draw, rng) -> float:
    for _ in range(rounds):
        norms = draw(rng, cohort)
        count = clip.noisy_count(sum(1 for n in norms if n <= clip.clip), rng)
        clip.update(count, cohort)
    return clip.clip


def test_the_clip_norm_follows_a_known_quantile_of_synthetic_norms():
    # Norms uniform in [0, 2): the gamma-quantile is 2 gamma. Log-normal
    # norms exp(N(0, 1)): the median is 1, the 0.9-quantile e^1.2816.
    uniform = lambda rng, n: 2.0 * rng.random(n)  # noqa: E731
    lognormal = lambda rng, n: np.exp(rng.standard_normal(n))  # noqa: E731
    for gamma, want, draw in [(0.5, 1.0, uniform), (0.8, 1.6, uniform), (0.5, 1.0, lognormal),
                              (0.9, math.exp(1.2816), lognormal)]:
        # From far below and far above, without noise and with the paper's
        # count noise (cohort / 20).
        for start in (0.01, 50.0):
            for sigma_b in (0.0, 50.0):
                clip = AdaptiveClip(clip=start, quantile=gamma, learning_rate=0.2, count_noise=sigma_b)
                got = follow(clip, 300, 1000, draw, np.random.default_rng(7))
                assert abs(got / want - 1) < 0.06, (gamma, start, sigma_b, got, want)


def test_the_count_takes_its_share_of_z_and_the_secure_coordinate_carries_it():
    clip = AdaptiveClip(clip=0.5, quantile=0.5, learning_rate=0.2, count_noise=5.0)
    # z^-2 = z_u^-2 + (2 sigma_b)^-2.
    zu = clip.update_noise_multiplier(1.0)
    assert abs(zu - (1 - 0.01) ** -0.5) < 1e-12
    assert clip.update_noise_multiplier(0.0) == 0.0
    for bad in (10.0, 11.0):
        try:
            clip.update_noise_multiplier(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
    # The secure vector (update, beta (bit - 1/2)): norm at most C stretch;
    # noise z C stretch is sigma_b on the count and z_u C on the update.
    for z in (0.3, 1.0, 4.0):
        s, beta = clip.stretch(z), clip.count_weight(z)
        assert abs(math.hypot(clip.clip, beta / 2) - clip.clip * s) < 1e-12
        assert abs(z * clip.clip * s / beta - clip.count_noise) < 1e-9
        assert abs(z * s - clip.update_noise_multiplier(z)) < 1e-12
    for kw in ({"clip": 0.0}, {"quantile": 1.0}, {"learning_rate": 0.0}, {"count_noise": -1.0}):
        args = {"clip": 1.0, "quantile": 0.5, "learning_rate": 0.2, "count_noise": 1.0} | kw
        try:
            AdaptiveClip(**args)
        except ValueError:
            continue
        raise AssertionError(kw)
    # An empty round changes nothing.
    assert clip.update(3.0, 0) is None and clip.clip == 0.5
    assert unclipped(0.4, 0.5) and not unclipped(0.5 * (1 - 1e-7), 0.5)


def test_a_plain_round_counts_the_unclipped_updates_it_sees_and_moves_c():
    nrng = np.random.default_rng(5)
    adaptive = AdaptiveClip(clip=1.0, quantile=0.5, learning_rate=0.2, count_noise=0.0)
    s = hearth(adaptive=adaptive)
    deltas = []
    for scale in (0.01, 0.02, 0.03, 10.0):
        d = [(n, (nrng.standard_normal(shape) * scale).astype(np.float32)) for n, shape in SHAPES]
        norm = math.sqrt(sum(float((a.astype(np.float64) ** 2).sum()) for _, a in d))
        if norm > 1.0:  # clipped on the device: norm C
            d = [(n, (a / norm).astype(np.float32)) for n, a in d]
        deltas.append(d)
    replies = [reply_of(valid_content(d), node=i + 1) for i, d in enumerate(deltas)]
    s.aggregate_train(1, replies)
    summary = s.rounds[-1]
    # Three of four unclipped: C moves down by exp(-0.2 (0.75 - 0.5)).
    assert summary["clip_norm"] == 1.0 and summary["unclipped_share"] == 0.75, summary
    assert abs(summary["next_clip_norm"] - math.exp(-0.05)) < 1e-12 and s.clip_norm == summary["next_clip_norm"]
    # The next round's replies are checked against the new C: an update at
    # the old C is now above it and dropped.
    s.aggregate_train(2, [reply_of(valid_content(deltas[3]), node=9)])
    assert s.rounds[-1]["participants"] == 0 and s.rounds[-1]["dropped"] == 1, s.rounds[-1]
    # Noise: the update's own multiplier, a little above z, with a count noise.
    s = hearth(adaptive=AdaptiveClip(clip=1.0, quantile=0.5, learning_rate=0.2, count_noise=5.0))
    s.noise_multiplier = 1.0
    assert abs(s.update_multiplier - (1 - 0.01) ** -0.5) < 1e-12


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print(f"  ok {name}")
