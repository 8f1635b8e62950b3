"""Run-to-run spread of `workbench bench` results: how much each engine's timed runs vary.

Every result row keeps its timed runs (`latency_ms_runs`, in the order they ran). From them:

* `spread_pct`: (slowest - fastest run) / median run, in percent -- the min-max the table's bars
  show, as one number that compares across engines of different speed;
* `spread_ms`: the same range as a time, slowest - fastest run in ms. A stall of the machine
  (a thread kept off its core for a few ms) adds about the same time to any engine's run, so it
  is a larger percentage of a faster engine's run; the two numbers side by side tell a wider
  percentage that comes from being faster from one that comes from longer stalls;
* `vs_ort_int8_round_min` / `_max`: with interleaved timing the engines take turns, so run r of
  every engine ran in round r; the ratio of two engines' runs in the same round cancels a
  slowdown of the shared machine that hit the whole round, and its range over the rounds says
  how steady the *ratio* is, which is what a reader of the table relies on;
* `worker_share_runs` (workbench engines): each timed run's share of the kernel pool's chunks
  that its worker threads ran, in the same order -- a slow run with a share near 0 had workers
  that did not come (another process or the host kept them off their cores), one near the usual
  1 - 1/threads had every thread slow.

The README's "Run-to-run spread" section puts each workbench engine's spread beside the
baseline's (issue: our engine's spread no wider than ONNX Runtime's).
"""
from __future__ import annotations

import statistics
from typing import Any, Callable

from workbench.results import format_stage_table

RUNS_FIELD = "latency_ms_runs"
SPREAD_FIELDS = ["spread_pct", "spread_ms", "vs_ort_int8_round_min", "vs_ort_int8_round_max", RUNS_FIELD]


def format_runs(times_s: list[float]) -> str:
    """The timed runs (seconds) as the CSV cell: milliseconds joined by ';', in run order."""
    return ";".join(f"{t * 1e3:.3f}" for t in times_s)


SHARES_FIELD = "worker_share_runs"
"""Workbench engines: each timed run's share of the kernel pool's chunks its worker threads ran
(`BenchEngine.worker_share`), in the order of `latency_ms_runs`: a slow run near 0 had workers
that did not come, one near 1 - 1/threads had every thread slow."""


def format_shares(shares: list[float]) -> str:
    """Worker shares as the CSV cell, joined by ';' in run order."""
    return ";".join(f"{x:.2f}" for x in shares)


def per_run(row: dict[str, Any], field: str) -> list[float]:
    """A row's per-run cell (values joined by ';' in run order, e.g. `RUNS_FIELD`) as numbers,
    blanks skipped; empty when the row has none."""
    cell = row.get(field)
    if not cell or not isinstance(cell, str):
        return []
    return [float(v) for v in cell.split(";") if v.strip()]


def run_times(row: dict[str, Any]) -> list[float]:
    """A row's timed runs in ms (empty when it has none recorded)."""
    return per_run(row, RUNS_FIELD)


def spread_pct(times_ms: list[float]) -> float | None:
    """(max - min) / median of the runs, in percent; None with fewer than 2 runs."""
    if len(times_ms) < 2:
        return None
    return 100.0 * (max(times_ms) - min(times_ms)) / statistics.median(times_ms)


def round_ratios(times_ms: list[float], baseline_ms: list[float]) -> list[float]:
    """Per round: this engine's speed over the baseline's (baseline time / this time), over the
    rounds both ran (a slow engine may run fewer)."""
    return [b / t for t, b in zip(times_ms, baseline_ms) if t > 0]


def add_spread(rows: list[dict[str, Any]], baseline: str, interleaved: bool) -> None:
    """Fill SPREAD_FIELDS (except the runs themselves) in place; per-round ratios only when the
    runs were interleaved (sequential runs of two engines did not share rounds)."""
    base = {(r["model"], r["threads"], r["batch"], r["seq_len"]): run_times(r)
            for r in rows if r["engine"] == baseline and r.get("status") == "ok"}
    for r in rows:
        times = run_times(r) if r.get("status") == "ok" else []
        s = spread_pct(times)
        r["spread_pct"] = round(s, 1) if s is not None else ""
        r["spread_ms"] = round(max(times) - min(times), 3) if s is not None else ""
        ratios = round_ratios(times, base.get((r["model"], r["threads"], r["batch"], r["seq_len"]), [])) \
            if interleaved else []
        r["vs_ort_int8_round_min"] = round(min(ratios), 3) if ratios else ""
        r["vs_ort_int8_round_max"] = round(max(ratios), 3) if ratios else ""


def _ms(row: dict[str, Any]) -> str:
    """A row's spread_ms as the README writes it."""
    return f"{float(row['spread_ms']):.1f} ms"


def panel_tables(ok: list[dict[str, Any]], engines_order: list[str], baseline: str,
                 cell: Callable[[str, dict[str, Any], dict[str, Any] | None], str]) -> list[str]:
    """README lines: per model a table with a row per engine (workbench engines in bold) and a
    column per (threads, batch) panel; `cell(engine, row, baseline's row or None)` writes a cell."""
    panels = sorted({(r["threads"], r["batch"]) for r in ok})
    columns = ["engine", *(f"t={t} b={b}" for t, b in panels)]
    out: list[str] = []
    for model in dict.fromkeys(r["model"] for r in ok):
        sel = {(r["engine"], r["threads"], r["batch"]): r for r in ok if r["model"] == model}
        table = []
        for e in engines_order:
            cells = {"engine": f"**{e}**" if e.startswith("wb-") else e}
            for t, b in panels:
                r = sel.get((e, t, b))
                cells[f"t={t} b={b}"] = "" if r is None else cell(e, r, sel.get((baseline, t, b)))
            if any(v for k, v in cells.items() if k != "engine"):
                table.append(cells)
        out += [f"### {model}", "", format_stage_table(table, columns, fmt="markdown"), ""]
    return out


def spread_section(rows: list[dict[str, Any]], engines_order: list[str], baseline: str,
                   interleaved: bool) -> list[str]:
    """README lines: per model a table of each engine's spread (and per-round ratio range), then
    which workbench engines varied more than the baseline did in the same panel."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("spread_pct") not in ("", None)]
    if not ok:
        return []
    out = ["## Run-to-run spread", "",
           "Spread = (slowest - fastest timed run) / median run, per engine and panel, then the "
           "same range in ms (a stall of the machine adds about the same ms to every engine's "
           "run, so it is a larger percentage of a faster engine's)"
           + ("; in parentheses the min-max over the rounds of the engine's speed over "
              f"{baseline}'s *in the same round* (interleaved timing: a slowdown of the machine "
              "that hits a whole round cancels out of it)." if interleaved else
              " (sequential timing: no per-round ratios)."), ""]
    wider: list[str] = []
    wider_ms: list[str] = []

    def cell(e: str, r: dict[str, Any], base: dict[str, Any] | None) -> str:
        lo, hi = r.get("vs_ort_int8_round_min"), r.get("vs_ort_int8_round_max")
        rng = f" ({float(lo):.2f}-{float(hi):.2f}x)" if lo != "" and e != baseline else ""
        if e.startswith("wb-") and base is not None and float(r["spread_pct"]) > float(base["spread_pct"]):
            where = f"{r['model']} {e} t={r['threads']} b={r['batch']}"
            wider.append(f"{where} ({float(r['spread_pct']):.0f}% vs {float(base['spread_pct']):.0f}%; "
                         f"{_ms(r)} vs {_ms(base)})")
            if float(r["spread_ms"]) > float(base["spread_ms"]):
                wider_ms.append(where)
        return f"{float(r['spread_pct']):.0f}% / {_ms(r)}{rng}"

    out += panel_tables(ok, engines_order, baseline, cell)
    out += [f"Workbench engines whose spread was wider than {baseline}'s in the same panel: "
            + ("; ".join(wider) if wider else "none") + "."
            + (" Of these, wider in ms as well: " + ("; ".join(wider_ms) if wider_ms else "none") + "."
               if wider else ""), ""]
    return out


def level_shift_p(runs_ms: list[list[float]], shuffles: int = 5000, seed: int = 0) -> tuple[float, float]:
    """Whether an engine's run medians moved more between bench runs than its rounds' own noise
    explains. `runs_ms`: each run's timed rounds of one engine and panel. Returns (the range of
    the run medians in percent as `spread_pct` writes it, p): p is the share of `shuffles`
    reassignments of all rounds to runs of the same sizes whose medians range at least as wide.
    A small p (< 0.05) says the runs differed as wholes (a slower process, other kernels, the
    host in another state for the whole run); a large one that the range is what any `len(runs)`
    medians of these rounds would show."""
    import numpy as np

    runs = [list(r) for r in runs_ms if r]
    if len(runs) < 2:
        raise ValueError(f"level_shift_p needs at least 2 runs with rounds, got {len(runs)}")
    observed = spread_pct([statistics.median(r) for r in runs]) or 0.0
    flat = np.concatenate([np.asarray(r, float) for r in runs])
    cuts = np.cumsum([len(r) for r in runs])[:-1]
    rng = np.random.default_rng(seed)
    wide = 0
    for _ in range(shuffles):
        meds = [float(np.median(part)) for part in np.split(rng.permutation(flat), cuts)]
        wide += (spread_pct(meds) or 0.0) >= observed - 1e-9
    return observed, wide / shuffles
