#!/usr/bin/env python3
"""The distributed-mode noise multipliers that spend what central mode
spends: for each central z (Poisson-sampled Gaussian at rate Q over ROUNDS
rounds, dp_accounting's RdpAccountant), the z at which ROUNDS rounds of the
distributed discrete Gaussian with a device coin of rate P, over a cohort
of COHORT devices of which HONEST_FRACTION are counted on, at BITS bits
and the largest scale with room for the noise, reach the same epsilon at
DELTA (tests/federated/ddg_fixture.py's formulas, which the device's
accountant matches within 1%). Prints them comma-separated, in order; 0
stays 0.

    match_epsilon.py --central 0,1 --q 0.106 --rounds 60 --delta 5.35e-4 \\
        --cohort 943 --honest-fraction 0.6667 --bits 20 --clip 0.1 --p 0.106

With --for-epsilon E1,E2,... instead of --central, the central z's that
spend each epsilon over ROUNDS rounds at rate Q (for fleet-scale runs).

Runs itself in the venv of tests/federated/accountant_fixture.py.
"""

import argparse
import logging
import math
import sys
from pathlib import Path

FEDERATED = Path(__file__).resolve().parents[2] / "tests" / "federated"
sys.path.insert(0, str(FEDERATED))
import accountant_fixture  # noqa: E402
import ddg_fixture  # noqa: E402


def central_epsilon(z, q, rounds, delta):
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant()
    accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)
    return accountant.get_epsilon(delta)


def distributed_epsilon(z, a):
    from dp_accounting.rdp import RdpAccountant
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    orders = list(RdpAccountant()._orders)
    honest = ddg_fixture.honest(a.honest_fraction, a.cohort)
    scale = ddg_fixture.largest_scale(a.bits, a.clip, a.cohort, z * math.sqrt(a.cohort / honest))
    base = ddg_fixture.base_rdp(z, honest, a.clip, scale, ddg_fixture.DIMENSION)
    one = ddg_fixture.subsampled_curve(base, a.p, orders) if a.p < 1.0 else [base(o) for o in orders]
    return compute_epsilon(orders, [a.rounds * r for r in one], a.delta)[0]


def matched(target, spend):
    """The z at which spend(z) is target, by bisection on log z (spend
    falls as z grows)."""
    lo, hi = 1e-3, 1e3
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if spend(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-6:
            break
    return hi


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--central", help="central noise multipliers, comma-separated")
    which.add_argument("--for-epsilon", help="target epsilons, comma-separated")
    p.add_argument("--q", type=float, required=True)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--delta", type=float, required=True)
    p.add_argument("--cohort", type=int)
    p.add_argument("--honest-fraction", type=float, default=2.0 / 3.0)
    p.add_argument("--bits", type=int, default=20)
    p.add_argument("--clip", type=float)
    p.add_argument("--p", type=float)
    a = p.parse_args()
    if a.central and None in (a.cohort, a.clip, a.p):
        p.error("--central needs --cohort, --clip and --p")
    accountant_fixture.ensure_venv(__file__)
    # dp_accounting warns of each fractional order it leaves out.
    logging.getLogger("absl").setLevel(logging.ERROR)
    out = []
    if a.for_epsilon:
        for target in (float(x) for x in a.for_epsilon.split(",")):
            z = matched(target, lambda z: central_epsilon(z, a.q, a.rounds, a.delta))
            print(f"match_epsilon: central z {z:.6g} spends {central_epsilon(z, a.q, a.rounds, a.delta):.4g}",
                  file=sys.stderr)
            out.append(repr(z))
        print(",".join(out))
        return
    for z in (float(x) for x in a.central.split(",")):
        if z == 0.0:
            out.append("0")
            continue
        target = central_epsilon(z, a.q, a.rounds, a.delta)
        zd = matched(target, lambda z: distributed_epsilon(z, a))
        print(f"match_epsilon: central z {z} spends {target:.4g}; distributed z {zd:.6g} spends "
              f"{distributed_epsilon(zd, a):.4g}", file=sys.stderr)
        out.append(repr(zd))
    print(",".join(out))


if __name__ == "__main__":
    main()
