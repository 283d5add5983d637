"""The impairment channel's decisions: rates per seed, burst lengths, delays, reproducibility."""

from __future__ import annotations

import statistics

import pytest

from offhook.firmware.devtools.impairment import Impairment, ImpairmentChannel, ImpairmentError

N = 20000


def run(impairment: Impairment, seed: int | str = 7, n: int = N) -> ImpairmentChannel:
    channel = ImpairmentChannel(impairment, seed)
    for _ in range(n):
        channel.decide()
    return channel


def decisions(impairment: Impairment, seed: int | str, n: int = 500) -> list[tuple[float, ...]]:
    channel = ImpairmentChannel(impairment, seed)
    return [channel.decide() for _ in range(n)]


@pytest.mark.parametrize("loss", [1.0, 3.0, 5.0, 10.0])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_loss_rate_matches_the_setting(loss: float, seed: int) -> None:
    stats = run(Impairment(loss_pct=loss), seed).stats
    assert stats.packets == N
    assert stats.loss_fraction == pytest.approx(loss / 100, abs=0.006)
    # independent losses: bursts are short (mean 1 / (1 - p))
    assert stats.mean_burst_length == pytest.approx(1 / (1 - loss / 100), abs=0.08)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gilbert_elliott_keeps_the_mean_loss_and_makes_bursts(seed: int) -> None:
    stats = run(Impairment(burst_loss_pct=3.0, burst_length=4.0), seed, n=60000).stats
    assert stats.loss_fraction == pytest.approx(0.03, abs=0.008)
    assert stats.mean_burst_length == pytest.approx(4.0, rel=0.2)


def test_same_seed_same_decisions_other_seed_other_decisions() -> None:
    combined = Impairment(loss_pct=5, jitter_ms=40, reorder_pct=2, duplicate_pct=1)
    assert decisions(combined, "run-1") == decisions(combined, "run-1")
    assert decisions(combined, "run-1") != decisions(combined, "run-2")


def test_one_setting_does_not_shift_another_settings_sequence() -> None:
    lost_alone = [not d for d in decisions(Impairment(loss_pct=5), 11)]
    lost_with_jitter = [not d for d in decisions(Impairment(loss_pct=5, jitter_ms=80), 11)]
    assert lost_alone == lost_with_jitter


@pytest.mark.parametrize("jitter", [20.0, 40.0, 80.0])
def test_jitter_is_uniform_between_delay_and_delay_plus_jitter(jitter: float) -> None:
    delays = run(Impairment(delay_ms=10, jitter_ms=jitter), 5).stats.delays_ms
    assert min(delays) >= 10 and max(delays) <= 10 + jitter
    assert statistics.fmean(delays) == pytest.approx(10 + jitter / 2, rel=0.03)
    # uniform: standard deviation jitter / sqrt(12)
    assert statistics.pstdev(delays) == pytest.approx(jitter / 12**0.5, rel=0.05)


def test_reordering_and_duplication_rates() -> None:
    channel = run(Impairment(reorder_pct=2, reorder_gap_ms=30, duplicate_pct=1), 9)
    stats = channel.stats
    assert stats.reordered / N == pytest.approx(0.02, abs=0.004)
    assert stats.duplicated / N == pytest.approx(0.01, abs=0.003)
    assert sorted(set(stats.delays_ms)) == [0.0, 30.0]
    copies = decisions(Impairment(duplicate_pct=50), 3, n=50)
    assert {len(c) for c in copies} == {1, 2}
    assert all(c[1] > c[0] for c in copies if len(c) == 2)


def test_clean_network_delivers_everything_at_once() -> None:
    channel = run(Impairment(), 1, n=1000)
    assert channel.stats.lost == channel.stats.duplicated == 0
    assert set(channel.stats.delays_ms) == {0.0}
    assert Impairment().clean and Impairment().describe() == "clean"


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"loss_pct": 100}, "loss_pct"),
        ({"jitter_ms": -1}, "jitter_ms"),
        ({"burst_length": 0.5}, "burst_length"),
        ({"loss_pct": 1, "burst_loss_pct": 1}, "choose one"),
        ({"burst_loss_pct": 60, "burst_length": 1}, "burst_loss_pct"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs: dict, named: str) -> None:
    with pytest.raises(ImpairmentError, match=named):
        Impairment(**kwargs)


def test_from_text() -> None:
    assert Impairment.from_text("loss_pct=3, jitter_ms=40") == Impairment(loss_pct=3, jitter_ms=40)
    assert Impairment.from_text("") == Impairment()
    with pytest.raises(ImpairmentError, match="NAME=NUMBER"):
        Impairment.from_text("lossy=3")
    with pytest.raises(ImpairmentError, match="not a number"):
        Impairment.from_text("loss_pct=three")
