"""What a run leaves in its `out-dir`.

After every round, `weights.partial.bin` (the global parameters the round
left) and `summary.partial.json` (every round so far, `"finished": false`),
so a run that is killed keeps what its rounds did. When the run ends,
`weights.bin` and then `summary.json` (`"finished": true`); when it fails,
the same two files from the last round done, with `"finished": false` and
the `"error"`. The partial files are removed once the final ones are
written. Every file is written to a temporary name and renamed, so a reader
never sees half of one. `summary.json` appearing means the run is over
(tests/federated/run.sh waits for it), hence the separate partial names.

With the release gate, the summary also lists the model-evaluation rounds
(`"evaluations"`), and `published.bin` holds the last parameters the gate
published. `report.html` (rewritten with the summary) shows the rounds and
the gate's decisions for a person to read.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np

from . import model


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class RunOutput:
    def __init__(self, out_dir: str | Path, header: dict) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.header = dict(header)
        # Model-evaluation rounds (the release gate) and experiment-report
        # rounds, when the run has them.
        self.evaluations: list[dict] | None = None
        self.experiment_reports: list[dict] | None = None

    def _body(self, rounds: list[dict], finished: bool, error: str | None) -> dict:
        body = {**self.header, "finished": finished, "rounds": rounds}
        if self.evaluations is not None:
            body["evaluations"] = self.evaluations
        if self.experiment_reports is not None:
            body["experiment_reports"] = self.experiment_reports
        if error is not None:
            body["error"] = error
        return body

    def _summary(self, body: dict) -> bytes:
        return (json.dumps(body, indent=2) + "\n").encode("utf-8")

    def checkpoint(self, rounds: list[dict], params: list[tuple[str, np.ndarray]]) -> None:
        """After a round: the partial weights and summary, and the report."""
        body = self._body(rounds, False, None)
        write_atomic(self.dir / "weights.partial.bin", model.weights_bytes(params))
        write_atomic(self.dir / "summary.partial.json", self._summary(body))
        write_atomic(self.dir / "report.html", report_html(body).encode("utf-8"))

    def publish(self, params: list[tuple[str, np.ndarray]]) -> None:
        """The parameters the gate just published."""
        write_atomic(self.dir / "published.bin", model.weights_bytes(params))

    def finish(
        self, rounds: list[dict], params: list[tuple[str, np.ndarray]], error: str | None = None
    ) -> None:
        """At the end of the run (error: why it stopped early): weights.bin,
        then summary.json, then the partial files go."""
        body = self._body(rounds, error is None, error)
        write_atomic(self.dir / "weights.bin", model.weights_bytes(params))
        write_atomic(self.dir / "report.html", report_html(body).encode("utf-8"))
        write_atomic(self.dir / "summary.json", self._summary(body))
        for name in ("weights.partial.bin", "summary.partial.json"):
            (self.dir / name).unlink(missing_ok=True)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape("" if value is None else str(value))


def _interval(c: dict) -> str:
    if c.get("low") is None:
        return "too few devices"
    return f"{c['difference']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]"


def report_html(body: dict) -> str:
    """The run for a person: its terms, each training round, and each
    evaluation with the gate's numbers and decision."""
    terms = {k: v for k, v in body.items() if k not in ("rounds", "evaluations", "experiment_reports")}
    out = ["<!doctype html>", "<meta charset=\"utf-8\">", "<title>Hearth federated run</title>",
           "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style>",
           "<h1>Hearth federated run</h1>", "<table>"]
    out += [f"<tr><th>{_cell(k)}</th><td>{_cell(v)}</td></tr>" for k, v in terms.items()]
    out.append("</table><h2>Training rounds</h2><table>")
    columns = ("round", "mode", "participants", "dropped", "clip_norm", "noise_std", "applied")
    out.append("<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>")
    for r in body.get("rounds", []):
        out.append("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>")
    out.append("</table>")
    evaluations = body.get("evaluations")
    if evaluations is not None:
        out.append("<h2>Release gate</h2><p>Mean NDCG@10 of each ranker over the devices that evaluated, "
                   "from noisy secure sums; the candidate's difference to the published model and the "
                   "fallback with its interval. Published only when both intervals are above zero.</p><table>")
        columns = ("round", "devices", "candidate", "published", "fallback", "vs published", "vs fallback",
                   "noise std", "decision")
        out.append("<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>")
        for e in evaluations:
            g = e.get("gate")
            if g is None:
                row = [e.get("round"), "", "", "", "", "", "", "", f"failed: {e.get('failed', '')}"]
            else:
                decision = f"published as version {e['published_version']}" if g["publish"] else "kept"
                row = [e["round"], g["devices"], g["candidate"], g["published"], g["fallback"],
                       _interval(g["against_published"]), _interval(g["against_fallback"]), e["sigma"], decision]
            out.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
        out.append("</table>")
    for report in body.get("experiment_reports") or []:
        out.append(f"<h2>Experiment {_cell(report.get('experiment'))}</h2>")
        if "arms" not in report:
            out.append(f"<p>No estimate: {_cell(report.get('failed', 'the round failed'))}</p>")
            continue
        out.append(f"<p>Per arm, the mean over its reporting devices of their own means, from noisy secure "
                   f"sums (noise std {report['sigma']:.4f}), with its interval.</p><table>")
        columns = ("arm", "devices", "NDCG@10", "hit@10", "engaged", "completed")
        out.append("<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>")
        for arm in report["arms"]:
            cells = [_cell(arm["arm"]), _cell(arm["devices"])]
            for key in ("ndcg_at_10", "hit_rate_at_10", "engaged_rate", "completion_rate"):
                m = arm[key]
                cells.append(f"{m['estimate']:.4f} [{m['low']:.4f}, {m['high']:.4f}]")
            out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("</table>")
    return "\n".join(out) + "\n"
