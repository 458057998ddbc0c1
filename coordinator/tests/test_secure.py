"""Checks of the secure-aggregation rounds' Python side (secure.py) without
a SuperLink: every shape of bad reply is refused without an exception, and
a round that cannot finish leaves the model as it was. The protocol itself
is tested in Rust (secagg/tests) and end to end in the Flower lane."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, Metadata, RecordDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hearth_coordinator import secure, strategy  # noqa: E402


def metadata(node):
    return Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0, reply_to_message_id="m",
                    group_id="1", created_at=0.0, ttl=600.0, message_type="train")


def reply(content, node=7):
    return Message(content=content, metadata=metadata(node))


def test_only_a_secagg_reply_of_bytes_is_read():
    good = reply(RecordDict({secure.SECAGG_KEY: ConfigRecord({"reply": b"\x01\x02"})}))
    assert secure.stage_reply(good) == (7, b"\x01\x02", "")
    bad = [
        Message(error=Error(code=2, reason="refused"), metadata=metadata(7)),
        reply(RecordDict({})),
        reply(RecordDict({"arrays": ArrayRecord({})})),
        reply(RecordDict({secure.SECAGG_KEY: ConfigRecord({"reply": "text"})})),
        reply(RecordDict({secure.SECAGG_KEY: ConfigRecord({"reply": b"x", "more": 1})})),
        reply(RecordDict({secure.SECAGG_KEY: ConfigRecord({"reply": b"x"}), "arrays": ArrayRecord({})})),
    ]
    for msg in bad:
        node, data, why = secure.stage_reply(msg)
        assert node == 7 and data is None and why, (msg, why)


def test_unflatten_gives_back_the_shapes_in_order():
    like = [("a", np.zeros((2, 3))), ("b", np.zeros(4))]
    flat = np.arange(10, dtype=np.float64)
    out = secure.unflatten(flat, like)
    assert [n for n, _ in out] == ["a", "b"] and out[0][1].shape == (2, 3)
    assert out[1][1].tolist() == [6, 7, 8, 9]


class FakeGrid:
    """Ten nodes that answer every stage with `answer(stage, message)`."""

    def __init__(self, answer, nodes=10):
        self.nodes, self.answer, self.stage = list(range(101, 101 + nodes)), answer, 0
        self.run = SimpleNamespace(run_id=5)
        self.sent = []

    def get_node_ids(self):
        return list(self.nodes)

    def push_messages(self, messages):
        messages = list(messages)
        self.sent.append(messages)
        self.stage += 1
        self.pending = {}
        for i, m in enumerate(messages):
            r = self.answer(self.stage, m)
            if r is not None:
                r.metadata.__dict__["_reply_to_message_id"] = str(i)
                self.pending[str(i)] = r
        return [str(i) for i in range(len(messages))]

    def pull_messages(self, ids):
        out = [self.pending.pop(i) for i in list(ids) if i in self.pending]
        return out


def run(answer, **terms):
    from flwr.supercore.task_identity import TaskIdentity

    # What Flower sets in the process that runs a ServerApp.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, 0, 1
    s = strategy.HearthFedAvg(clip_norm=1.0, noise_multiplier=0.5, min_nodes=10, seed=0)
    params = [("w", np.ones((3, 2), np.float32)), ("b", np.zeros(2, np.float32))]
    grid = FakeGrid(answer)
    config = ConfigRecord({"clip-norm": 1.0, "server-round": 1})
    out = secure.secure_round(grid, s, 1, params, config, secure.SecureTerms(stage_timeout=1.0, **terms))
    return out, params, s.rounds[-1], grid


def test_a_round_whose_devices_all_misbehave_ends_without_touching_the_model():
    answers = {
        "garbage": lambda stage, m: reply(RecordDict({secure.SECAGG_KEY: ConfigRecord({"reply": b"\xff\xff"})}),
                                          m.metadata.dst_node_id),
        "errors": lambda stage, m: Message(error=Error(code=2, reason="no"), metadata=metadata(m.metadata.dst_node_id)),
        "silence": lambda stage, m: None,
        "strangers": lambda stage, m: reply(RecordDict({secure.SECAGG_KEY: ConfigRecord({"reply": b""})}), 9999),
    }
    for name, answer in answers.items():
        out, params, summary, grid = run(answer)
        assert out is params, name
        assert summary["mode"] == "secure" and summary["applied"] is False, (name, summary)
        assert "failed" in summary and "setup" in summary["failed"], (name, summary)
        # Only setup messages went out: nothing of the model before keys.
        assert len(grid.sent) == 1 and all(set(m.content.keys()) == {secure.SECAGG_KEY} for m in grid.sent[0])


def test_setup_goes_to_every_sampled_node_once_as_a_train_message():
    out, params, summary, grid = run(lambda stage, m: None)
    [setup] = grid.sent
    assert sorted(m.metadata.dst_node_id for m in setup) == list(range(101, 111))
    assert all(m.metadata.message_type == "train" for m in setup)


def test_the_devices_coin_is_announced_only_in_distributed_mode():
    import struct

    # Setup field 12 (the coin's rate) is a protobuf double: key 0x61, then
    # the value's 8 bytes.
    coin = b"\x61" + struct.pack("<d", 0.25)
    for mode, announced in [("distributed", True), ("central", False)]:
        _, _, summary, grid = run(lambda stage, m: None, noise_mode=mode, device_sampling_rate=0.25)
        [setup] = grid.sent
        stages = [m.content[secure.SECAGG_KEY]["stage"] for m in setup]
        assert all((coin in data) == announced for data in stages), mode
        assert summary.get("device_sampling_rate") == (0.25 if announced else None), summary


def test_exchange_pulls_between_batches_of_pushes():
    # A device answers soon after its message and stays online only a few
    # seconds: the first replies are taken before the last messages go.
    calls, pending = [], {}

    class Grid:
        def push_messages(self, messages):
            ids = [str(len(pending) + i) for i in range(len(messages))]
            calls.append(("push", len(messages)))
            for i, m in zip(ids, messages):
                pending[i] = SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i), body=m)
            return ids

        def pull_messages(self, ids):
            calls.append(("pull", len(ids)))
            return [pending[i] for i in ids]

    got = []
    secure.exchange(Grid(), list(range(40)), timeout=1.0, on_reply=lambda r: got.append(r.body), batch=16)
    assert sorted(got) == list(range(40))
    assert calls == [("push", 16), ("pull", 16), ("push", 16), ("pull", 16), ("push", 8), ("pull", 8)], calls


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print(f"  ok {name}")
