#!/usr/bin/env python3
"""Epsilons from Google's dp_accounting, for the device's RDP accountant.

Writes core/tests/fixtures/dp_accounting_epsilons.json: for a grid of noise
multipliers z, sampling rates q, round counts and deltas, plus a few
heterogeneous ledgers (sequences of (z, q, rounds) segments), the epsilon and
optimal order that dp_accounting's RdpAccountant (default orders,
add-or-remove-one neighbours) gives for Poisson-subsampled Gaussian rounds.
core/tests/accountant.rs checks hearth-core's accountant against it (within
1%).

    python3 tests/federated/accountant_fixture.py           rewrite the fixture
    python3 tests/federated/accountant_fixture.py --check   regenerate into a
        temporary file and fail if any epsilon differs from the committed
        fixture by more than 1e-9 relative (tests/federated/run.sh runs this)

Runs itself in a venv with the exact versions of
tests/federated/dp-requirements.txt ($HEARTH_DP_VENV, by default
~/.cache/hearth/dp-venv), made on first use.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "tests" / "federated" / "dp-requirements.txt"
FIXTURE = REPO / "core" / "tests" / "fixtures" / "dp_accounting_epsilons.json"
VENV = Path(os.environ.get("HEARTH_DP_VENV", Path.home() / ".cache" / "hearth" / "dp-venv"))
STAMP = VENV / "hearth-dp-requirements.txt"
TOLERANCE = 1e-9

NOISE_MULTIPLIERS = [0.5, 0.8, 1.0, 1.5, 3.0, 10.0]
SAMPLING_RATES = [0.001, 0.01, 0.1, 0.5, 1.0]
ROUNDS = [1, 10, 100, 1000]
DELTAS = [1e-5, 1e-6]
# Ledgers whose rounds were announced with different parameters.
SEQUENCES = {
    "tightening": [(1.0, 0.01, 100), (1.5, 0.01, 200), (3.0, 0.05, 500)],
    "mixed": [(0.8, 0.1, 10), (10.0, 1.0, 5), (1.2, 0.002, 1000)],
    "device": [(0.5, 0.001, 50), (1.1, 0.03, 300), (2.0, 0.5, 20), (0.7, 1.0, 1)],
}


def in_venv():
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv(script=None):
    """Re-runs `script` (this one by default) in the pinned venv, making it
    if needed."""
    if in_venv():
        return
    python = VENV / "bin" / "python"
    wanted = REQUIREMENTS.read_text()
    if not (python.exists() and STAMP.exists() and STAMP.read_text() == wanted):
        print(f"accountant fixture: making {VENV} ({REQUIREMENTS.name})", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
            check=True,
        )
        STAMP.write_text(wanted)
    os.execv(str(python), [str(python), str(Path(script or __file__).resolve()), *sys.argv[1:]])


def cases():
    """(name, segments) for every ledger in the fixture."""
    for z in NOISE_MULTIPLIERS:
        for q in SAMPLING_RATES:
            for rounds in ROUNDS:
                yield f"z={z} q={q} T={rounds}", [(z, q, rounds)]
    yield from SEQUENCES.items()


def generate():
    import dp_accounting
    from absl import logging
    from importlib import metadata

    # dp_accounting warns for every order whose fractional-order series does
    # not converge (it leaves that order out; so does the Rust accountant).
    logging.set_verbosity(logging.ERROR)

    out = []
    for name, segments in cases():
        event = dp_accounting.ComposedDpEvent(
            [
                dp_accounting.SelfComposedDpEvent(
                    dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds
                )
                for z, q, rounds in segments
            ]
        )
        accountant = dp_accounting.rdp.RdpAccountant()
        accountant.compose(event)
        for delta in DELTAS:
            epsilon, order = accountant.get_epsilon_and_optimal_order(delta)
            epsilon, order = float(epsilon), float(order)
            if not math.isfinite(epsilon):
                raise SystemExit(f"accountant fixture: {name} delta={delta}: epsilon {epsilon}")
            out.append(
                {
                    "name": name,
                    "segments": [{"noise_multiplier": z, "sampling_rate": q, "rounds": r} for z, q, r in segments],
                    "delta": delta,
                    "epsilon": epsilon,
                    "order": order,
                }
            )
    return {"dp_accounting": metadata.version("dp-accounting"), "cases": out}


def write_fixture(fixture, path, generator, what, how):
    """Writes `fixture` as JSON with one case a line (small, readable
    diffs), after the generator, the dp_accounting version and `what`:
    `how` (the accountant or mechanism the cases come from)."""
    lines = [
        "{",
        f'  "generator": "{generator}",',
        f'  "dp_accounting": {json.dumps(fixture["dp_accounting"])},',
        f'  "{what}": {json.dumps(how)},',
        '  "cases": [',
    ]
    lines += [f"    {json.dumps(case)}," for case in fixture["cases"]]
    lines[-1] = lines[-1].rstrip(",")
    lines += ["  ]", "}", ""]
    Path(path).write_text("\n".join(lines))


def write(fixture, path):
    write_fixture(
        fixture,
        path,
        "tests/federated/accountant_fixture.py",
        "accountant",
        "dp_accounting.rdp.RdpAccountant() (default orders, add-or-remove-one); each segment "
        "SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(z)), rounds); get_epsilon_and_optimal_order(delta)",
    )


def compare(committed_path, fresh_path):
    """Returns the problems (empty if the committed fixture is current) and the worst relative gap."""
    committed = json.loads(Path(committed_path).read_text())
    fresh = json.loads(Path(fresh_path).read_text())
    problems = []
    if committed["dp_accounting"] != fresh["dp_accounting"]:
        problems.append(f"dp_accounting {committed['dp_accounting']} in the fixture, {fresh['dp_accounting']} here")
    if len(committed["cases"]) != len(fresh["cases"]):
        problems.append(f"{len(committed['cases'])} cases in the fixture, {len(fresh['cases'])} regenerated")
    worst = 0.0
    for old, new in zip(committed["cases"], fresh["cases"]):
        if (old["name"], old["segments"], old["delta"]) != (new["name"], new["segments"], new["delta"]):
            problems.append(f"case {old['name']} delta={old['delta']} is now {new['name']} delta={new['delta']}")
            continue
        gap = abs(old["epsilon"] - new["epsilon"]) / max(abs(new["epsilon"]), 1e-300)
        worst = max(worst, gap)
        if gap > TOLERANCE:
            problems.append(f"{new['name']} delta={new['delta']}: epsilon {old['epsilon']} committed, {new['epsilon']} now")
    return problems, worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURE, help="where to write (default: the committed fixture)")
    parser.add_argument("--check", action="store_true", help="regenerate into a temporary file and compare")
    args = parser.parse_args()
    ensure_venv()

    start = time.monotonic()
    fixture = generate()
    if not args.check:
        write(fixture, args.out)
        print(f"accountant fixture: {len(fixture['cases'])} cases (dp_accounting {fixture['dp_accounting']}) "
              f"in {time.monotonic() - start:.1f} s -> {args.out}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / FIXTURE.name
        write(fixture, fresh)
        problems, worst = compare(FIXTURE, fresh)
    for problem in problems[:20]:
        print(f"accountant fixture: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(f"accountant fixture: {FIXTURE.relative_to(REPO)} is not current "
                         f"({len(problems)} differences); rerun {Path(__file__).relative_to(REPO)}")
    print(f"accountant fixture: current ({len(fixture['cases'])} cases, dp_accounting {fixture['dp_accounting']}, "
          f"worst relative gap {worst:.1e}) in {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
