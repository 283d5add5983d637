"""Durable outbox: order, batching, deletion by accepted id, survival of kill -9, bad input."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from offhook.firmware.provisioning.outbox import Outbox, OutboxError


def test_records_queue_in_order_and_are_deleted_only_when_accepted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    ids = [outbox.put("cdrs", {"n": n}) for n in range(5)]
    assert len(set(ids)) == 5
    assert [r["n"] for r in outbox.pending("cdrs", limit=3)] == [0, 1, 2]
    assert outbox.delete("cdrs", [ids[1], "not-queued"]) == 1
    assert [r["n"] for r in Outbox(tmp_path).pending("cdrs")] == [0, 2, 3, 4]
    assert outbox.count() == 4 and outbox.count("events") == 0


def test_given_id_is_kept(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    assert outbox.put("events", {"id": "abc123", "type": "config_applied"}) == "abc123"
    assert outbox.pending("events") == [{"id": "abc123", "type": "config_applied"}]


@pytest.mark.parametrize(
    ("kind", "record", "message"),
    [
        ("calls", {}, "unknown outbox kind 'calls'"),
        ("cdrs", [], "must be a JSON object"),
        ("cdrs", {"id": "../etc"}, "must be 1-64"),
        ("cdrs", {"x": float("nan")}, "is not JSON"),
        ("cdrs", {"x": object()}, "is not JSON"),
    ],
)
def test_bad_records_are_refused_clearly(
    tmp_path: Path, kind: str, record: object, message: str
) -> None:
    with pytest.raises(OutboxError, match=message):
        Outbox(tmp_path).put(kind, record)  # type: ignore[arg-type]


def test_cap_drops_oldest(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, max_per_kind=3)
    for n in range(5):
        outbox.put("quality", {"n": n})
    assert [r["n"] for r in outbox.pending("quality")] == [2, 3, 4]


def test_unreadable_record_is_set_aside(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.put("cdrs", {"n": 1})
    (tmp_path / "cdrs" / "00000000000000000001-bad.json").write_text("{torn")
    assert [r["n"] for r in outbox.pending("cdrs")] == [1]
    assert (tmp_path / "cdrs" / "00000000000000000001-bad.bad").exists()


def test_queued_records_survive_kill_9(tmp_path: Path) -> None:
    """Every put() that returned before the kill is on disk afterwards, whole."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            outbox = Outbox(tmp_path)
            n = 0
            while True:
                outbox.put("cdrs", {"id": f"rec{n}", "payload": "x" * 2000})
                os.write(write_fd, n.to_bytes(4, "big"))
                n += 1
        finally:
            os._exit(0)
    os.close(write_fd)
    acknowledged = [int.from_bytes(os.read(read_fd, 4), "big") for _ in range(20)]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(read_fd)
    ids = {r["id"] for r in Outbox(tmp_path).pending("cdrs", limit=100_000)}
    assert {f"rec{n}" for n in acknowledged} <= ids
