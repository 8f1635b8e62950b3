"""The bench records where the host had our two CPUs before each round (`workbench.bench.placement`)."""
from __future__ import annotations

import pytest

from workbench.bench import placement

cpu = pytest.importorskip("workbench_ext.cpu")


def test_line_round_trip_between_two_cpus():
    pair = placement.cpu_pair()
    if pair is None:
        pytest.skip("needs two CPUs")
    ns = cpu.line_round_trip_ns(pair[0], pair[1], 2000)
    assert 5.0 < ns < 1e6  # a cache line between cores: tens to hundreds of ns, never zero
    reading = placement.round_trip_ns(pair)   # what the bench records: best of TRIES, a number
    assert isinstance(reading, float) and 5.0 < reading < 1e6


@pytest.mark.parametrize("a, b, iters, msg", [(0, 0, 10, "two different CPUs"), (0, 4096, 10, "cannot pin"),
                                              (0, 1, 0, "iters must be")])
def test_line_round_trip_refuses_bad_cpus(a, b, iters, msg):
    with pytest.raises(ValueError, match=msg):
        cpu.line_round_trip_ns(a, b, iters)


def test_no_pair_no_reading(monkeypatch):
    """No second CPU, or CPUs the threads cannot be pinned to: no reading, and no failure."""
    monkeypatch.setattr(placement, "cpu_pair", lambda: None)
    assert placement.round_trip_ns() is None
    assert placement.round_trip_ns((0, 4096)) is None


def _row(batch, trips):
    return {"model": "m", "engine": "e", "threads": 2, "batch": batch, placement.FIELD: trips}


def test_readme_says_when_the_placement_changed():
    """A panel whose slowest round trip is >= FAR_FACTOR x its fastest moved between placements."""
    held = placement.placement_lines([_row(1, "90;95;250")])
    assert "m t=2 b=1 90-250 ns" in held[0] and "held through every panel" in held[0]
    moved = placement.placement_lines([_row(1, "90;95;250"), _row(8, "92;280;400")])
    assert "moved the CPUs during m t=2 b=8" in moved[0] and "b=1," not in moved[0]
    assert placement.placement_lines([{"model": "m", "engine": "e", "threads": 2, "batch": 1}]) == []
    assert placement.format_trips([91.4, None, 402.6]) == "91;;403"
    assert placement.trips_of(_row(1, "91;;403")) == [91.0, 403.0]
    assert placement.far_rounds([120.0, 90.0, 269.0, 270.0]) == [False, False, False, True]
    assert placement.far_rounds([]) == []
