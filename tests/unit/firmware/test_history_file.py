from pathlib import Path

from offhook.contract.config import PhoneConfig
from offhook.firmware.events import CallRecord
from offhook.firmware.phone import Phone
from offhook.firmware.state_files import CallHistoryFile


def _record(n: int) -> CallRecord:
    return CallRecord(
        id=f"r{n}", direction="outgoing", account=0, local_uri="sip:1001@pbx",
        remote_uri=f"sip:20{n}@pbx", remote_name=f"Peer {n}", start=1000.0 + n, answer=None,
        end=1005.0 + n, disposition="no_answer", status_code=480,
    )  # fmt: skip


def test_kept_history_is_restored_into_the_phone(tmp_path: Path) -> None:
    history = CallHistoryFile(tmp_path / "history.jsonl")
    for n in range(3):
        history.append(_record(n))
    restored = history.call_records()
    assert [r.id for r in restored] == ["r0", "r1", "r2"]
    phone = Phone(PhoneConfig(), history=restored)
    shown = phone.snapshot(2000.0)["history"]
    assert len(shown) == 3
    assert "202" in str(shown) and "200" in str(shown)


def test_damaged_history_lines_are_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    history = CallHistoryFile(path)
    history.append(_record(1))
    with path.open("a") as fh:
        fh.write('{"torn": \n[1, 2]\n{"id": "x"}\n')
    history.append(_record(2))
    assert [r.id for r in history.call_records()] == ["r1", "r2"]


def _refused(n: int, caller: str = "6666") -> CallRecord:
    return CallRecord(
        id=f"f{n}", direction="incoming", account=0, local_uri="sip:1001@pbx",
        remote_uri=f"sip:{caller}@pbx", remote_name="", start=2000.0 + n, answer=None,
        end=2000.0 + n, disposition="rejected", status_code=486,
    )  # fmt: skip


def test_a_flood_of_refusals_is_one_line_and_keeps_the_rest_of_the_history(
    tmp_path: Path,
) -> None:
    history = CallHistoryFile(tmp_path / "history.jsonl")
    for n in range(3):
        history.append(_record(n))
    for n in range(500):  # more than the file keeps
        history.append(_refused(n))
    history.append(_refused(900, caller="2002"))
    kept = history.call_records()
    assert [(r.id, r.count) for r in kept] == [
        ("r0", 1), ("r1", 1), ("r2", 1), ("f0", 500), ("f900", 1),
    ]  # fmt: skip
    assert kept[3].end == 2499.0
