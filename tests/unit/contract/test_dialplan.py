import pytest

from offhook.contract.dialplan import Decision, DigitMap, DigitMapError

US = "[2-9]xxx|0|00|911|1[2-9]xx[2-9]xxxxxx|011x.T|x.T"


@pytest.mark.parametrize(
    ("dialled", "expected"),
    [
        ("2", Decision.WAIT),
        ("2001", Decision.SEND),  # explicit 4-digit extension completes at once
        ("0", Decision.WAIT),  # "00" may follow
        ("00", Decision.SEND),
        ("12125551234", Decision.SEND),
        ("011", Decision.WAIT),  # international: only the timer ends it
        ("01144207", Decision.WAIT),
    ],
)
def test_decide_before_timeout(dialled: str, expected: Decision) -> None:
    assert DigitMap(US).decide(dialled) is expected


def test_timer_completes_timed_pattern_and_catch_all() -> None:
    m = DigitMap(US)
    assert m.decide("01144207", timed_out=True) is Decision.SEND
    assert m.decide("0", timed_out=True) is Decision.SEND


def test_no_match_is_rejected() -> None:
    m = DigitMap("[2-9]xxx|911")
    assert m.decide("1") is Decision.REJECT
    assert m.decide("20", timed_out=True) is Decision.REJECT
    assert m.decide("20001") is Decision.REJECT


def test_sets_ranges_and_repeat() -> None:
    m = DigitMap("[135]x|*7[0-2].#")
    assert m.decide("37") is Decision.SEND
    assert m.decide("47") is Decision.REJECT
    assert m.decide("*7") is Decision.WAIT
    assert m.decide("*7#") is Decision.SEND
    assert m.decide("*7012#") is Decision.SEND
    assert m.decide("*73") is Decision.REJECT


@pytest.mark.parametrize("bad", ["", "12||3", "[2-", "1T2", ".1", "12a", "[9-2]", "[]"])
def test_bad_maps_name_the_problem(bad: str) -> None:
    with pytest.raises(DigitMapError):
        DigitMap(bad)
