"""Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy, NeurIPS 2021,
"Differentially private learning with adaptive clipping"): the clip norm C
follows a quantile of the devices' update norms instead of being tuned by
hand, with its own small share of the privacy budget. The same rule as
`hearth simulate --adaptive-clip` (cli/src/adaptive_clip.rs).

Each round the coordinator learns, with noise, how many of the round's
updates were within C (each device's bit: was its update left unclipped),
and moves C geometrically towards the target quantile gamma:

    C <- C exp(-eta (b - gamma)),  b the noisy share of unclipped updates.

The count's noise has std sigma_b (in devices). A bit moves the count by at
most 1, by 1/2 about its mean, so the round is one Gaussian mechanism over
the pair (update, bit) with the noise multiplier z the round announces
when the update's own multiplier is `(z^-2 - (2 sigma_b)^-2)^-1/2`
(their theorem 1): the devices account z, as without adaptive clipping.

Where the count comes from:

* plain rounds: this coordinator sees each clipped update; a norm below C
  by more than f32 rounding is an unclipped one; it adds the count's noise;
* secure rounds: the bit rides inside the masked sum, one more coordinate
  `beta (bit - 1/2)` after the update's, with `beta = 2 C t`,
  `t = (4 sigma_b^2 / z^2 - 1)^-1/2`: the vector's norm is at most
  `C sqrt(1 + t^2)` (the secure round's clip norm) and noise of std z times
  that (added here, or by the devices in distributed mode) is noise of std
  sigma_b on the count and of multiplier `z sqrt(1 + t^2)` on the update,
  theorem 1's split exactly. No one sees a device's bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A clipped update's norm is C up to f32 rounding; one below C by more
# than this (relative) was not clipped.
UNCLIPPED_MARGIN = 1e-5


@dataclass
class AdaptiveClip:
    # The clip norm of the round under way.
    clip: float
    # gamma: the share of updates the clip norm should leave unclipped.
    quantile: float
    # eta: the geometric step of the clip norm.
    learning_rate: float = 0.2
    # sigma_b: the std of the noise on the count of unclipped updates.
    count_noise: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"the initial clip norm must be above 0, got {self.clip}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"adaptive-clip-quantile must be in (0, 1), got {self.quantile}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"clip-learning-rate must be above 0, got {self.learning_rate}")
        if not (math.isfinite(self.count_noise) and self.count_noise >= 0):
            raise ValueError(f"clip-count-noise must be at least 0, got {self.count_noise}")

    def update_noise_multiplier(self, z: float) -> float:
        """The update's own noise multiplier when the round (update and
        bit) has multiplier z; 0 stays 0. A count noise below z / 2 cannot
        carry z: ValueError."""
        if z == 0:
            return 0.0
        rest = z**-2 - (2 * self.count_noise) ** -2 if self.count_noise > 0 else -1.0
        if not rest > 0:
            raise ValueError(
                f"clip-count-noise {self.count_noise} is too small for noise-multiplier {z}: "
                f"at least {z / 2} is needed"
            )
        return rest**-0.5

    def stretch(self, z: float) -> float:
        """sqrt(1 + t^2): the secure vector's norm bound over C, and the
        update's multiplier over z (1 without noise: no count coordinate
        is needed then, but one is sent all the same, with t = 1)."""
        return self.update_noise_multiplier(z) / z if z > 0 else math.sqrt(2.0)

    def count_weight(self, z: float) -> float:
        """beta = 2 C t: the count coordinate's weight in a secure round."""
        s = self.stretch(z)
        return 2.0 * self.clip * math.sqrt(s * s - 1.0)

    def update(self, unclipped: float, cohort: float) -> float | None:
        """Moves the clip norm after a round of `cohort` updates of which
        `unclipped` (already noised) were within C. Returns the noisy share
        of unclipped updates; nothing changes for an empty round."""
        if cohort <= 0:
            return None
        share = unclipped / cohort
        self.clip *= math.exp(-self.learning_rate * (share - self.quantile))
        return share

    def noisy_count(self, unclipped: int, rng: np.random.Generator) -> float:
        """A plain round's count of unclipped updates with its noise."""
        return unclipped + (self.count_noise * float(rng.normal()) if self.count_noise > 0 else 0.0)


def unclipped(norm: float, clip: float) -> bool:
    """Whether an update of (clipped) L2 norm `norm` was within `clip`."""
    return norm < clip * (1.0 - UNCLIPPED_MARGIN)
