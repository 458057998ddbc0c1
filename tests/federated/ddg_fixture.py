#!/usr/bin/env python3
"""Epsilons of distributed discrete Gaussian rounds, for the device's
accountant in distributed mode (issue 17).

Writes core/tests/fixtures/ddg_epsilons.json: for a grid of cohorts,
honest fractions, bits, noise multipliers and round counts, the epsilon
(and optimal order) of that many rounds of the distributed discrete
Gaussian of Kairouz, Liu and Steinke (ICML 2021, arXiv:2102.06387):
Proposition 14's RDP with the conditional-rounding L2 sensitivity of
their section 4.1 (beta = exp(-1/2)), the L1 sensitivity D2 min(sqrt(d),
D2) and theorem 1's tau for the sum of the honest devices' shares,
converted to (epsilon, delta) by dp_accounting's compute_epsilon at
dp_accounting's default orders. Without a coin (sampling rate 1) there is
no amplification; with a device's local coin (rate q below 1) the round's
RDP is amplified by the general Poisson-subsampling bound of Zhu and Wang
(ICML 2019, theorem 6), at integer orders, and by the chord between
integer orders at fractional ones (the log-moment is convex); the script
first checks that bound against dp_accounting's exact RDP of the sampled
Gaussian (at or above it, by at most ln(3)/(a-1)). The
scale is the largest a round of that cohort and bits can take with room
for 7 standard deviations of the noise (hearth_secagg's
largest_scale_with_noise). core/tests/accountant.rs checks hearth-core's
accountant against it (within 1%).

    python3 tests/federated/ddg_fixture.py           rewrite the fixture
    python3 tests/federated/ddg_fixture.py --check   regenerate into a temporary
        file and fail if any epsilon differs from the committed one by more
        than 1e-9 relative (tests/federated/run.sh runs this)

Runs in the venv of accountant_fixture.py (the pinned dp_accounting).
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accountant_fixture as base  # noqa: E402

REPO = base.REPO
FIXTURE = REPO / "core" / "tests" / "fixtures" / "ddg_epsilons.json"
TOLERANCE = 1e-9

DIMENSION = 144_935  # the built-in model's parameters
BETA = math.exp(-0.5)
NOISE_MARGIN = 7.0
COHORTS = [10, 100, 1000, 10000]
HONEST_FRACTIONS = [1.0, 2.0 / 3.0, 0.5]
BITS = [16, 20, 24]
NOISE_MULTIPLIERS = [0.5, 1.0, 2.0]
ROUNDS = [1, 10, 100]
# Local coins, on the 2/3-honest cases.
SAMPLING_RATES = [0.1, 0.01]
DELTA = 1e-5
CLIP_NORM = 1.0


def honest(fraction, cohort):
    return min(max(math.ceil(fraction * cohort), 1), cohort)


def largest_scale(bits, clip, cohort, noise_std):
    room = 2.0 ** (bits - 1) - 2.0 * cohort
    return max(room / (clip * (cohort + NOISE_MARGIN * noise_std)), 0.0)


def l2_sensitivity(clip, scale, dim):
    c = clip * scale
    any_rounding = c + math.sqrt(dim)
    conditional = math.sqrt(c * c + dim / 4.0 + math.sqrt(2.0 * math.log(1.0 / BETA)) * (c + math.sqrt(dim) / 2.0))
    return min(any_rounding, conditional)


def base_rdp(z, n_honest, clip, scale, dim):
    """Proposition 14 as a function of the order, for the honest devices'
    summed noise."""
    l2_sens = l2_sensitivity(clip, scale, dim)
    l1_sens = l2_sens * min(math.sqrt(dim), l2_sens)
    sigma = z * clip * scale
    share_var = sigma**2 / n_honest
    tau = 0.0
    for k in range(1, n_honest):
        term = math.exp(-2.0 * math.pi**2 * share_var * k / (k + 1))
        if term == 0.0:
            break  # the terms only fall with k
        tau += term
    tau *= 10.0
    l1, l2 = l1_sens / sigma, l2_sens / sigma
    return lambda a: min(
        a / 2.0 * l2**2 + tau * dim,
        a / 2.0 * (l2**2 + 2.0 * l1 * tau + tau**2 * dim),
        a / 2.0 * (l2 + math.sqrt(dim) * tau) ** 2,
    )


def log_add(a, b):
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def ln_binomial(n, k):
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def subsampled_integer(base, q, alpha):
    """Zhu and Wang's theorem 6 at an integer order alpha >= 2, never above
    the mechanism without sampling. `base(l)` is the mechanism's RDP."""
    total = (alpha - 1) * math.log1p(-q) + math.log1p((alpha - 1) * q)
    for l in range(2, alpha + 1):
        three = math.log(3.0) if l >= 3 else 0.0
        term = ln_binomial(alpha, l) + l * math.log(q) + (alpha - l) * math.log1p(-q) + (l - 1) * base(l)
        total = log_add(total, three + term)
    return min(total / (alpha - 1), base(alpha))


def subsampled_curve(base, q, orders):
    out = []
    for a in orders:
        if float(a).is_integer():
            out.append(subsampled_integer(base, q, int(a)))
            continue
        k = math.floor(a)
        below = 0.0 if k < 2 else (k - 1) * subsampled_integer(base, q, k)
        above = k * subsampled_integer(base, q, k + 1)
        chord = (k + 1 - a) * below + (a - k) * above
        out.append(min(chord / (a - 1), base(a)))
    return out


def check_against_sampled_gaussian(orders):
    """The bound as read here lies between dp_accounting's exact RDP of the
    Poisson-sampled Gaussian and that plus ln(3)/(a-1) at integer orders."""
    from dp_accounting.rdp.rdp_privacy_accountant import _compute_rdp_poisson_subsampled_gaussian as exact_rdp

    integer = [a for a in orders if float(a).is_integer()]
    for z in [0.7, 1.0, 3.0]:
        for q in [0.001, 0.05, 0.5]:
            exact = exact_rdp(q, z, integer)
            general = subsampled_curve(lambda a: a / (2.0 * z * z), q, integer)
            for a, e, g in zip(integer, exact, general):
                if not math.isfinite(e):
                    continue
                if not (e * (1 - 1e-9) <= g <= e + math.log(3.0) / (a - 1) + 1e-12):
                    raise SystemExit(f"ddg fixture: the general bound at z={z} q={q} order {a}: {g} against exact {e}")


def cases():
    for cohort in COHORTS:
        for fraction in HONEST_FRACTIONS:
            n_honest = honest(fraction, cohort)
            for bits in BITS:
                for z in NOISE_MULTIPLIERS:
                    scale = largest_scale(bits, CLIP_NORM, cohort, z * math.sqrt(cohort / n_honest))
                    if scale <= 0.0:
                        continue
                    rates = [1.0] + (SAMPLING_RATES if fraction == HONEST_FRACTIONS[1] else [])
                    for rate in rates:
                        coin = "" if rate == 1.0 else f" q={rate}"
                        for rounds in ROUNDS:
                            yield {
                                "name": f"n={cohort} h={fraction:.4f} b={bits} z={z}{coin} T={rounds}",
                                "noise_multiplier": z,
                                "honest": n_honest,
                                "clip_norm": CLIP_NORM,
                                "scale": scale,
                                "dimension": DIMENSION,
                                "sampling_rate": rate,
                                "rounds": rounds,
                                "delta": DELTA,
                            }


def generate():
    from importlib import metadata

    from dp_accounting.rdp import RdpAccountant
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    orders = list(RdpAccountant()._orders)  # dp_accounting's default orders
    check_against_sampled_gaussian(orders)
    out = []
    curves = {}
    for case in cases():
        key = (case["noise_multiplier"], case["honest"], case["scale"], case["sampling_rate"])
        if key not in curves:
            base = base_rdp(case["noise_multiplier"], case["honest"], case["clip_norm"], case["scale"], DIMENSION)
            if case["sampling_rate"] == 1.0:
                curves[key] = [base(a) for a in orders]
            else:
                curves[key] = subsampled_curve(base, case["sampling_rate"], orders)
        one = curves[key]
        curve = [case["rounds"] * r for r in one]
        epsilon, order = compute_epsilon(orders, curve, case["delta"])
        if not math.isfinite(epsilon):
            raise SystemExit(f"ddg fixture: {case['name']}: epsilon {epsilon}")
        out.append({**case, "epsilon": float(epsilon), "order": float(order)})
    return {"dp_accounting": metadata.version("dp-accounting"), "cases": out}


def write(fixture, path):
    base.write_fixture(
        fixture,
        path,
        "tests/federated/ddg_fixture.py",
        "mechanism",
        "distributed discrete Gaussian, Kairouz, Liu, Steinke 2021, proposition 14, conditional "
        "rounding beta = exp(-1/2); a device's coin (sampling_rate < 1) by Zhu and Wang 2019, theorem 6; "
        "compute_epsilon at dp_accounting default orders",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="regenerate into a temporary file and compare")
    args = parser.parse_args()
    base.ensure_venv(__file__)
    start = time.monotonic()
    fixture = generate()
    if not args.check:
        write(fixture, FIXTURE)
        print(f"ddg fixture: {len(fixture['cases'])} cases in {time.monotonic() - start:.1f} s -> {FIXTURE}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / FIXTURE.name
        write(fixture, fresh)
        committed = json.loads(FIXTURE.read_text())["cases"]
        regenerated = json.loads(fresh.read_text())["cases"]
    problems = []
    if len(committed) != len(regenerated):
        problems.append(f"{len(committed)} cases in the fixture, {len(regenerated)} regenerated")
    for old, new in zip(committed, regenerated):
        gap = abs(old["epsilon"] - new["epsilon"]) / max(abs(new["epsilon"]), 1e-300)
        if old["name"] != new["name"] or gap > TOLERANCE:
            problems.append(f"{new['name']}: epsilon {old['epsilon']} committed, {new['epsilon']} now")
    for problem in problems[:20]:
        print(f"ddg fixture: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(f"ddg fixture: {FIXTURE.relative_to(REPO)} is not current; rerun this script")
    print(f"ddg fixture: current ({len(regenerated)} cases) in {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
