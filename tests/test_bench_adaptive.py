"""The adaptive scenario's figures, read from samples of the server's counters (no processes)."""

from __future__ import annotations

import pytest

from bench.adaptive import (
    Sample,
    Timeline,
    alone_figures,
    alone_runs,
    figures_of,
    latency_percentile,
    others_cores,
    phases,
    planned_runs,
    rates,
    settle_time,
)

LINE = Timeline(warmup_s=1, halve_at=5, restore_at=10, outage_at=15, outage_s=4, end_at=25)


def series(rate_of: dict[tuple[float, float], tuple[float, float]], end: float) -> list[Sample]:
    """Return samples every 0.25 s: ``rate_of[(start, end)] = (ok/s, 429/s)`` in that span.

    Every ok answer took 20 ms in the server; while nothing is answered 3 calls/s arrive,
    each answered by a reset.
    """
    samples, ok, refused, calls, down = [], 0.0, 0.0, 0.0, 0.0
    t = 0.0
    while t <= end + 1e-9:
        sample = Sample(t, round(calls), round(ok), round(refused), round(down), {20: round(ok)})
        samples.append(sample)
        good, bad = next((r for (a, b), r in rate_of.items() if a <= t < b), (0.0, 0.0))
        ok += good * 0.25
        refused += bad * 0.25
        calls += (good + bad) * 0.25 or 0.75
        down += 0.0 if good + bad else 0.75
        t += 0.25
    return samples


def test_rates_and_percentiles_come_from_counter_differences() -> None:
    """Ok answers per second, the share of 429s and the latency percentile over a span."""
    samples = series({(0, 10): (2000.0, 500.0)}, 10)
    ok, share, calls = rates(samples, 2, 6)
    assert ok == pytest.approx(2000)
    assert share == pytest.approx(0.2)
    assert calls == 10_000
    assert latency_percentile(samples, 2, 6, 99) == 20.0


def test_settling_needs_three_good_windows_in_a_row() -> None:
    """The time to settle ends at the first of three good one-second windows in a row."""
    samples = series({(0, 3): (500.0, 500.0), (3, 20): (1200.0, 0.0)}, 20)

    def good(ok: float, share: float) -> bool:
        return share < 0.05 and abs(ok - 1200) <= 120

    assert settle_time(samples, 0.0, 14.0, good) == pytest.approx(4.0)
    assert settle_time(samples, 0.0, 5.0, good) is None  # the stretch does not fit


def test_figures_of_a_run_that_follows_capacity_and_waits_out_the_outage() -> None:
    """K/L = 2400: steady at 2200 ok/s, 1200 after K halves, back, a quiet outage, back."""
    samples = series(
        {
            (0, 5): (2200.0, 0.0),
            (5, 10): (1150.0, 0.0),
            (10, 15): (2200.0, 0.0),
            (19, 25): (2200.0, 0.0),
        },
        25,
    )
    figures = figures_of(samples, LINE, replicas=3)
    assert figures["goodput_ratio"] == pytest.approx(2200 / 2400, rel=0.01)
    assert figures["share_429"] == 0
    assert figures["p99_ratio"] == pytest.approx(1.0)
    assert figures["halve_s"] is not None
    assert figures["halve_s"] <= 1.5
    assert figures["restore_s"] is not None
    assert figures["outage_calls_per_replica_s"] == pytest.approx(1.0, rel=0.1)
    assert figures["recovery_s"] is not None
    assert figures["recovery_s"] <= 1.5


def test_goodput_above_the_scaled_steady_figure_after_k_halves_is_settled_not_missed() -> None:
    """Settling after K halves needs at least 90% of the target, not within 10% either side.

    The steady phase reached 1,600 ok/s of K/L 2,400 (a busy machine): the target at half
    K is 800. A run that then serves 1,100 ok/s (the machine less busy at half the load)
    has settled; it was counted as never settling (1,100 is more than 10% above 800).
    """
    samples = series({(0, 5): (1600.0, 0.0), (5, 10): (1100.0, 0.0), (10, 15): (1600.0, 0.0)}, 25)
    figures = figures_of(samples, LINE, replicas=3)
    assert figures["halve_s"] is not None
    assert figures["halve_s"] <= 1.5
    slow = series({(0, 5): (1600.0, 0.0), (5, 10): (700.0, 0.0), (10, 15): (1600.0, 0.0)}, 25)
    assert figures_of(slow, LINE, replicas=3)["halve_s"] is None  # under 90% of 800


def test_the_smoke_run_leaves_out_the_tuned_and_the_queue_mode_fixed_runs() -> None:
    """Smoke: adaptive in both modes and the fixed 256 in reject mode; full: all six runs."""
    assert [(o, label) for o, label, _, _ in planned_runs(smoke=True)] == [
        ("reject", "fixed"),
        ("reject", "adaptive"),
        ("queue", "adaptive"),
    ]
    full = planned_runs(smoke=False)
    assert len(full) == 6
    assert ("queue", "tuned", "fixed", 16) in full


def test_a_run_that_never_settles_says_how_far_it_got() -> None:
    """After K returns and after the outage: the level reached beside the ``None``.

    Steady at 2,000 ok/s, back to only 1,500 after K returns and 1,600 after the outage:
    neither settles (under 90% of 2,000), and the figures say 0.75 and 0.8 of steady.
    """
    samples = series(
        {(0, 5): (2000.0, 0.0), (5, 10): (1000.0, 0.0), (10, 15): (1500.0, 0.0),
         (19, 25): (1600.0, 0.0)},
        25,
    )  # fmt: skip
    figures = figures_of(samples, LINE, replicas=3)
    assert figures["restore_s"] is None
    assert figures["recovery_s"] is None
    assert figures["restored_vs_steady"] == pytest.approx(0.75, rel=0.02)
    assert figures["recovered_vs_steady"] == pytest.approx(0.8, rel=0.02)
    assert figures["restored_server_mean_ratio"] == pytest.approx(1.0)  # every 200 took 20 ms
    steady_only = figures_of(samples, Timeline(1, 5, 5, 5, 1, 5), replicas=1)  # an alone run
    assert steady_only["restored_vs_steady"] is None  # no such phase (was 0, and -2.5e8)
    assert steady_only["recovered_vs_steady"] is None


def test_phases_are_the_spans_between_events_that_fit_in_the_timeline() -> None:
    """Full: five phases; cut short before the outage: three; steady only: one."""
    assert phases(LINE) == [
        ("steady", 1, 5),
        ("halved", 5, 10),
        ("restored", 10, 15),
        ("outage", 15, 19),
        ("recovered", 19, 25),
    ]
    short = Timeline(warmup_s=1, halve_at=5, restore_at=10, outage_at=15, outage_s=4, end_at=15)
    assert [name for name, _, _ in phases(short)] == ["steady", "halved", "restored"]
    assert phases(Timeline.steady(smoke=False)) == [("steady", 10.0, 40.0)]


def test_others_cores_is_the_machine_busy_time_outside_the_run() -> None:
    """Busy 1.5 cores over 10 s, of which the run's processes 9 CPU-seconds: others 0.6."""
    used = {"machine_busy_cores": 1.5, "consumer_cpu_s": 6.0, "server_cpu_s": 2.5,
            "harness_cpu_s": 0.5}  # fmt: skip
    assert others_cores(used, 10.0) == pytest.approx(0.6)
    assert others_cores({**used, "machine_busy_cores": 0.8}, 10.0) == 0.0


def test_the_alone_pair_runs_twice_in_reverse_order_and_pools_its_answers() -> None:
    """Full: fixed, adaptive, adaptive, fixed; the ratio is of the pairs' ok answers pooled.

    A machine that slows down across the pair (2,000 then 1,600 ok/s for the fixed 48)
    weighs on both limits alike: adaptive at 1,900 and 1,700 is 1.0x of the fixed 48's
    pooled figure, where the first pair alone says 0.95x and the second 1.06x.
    """
    assert alone_runs(smoke=True) == ["alone_fixed", "alone_adaptive"]
    assert alone_runs(smoke=False) == [
        "alone_fixed", "alone_adaptive", "alone_adaptive_2", "alone_fixed_2"
    ]  # fmt: skip
    ok = {"alone_fixed": 2000.0, "alone_adaptive": 1900.0, "alone_adaptive_2": 1700.0,
          "alone_fixed_2": 1600.0}  # fmt: skip
    figures = alone_figures({name: {"ok_items_per_s": v} for name, v in ok.items()})
    assert figures["alone_adaptive_vs_fixed48"] == pytest.approx(1.0)
    assert figures["alone_adaptive_vs_fixed48_first"] == pytest.approx(0.95)
    assert figures["alone_adaptive_vs_fixed48_second"] == pytest.approx(1700 / 1600)
    one_pair = alone_figures({"alone_fixed": {"ok_items_per_s": 2000.0},
                              "alone_adaptive": {"ok_items_per_s": 1900.0}})  # fmt: skip
    assert one_pair == {"alone_adaptive_vs_fixed48": pytest.approx(0.95)}
