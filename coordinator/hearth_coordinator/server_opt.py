"""What the server does with each round's (noisy) mean update.

The mean of the clipped deltas, with its Gaussian noise, is what the privacy
guarantee covers; everything here is post-processing of it, so the epsilon
devices account for does not change with the choice. Three optimizers, the
same as `hearth simulate --server-opt` (cli/src/fedavg.rs), with the mean
`d` as the step direction:

* `fedavg`: `w += lr * d` (lr 1 is McMahan et al.'s FedAvg);
* `fedavgm`: `v = momentum * v + d`, `w += lr * v` (Hsu et al., 2019);
* `fedadam`: Adam on the pseudo-gradient `g = -d` (Reddi et al., "Adaptive
  Federated Optimization", 2021), with bias correction: `m = b1 m + (1 -
  b1) g`, `v = b2 v + (1 - b2) g^2`, `w -= lr m^ / (sqrt(v^) + tau)`.

FedAdam moves each weight by about `lr` per round whatever the size of the
mean, which is what lets the hashed id tables (most of whose rows only a few
devices of a round touch, the rest of the mean being zeros) learn at the pace
of the dense layers; on MovieLens-100K it is the one that trains (docs/federated.md; a
rate of 0.1 falling to 0.01 over the run there).

With `lr_final` and `rounds`, the rate falls linearly from `lr` at the first
round to `lr_final` at round `rounds` (`hearth simulate --server-lr-final`).

"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KINDS = ("fedavg", "fedavgm", "fedadam")


@dataclass
class ServerOptimizer:
    kind: str = "fedavg"
    lr: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-6
    lr_final: float | None = None
    rounds: int = 1
    steps: int = 0
    first: dict[str, np.ndarray] = field(default_factory=dict)
    second: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"server-optimizer must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ValueError("server-learning-rate must be a positive number")
        for name, v in (("server-momentum", self.momentum), ("beta1", self.beta1), ("beta2", self.beta2)):
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        if not self.tau > 0:
            raise ValueError("tau must be positive")
        if self.lr_final is not None and not (np.isfinite(self.lr_final) and self.lr_final > 0):
            raise ValueError("server-learning-rate-final must be a positive number")
        if self.rounds < 1:
            raise ValueError("rounds must be at least 1")

    def rate(self, step: int) -> float:
        """The learning rate of the step-th round (1-based)."""
        if self.lr_final is None or self.rounds <= 1:
            return self.lr
        t = min(max(step - 1, 0), self.rounds - 1) / (self.rounds - 1)
        return self.lr + (self.lr_final - self.lr) * t

    def step(
        self, global_params: list[tuple[str, np.ndarray]], mean: list[tuple[str, np.ndarray]]
    ) -> list[tuple[str, np.ndarray]]:
        """New global parameters (float32) from the current ones and the round's mean delta."""
        self.steps += 1
        lr = self.rate(self.steps)
        out = []
        for (name, w), (mname, d) in zip(global_params, mean):
            if name != mname:
                raise ValueError(f"parameter {mname!r} where {name!r} was expected")
            w = w.astype(np.float64)
            d = d.astype(np.float64)
            if self.kind == "fedavg":
                new = w + lr * d
            elif self.kind == "fedavgm":
                v = self.momentum * self.first.get(name, np.zeros_like(d)) + d
                self.first[name] = v
                new = w + lr * v
            else:
                g = -d
                m1 = self.beta1 * self.first.get(name, np.zeros_like(g)) + (1 - self.beta1) * g
                m2 = self.beta2 * self.second.get(name, np.zeros_like(g)) + (1 - self.beta2) * g * g
                self.first[name], self.second[name] = m1, m2
                c1 = 1 - self.beta1**self.steps
                c2 = 1 - self.beta2**self.steps
                new = w - lr * (m1 / c1) / (np.sqrt(m2 / c2) + self.tau)
            out.append((name, new.astype(np.float32)))
        return out
