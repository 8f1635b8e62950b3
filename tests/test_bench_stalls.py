"""The bench names the rounds in which the machine, not an engine, was slow (workbench.bench.stalls)."""
from workbench.bench.spread import RUNS_FIELD
from workbench.bench.stalls import round_factors, stall_lines, stalled_rounds


def _row(engine, times, model="m", threads=2, batch=1):
    return {"model": model, "threads": threads, "batch": batch, "engine": engine, "status": "ok",
            RUNS_FIELD: ";".join(f"{t:.3f}" for t in times)}


def _panel(stall_rounds=(), slow_engine_round=None, engines=("ort-int8", "wb-int8", "wb-int8-sp80", "wb-int8-sp90")):
    rows = []
    for i, e in enumerate(engines):
        base = 10.0 / (i + 1)
        times = [base * (1.7 if k + 1 in stall_rounds else 1.0) * (1 + 0.01 * (k % 3)) for k in range(7)]
        if slow_engine_round and e == "wb-int8-sp80":   # one engine alone slow in one round
            times[slow_engine_round - 1] *= 2.0
        rows.append(_row(e, times))
    return rows


def test_rounds_slow_for_every_engine_are_the_machines_and_one_engines_slow_round_is_not():
    rows = _panel(stall_rounds=(3, 4, 5), slow_engine_round=2)
    factors = round_factors(rows)
    assert len(factors) == 7 and stalled_rounds(factors) == [3, 4, 5]
    assert 1.6 < max(factors) < 1.8 and factors[1] < 1.1   # round 2: one engine of four
    line = stall_lines(rows)[0]
    assert "m t=2 b=1 rounds 3, 4, 5 (up to 1.7" in line and "round 2" not in line, line


def test_a_quiet_panel_says_none_and_too_few_engines_are_not_judged():
    assert stall_lines(_panel())[0].endswith("none.")
    assert round_factors(_panel(stall_rounds=(1,), engines=("ort-int8", "wb-int8"))) == []
    assert stall_lines(_panel(stall_rounds=(1,), engines=("ort-int8", "wb-int8"))) == []


def test_panels_are_judged_apart():
    rows = _panel(stall_rounds=(6,)) + [dict(r, batch=8) for r in _panel()]
    line = stall_lines(rows)[0]
    assert "m t=2 b=1 round 6 (up to" in line and "b=8" not in line, line
