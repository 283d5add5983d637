"""The call analytics' aggregation on plain rows: legs joined by Call-ID, answered and missed,
days and busy hours in a zone across DST changes, the billing CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from offhook.provisioning.models import CallRecordRow
from offhook.provisioning.operations import OperationError
from offhook.provisioning.services import call_analytics as ca
from offhook.provisioning.services.time_zones import parse_zone

BERLIN = ZoneInfo("Europe/Berlin")


def ts(text: str) -> float:
    """'2026-03-29 00:30' UTC as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def leg(
    rid: str,
    direction: str,
    start: float,
    *,
    device: str = "dev-a",
    answer: float | None = None,
    end: float | None = None,
    disposition: str = "answered",
    local: str = "sip:1001@pbx",
    remote: str = "sip:1002@pbx",
    name: str = "",
    call_id: str = "",
) -> CallRecordRow:
    return CallRecordRow(
        id=rid,
        device_id=device,
        direction=direction,
        local_uri=local,
        remote_uri=remote,
        remote_name=name,
        start=start,
        answer=answer,
        end=end if end is not None else start + 60,
        disposition=disposition,
        sip_call_id=call_id,
    )


def scope(since: str, until: str, zone: ZoneInfo = BERLIN) -> ca.Scope:
    return ca.Scope(date.fromisoformat(since), date.fromisoformat(until), zone)


def test_two_legs_with_one_call_id_are_one_internal_call_with_both_names_and_mos() -> None:
    t = ts("2026-05-04 09:00")
    talk = {"answer": t + 5, "call_id": "cid-1"}
    out = leg("a1", "outgoing", t, end=t + 125, device="dev-a", name="Bob", **talk)  # type: ignore[arg-type]
    inc = leg(
        "b1",
        "incoming",
        t + 0.2,
        end=t + 125.3,
        device="dev-b",
        name="Alice",
        local="sip:1002@pbx",
        remote="sip:1001@pbx",
        **talk,
    )  # type: ignore[arg-type]
    lone = leg("c1", "outgoing", t + 600, device="dev-a", remote="sip:+4930123@trunk")
    calls = ca.join_legs([inc, lone, out], {"a1": 4.1, "b1": 3.2}, {"dev-a": "Desk A"})
    assert [c.key for c in calls] == ["cid-1", "c1"]
    joined = calls[0]
    assert joined.direction == "internal" and joined.disposition == "answered"
    assert (joined.caller.number, joined.caller.name, joined.caller.device_name) == (
        "1001",
        "Alice",
        "Desk A",
    )
    assert (joined.callee.number, joined.callee.name, joined.callee.device_id) == (
        "1002",
        "Bob",
        "dev-b",
    )
    assert (joined.caller_mos, joined.callee_mos) == (4.1, 3.2)
    assert joined.duration_s == pytest.approx(120.3)
    assert joined.legs == ("a1", "b1")
    assert calls[1].direction == "outgoing" and calls[1].callee.number == "+4930123"


def test_missed_and_answered_rates_count_a_joined_call_once() -> None:
    t = ts("2026-05-04 09:00")
    legs = [
        # internal, unanswered: caller's leg no_answer, callee's missed -> one missed call
        leg("a", "outgoing", t, disposition="no_answer", call_id="x", device="dev-a"),
        leg("b", "incoming", t, disposition="missed", call_id="x", device="dev-b"),
        # incoming from outside, answered (90 s of talk)
        leg("c", "incoming", t + 60, answer=t + 70, end=t + 160, device="dev-b"),
        # outgoing to outside, busy: not answered, not missed (it rang no fleet phone)
        leg("d", "outgoing", t + 120, disposition="busy", device="dev-a"),
    ]
    calls = ca.join_legs(legs)
    stats = ca.aggregate(calls, scope("2026-05-04", "2026-05-04"))
    assert stats.calls == 3
    assert (stats.answered, stats.missed, stats.rang_fleet) == (1, 1, 2)
    assert stats.answer_rate == pytest.approx(1 / 3)
    assert stats.miss_rate == pytest.approx(0.5)
    assert stats.average_duration_s == pytest.approx(90)
    assert calls[0].disposition == "missed" and calls[0].missed
    by_device = {b.key: (b.calls, b.missed) for b in stats.devices}
    assert by_device == {"dev-a": (2, 1), "dev-b": (2, 1)}


def test_busy_hours_and_days_follow_the_zone_across_both_dst_changes() -> None:
    calls = ca.join_legs(
        [
            # 2026-03-29, spring forward in Berlin at 01:00 UTC (02:00 CET -> 03:00 CEST)
            leg("s1", "incoming", ts("2026-03-29 00:30")),  # 01:30 CET, Sunday hour 1
            leg("s2", "incoming", ts("2026-03-29 01:30")),  # 03:30 CEST, Sunday hour 3
            # 2026-10-25, fall back at 01:00 UTC (03:00 CEST -> 02:00 CET)
            leg("f1", "incoming", ts("2026-10-25 00:30")),  # 02:30 CEST, hour 2
            leg("f2", "incoming", ts("2026-10-25 01:30")),  # 02:30 CET, hour 2 again
            leg("f3", "incoming", ts("2026-10-25 22:30")),  # 23:30 CET: still the 25th
            leg("f4", "incoming", ts("2026-10-25 23:30")),  # 00:30 on the 26th (Monday)
        ]
    )
    stats = ca.aggregate(calls, scope("2026-03-29", "2026-10-26"))
    sunday, monday = ca.WEEKDAYS.index("Sun"), ca.WEEKDAYS.index("Mon")
    assert stats.heat[sunday][1] == 1 and stats.heat[sunday][3] == 1
    assert stats.heat[sunday][2] == 2 and stats.heat[sunday][23] == 1
    assert stats.heat[monday][0] == 1
    assert stats.busiest == ("Sun", 2, 2)
    per_day = {p.day.isoformat(): p.calls for p in stats.days if p.calls}
    assert per_day == {"2026-03-29": 2, "2026-10-25": 3, "2026-10-26": 1}
    # the range's days are local midnights: the fall-back day is 25 hours long
    fall = scope("2026-10-25", "2026-10-25")
    assert fall.end_ts - fall.start_ts == 25 * 3600
    assert (
        scope("2026-03-29", "2026-03-29").end_ts - scope("2026-03-29", "2026-03-29").start_ts
        == 23 * 3600
    )
    # the same calls in UTC fall on other hours
    utc = ca.aggregate(calls, scope("2026-03-29", "2026-10-26", ZoneInfo("UTC")))
    assert utc.heat[sunday][0] == 2 and utc.heat[sunday][1] == 2


def test_csv_has_one_row_per_call_in_the_zone_and_utc_and_defuses_formulas() -> None:
    t = ts("2026-07-01 10:00")
    legs = [
        leg(
            "a",
            "outgoing",
            t,
            answer=t + 2,
            end=t + 62,
            call_id="k",
            device="dev-a",
            local="sip:1001@pbx",
            remote="sip:1002@pbx",
            name="Bob",
        ),
        leg(
            "b",
            "incoming",
            t,
            answer=t + 2,
            end=t + 62,
            call_id="k",
            device="dev-b",
            local="sip:1002@pbx",
            remote="sip:1001@pbx",
            name="=HYPERLINK()",
        ),
    ]
    text = "".join(ca.csv_lines(ca.join_legs(legs), BERLIN))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1
    row = rows[0]
    assert row["start_local"] == "2026-07-01T12:00:00+02:00"
    assert row["start_utc"] == "2026-07-01T10:00:00Z"
    assert (row["duration_s"], row["direction"], row["disposition"]) == (
        "60",
        "internal",
        "answered",
    )
    assert (row["caller"], row["callee"], row["callee_name"]) == ("1001", "1002", "Bob")
    assert row["caller_name"] == "'=HYPERLINK()"


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("2026-13-01", "", "from: '2026-13-01' is not a date"),
        ("2026-02-02", "2026-02-01", "from 2026-02-02 is after to 2026-02-01"),
        ("2024-01-01", "2026-01-01", "732 days from 2024-01-01 to 2026-01-01; at most 366"),
    ],
)
def test_bad_ranges_are_refused_with_what_was_wrong(since: str, until: str, message: str) -> None:
    with pytest.raises(OperationError, match=message) as caught:
        ca.parse_scope(None, BERLIN, since=since, until=until)  # type: ignore[arg-type]
    assert caught.value.status == 422


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "posixrules", ""])
def test_unknown_zones_are_refused_naming_the_value(name: str) -> None:
    with pytest.raises(OperationError, match="is not a tz database name"):
        parse_zone(name)


def test_known_zones_parse() -> None:
    assert parse_zone("Europe/Berlin").key == "Europe/Berlin"
    assert parse_zone(" UTC ").key == "UTC"
