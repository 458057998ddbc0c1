"""Checks of the model-evaluation round's Python side (evaluation.py) and
the run's report without a SuperLink: what the setup announces, that a
round that cannot finish decides nothing, and that the report shows the
gate's numbers (the protocol is tested in Rust, the whole round in the
Flower lane). Plain asserts, no pytest."""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hearth_coordinator import evaluation, gate, secure, strategy  # noqa: E402
from hearth_coordinator.output import RunOutput, report_html  # noqa: E402
from test_secure import FakeGrid  # noqa: E402


def run(answer, **terms):
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, 0, 1
    s = strategy.HearthFedAvg(clip_norm=1.0, noise_multiplier=0.5, min_nodes=10, seed=0)
    candidate = [("w", np.ones((3, 2), np.float32)), ("b", np.zeros(2, np.float32))]
    grid = FakeGrid(answer)
    config = ConfigRecord({"clip-norm": 1.0, "model-release": "candidate"})
    summary = evaluation.evaluation_round(grid, s, 3, candidate, config, secure.SecureTerms(stage_timeout=1.0, **terms))
    return summary, config, grid, s


def test_the_setup_asks_for_an_evaluation_of_six_values_bounded_by_sqrt_6():
    import struct

    summary, config, grid, s = run(lambda stage, m: None)
    [setup] = grid.sent
    stages = [m.content[secure.SECAGG_KEY]["stage"] for m in setup]
    # Setup field 14 (the task) = 1 (evaluate-model): key 0x70, varint 1;
    # field 10 (the vector's length) = 6: key 0x50; field 5 (the clip norm)
    # sqrt(6) as a double: key 0x29; field 2 (the round) 2^32 + 3.
    for data in stages:
        assert b"\x70\x01" in data and b"\x50\x06" in data, data
        assert b"\x29" + struct.pack("<d", gate.CONTRIBUTION_BOUND) in data
        assert b"\x10\x83\x80\x80\x80\x10" in data, data
    # The devices' config: the same bound, the round the candidate came from.
    assert config["clip-norm"] == gate.CONTRIBUTION_BOUND and config["server-round"] == 3
    # Nothing answered: no sums, no decision, and no training round recorded.
    assert "failed" in summary and "gate" not in summary and "sums" not in summary, summary
    assert summary["task"] == "evaluate-model" and s.rounds == []


def test_distributed_evaluations_announce_the_noise_and_central_ones_do_not():
    import struct

    z = b"\x59" + struct.pack("<d", 0.5)  # field 11, the noise multiplier
    for mode, announced in [("distributed", True), ("central", False)]:
        summary, _, grid, _ = run(lambda stage, m: None, noise_mode=mode)
        [setup] = grid.sent
        assert all((z in m.content[secure.SECAGG_KEY]["stage"]) == announced for m in setup), mode
        assert summary["noise_mode"] == mode


def test_the_report_shows_each_decision_and_its_interval():
    sums = [980.0, 83.2, 60.1, 55.0, 11.5, 15.0]
    published = {"round": 1, "sums": sums, "sigma": 2.0, "gate": gate.decide(sums, 2.0), "published_version": 3}
    kept = {"round": 2, "sums": sums, "sigma": 40.0, "gate": gate.decide(sums, 40.0)}
    failed = {"round": 3, "failed": "only 2 devices are left"}
    assert published["gate"]["publish"] and not kept["gate"]["publish"]
    with tempfile.TemporaryDirectory() as d:
        out = RunOutput(d, {"clip_norm": 1.0, "mode": "secure", "note": "<b>"})
        out.evaluations = [published, kept, failed]
        params = [("w", np.ones(2, np.float32))]
        out.checkpoint([{"round": 1, "mode": "secure", "participants": 10, "applied": True}], params)
        out.publish(params)
        out.finish([], params)
        body = json.loads((Path(d) / "summary.json").read_text())
        assert [e["round"] for e in body["evaluations"]] == [1, 2, 3]
        assert (Path(d) / "published.bin").read_bytes() == np.ones(2, "<f4").tobytes()
        page = (Path(d) / "report.html").read_text()
    assert page == report_html(body)
    assert "published as version 3" in page and "kept" in page and "failed: only 2 devices" in page
    assert "&lt;b&gt;" in page and "<b>" not in page
    d = published["gate"]["against_fallback"]
    assert f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" in page


def test_an_experiment_report_round_names_the_experiment_and_sends_no_model():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, 0, 1
    s = strategy.HearthFedAvg(clip_norm=1.0, noise_multiplier=0.5, min_nodes=10, seed=0)
    grid = FakeGrid(lambda stage, m: None)
    config = ConfigRecord({"clip-norm": 1.0})
    summary = evaluation.experiment_report_round(
        grid, s, 4, "home-row.v1", ["model", "popular"], config, secure.SecureTerms(stage_timeout=1.0)
    )
    [setup] = grid.sent
    for m in setup:
        data = m.content[secure.SECAGG_KEY]["stage"]
        # Task 2 (experiment-report), 10 values (2 arms of 5).
        assert b"\x70\x02" in data and b"\x50\x0a" in data, data
    assert config["experiment-id"] == "home-row.v1" and config["experiment-arms"] == "model,popular"
    assert config["clip-norm"] == evaluation.estimate.REPORT_BOUND and config["server-round"] == 4
    assert summary["experiment"] == "home-row.v1" and "failed" in summary and "arms" not in summary


def test_the_experiment_spec_is_checked():
    assert evaluation.parse_experiment("") is None
    assert evaluation.parse_experiment("home-row.v1:model,popular") == ("home-row.v1", ["model", "popular"])
    for bad in ["home-row.v1", "x:one", "x:a,a", ":a,b", "x:" + ",".join(f"a{i}" for i in range(9))]:
        try:
            evaluation.parse_experiment(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


def test_the_report_shows_each_arm_with_its_interval():
    from hearth_coordinator.estimate import estimate_arms

    sums = [400.0, 48.0, 120.0, 200.0, 90.0, 380.0, 30.0, 100.0, 150.0, 70.0]
    arms = [{"arm": n, **e} for n, e in zip(["model", "popular"], estimate_arms(sums, 8.0))]
    body = {"rounds": [], "experiment_reports": [{"experiment": "home-row.v1", "sigma": 8.0, "arms": arms},
                                                 {"experiment": "other", "failed": "too few"}]}
    page = report_html(body)
    ndcg = arms[0]["ndcg_at_10"]
    assert "Experiment home-row.v1" in page and "popular" in page and "No estimate: too few" in page
    assert f"{ndcg['estimate']:.4f} [{ndcg['low']:.4f}, {ndcg['high']:.4f}]" in page


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print(f"  ok {name}")
