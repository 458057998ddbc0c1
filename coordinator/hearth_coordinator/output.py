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
"""

from __future__ import annotations

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

    def _summary(self, rounds: list[dict], finished: bool, error: str | None) -> bytes:
        body = {**self.header, "finished": finished, "rounds": rounds}
        if error is not None:
            body["error"] = error
        return (json.dumps(body, indent=2) + "\n").encode("utf-8")

    def checkpoint(self, rounds: list[dict], params: list[tuple[str, np.ndarray]]) -> None:
        """After a round: the partial weights and summary."""
        write_atomic(self.dir / "weights.partial.bin", model.weights_bytes(params))
        write_atomic(self.dir / "summary.partial.json", self._summary(rounds, False, None))

    def finish(
        self, rounds: list[dict], params: list[tuple[str, np.ndarray]], error: str | None = None
    ) -> None:
        """At the end of the run (error: why it stopped early): weights.bin,
        then summary.json, then the partial files go."""
        write_atomic(self.dir / "weights.bin", model.weights_bytes(params))
        write_atomic(self.dir / "summary.json", self._summary(rounds, error is None, error))
        for name in ("weights.partial.bin", "summary.partial.json"):
            (self.dir / name).unlink(missing_ok=True)
