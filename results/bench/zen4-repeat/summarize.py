"""The runtime issue's item 7, measured as the issue measured it: four back-to-back runs of the
same bench (run.sh writes run1/ .. run4/), and how much each engine's median moved between them.

Prints a markdown report (README.md's tables come from it):
- per bench run, ORT int8's samples/s and every workbench engine's same-run ratio to it;
- per engine, the range of its median over the runs, as min-max and as (max - min) / median of
  the runs' medians in percent (ORT's own range is the yardstick: our engine's run-to-run spread
  should be no wider than ORT's), and the range of its same-run ratio;
- the within-run spread of each run (the bench's spread_pct and spread_ms columns), median over
  the runs;
- per engine, p of the range (`workbench.bench.spread.level_shift_p`): the share of shuffles of
  all its rounds among the runs whose medians ranged at least as wide. A small p says the runs
  differed as wholes; a large one that the range is what the rounds' own noise gives;
- ORT int8's run-to-run range per configuration (`workbench.bench.variants`): its row is the best
  of four configurations in each run, which narrows the row's range, so one configuration's range
  is the like-for-like yardstick for one of our engines;
- where the runs recorded it (`round_trip_ns_runs`, benches from 2026-12-06 on), the host's
  placement of the two vCPUs in every round: a round is "far" when its cache-line round trip is
  at least `placement.FAR_FACTOR` x the fastest of all runs; per engine the run-to-run range again,
  from each run's median over its near rounds only.
Usage: python results/bench/zen4-repeat/summarize.py [folder with run*/engines.csv]
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from workbench.bench.placement import FAR_FACTOR, trips_of  # noqa: E402
from workbench.bench.spread import level_shift_p, run_times  # noqa: E402
from workbench.bench.stalls import STALL_FACTOR, round_factors, stalled_rounds  # noqa: E402
from workbench.bench.variants import variant_medians  # noqa: E402
from workbench.results import format_stage_table, read_csv  # noqa: E402

PEER = "ort-int8"


def _range_pct(values: list[float]) -> float:
    return 100.0 * (max(values) - min(values)) / statistics.median(values)


def main(folder: Path) -> None:
    runs = sorted(folder.glob("run*/engines.csv"))
    if not runs:
        raise SystemExit(f"no run*/engines.csv under {folder}: run run.sh first")
    rows = {(k, r["engine"], int(r["batch"])): r
            for k, path in enumerate(runs, 1) for r in read_csv(path)
            if r["status"] == "ok" and r["threads"] == "2"}
    engines = list(dict.fromkeys(e for _, e, _ in rows))
    batches = sorted({b for _, _, b in rows})
    print(f"{len(runs)} bench runs ({', '.join(p.parent.name for p in runs)}), threads 2, "
          f"batches {', '.join(map(str, batches))}.\n")
    for b in batches:
        print(f"### batch {b}: samples/s, and each workbench engine's ratio to {PEER} in the same run\n")
        table = []
        for k in range(1, len(runs) + 1):
            peer = rows.get((k, PEER, b))
            cells = {"run": str(k), PEER: f"{float(peer['samples_per_s']):.1f}" if peer else ""}
            for e in engines:
                r = rows.get((k, e, b))
                if e != PEER and r:
                    cells[e] = f"{float(r['samples_per_s']):.1f} ({float(r['vs_ort_int8']):.2f}x)"
            table.append(cells)
        print(format_stage_table(table, ["run", *engines], fmt="markdown"), "\n")
        print(f"### batch {b}: how far each engine's median moved between the runs\n")
        table = []
        for e in engines:
            mine = [rows[(k, e, b)] for k in range(1, len(runs) + 1) if (k, e, b) in rows]
            speed, ratio, within = ([float(r[f]) for r in mine] for f in ("samples_per_s", "vs_ort_int8", "spread_pct"))
            within_ms = [float(r["spread_ms"]) for r in mine if r.get("spread_ms", "") != ""]
            rounds = [run_times(r) for r in mine]
            p = f"{level_shift_p(rounds)[1]:.3f}" if sum(1 for t in rounds if t) > 1 else "n/a"
            table.append({
                "engine": e,
                "samples/s min-max": f"{min(speed):.1f}-{max(speed):.1f}",
                "run-to-run range": f"{_range_pct(speed):.0f}%",
                "p (rounds shuffled)": p,
                f"ratio to {PEER} min-max": "" if e == PEER else f"{min(ratio):.2f}-{max(ratio):.2f}x",
                "within-run spread, median of runs": f"{statistics.median(within):.0f}%"
                + (f" / {statistics.median(within_ms):.1f} ms" if within_ms else ""),
            })
        print(format_stage_table(table, list(table[0]), fmt="markdown"), "\n")
        _peer_configurations(rows, b, len(runs))
        _placement(rows, engines, b, len(runs))
        _stalls(rows, engines, b, len(runs))


def _peer_configurations(rows: dict, b: int, n_runs: int) -> None:
    """Batch `b`: each of the peer's configurations' median per run and its run-to-run range."""
    per: dict[str, list[float]] = {}
    for k in range(1, n_runs + 1):
        for v, ms in variant_medians(rows[(k, PEER, b)]["notes"] if (k, PEER, b) in rows else "").items():
            per.setdefault(v, []).append(ms)
    if not per:
        return
    print(f"### batch {b}: {PEER} per configuration (its row takes the best of them in each run)\n")
    print("| configuration | median ms per run | run-to-run range |\n|---|---|---|")
    for v, ms in per.items():
        print(f"| {v} | {' '.join(f'{m:.2f}' for m in ms)} | {_range_pct(ms):.0f}% |")
    print()


def _placement(rows: dict, engines: list[str], b: int, n_runs: int) -> None:
    """The per-round placement table of batch `b` (nothing when the runs did not record it)."""
    trips = {k: trips_of(rows[(k, PEER, b)]) for k in range(1, n_runs + 1) if (k, PEER, b) in rows}
    if not any(trips.values()):
        return
    fastest = min(t for ts in trips.values() for t in ts)
    far = {k: [t >= FAR_FACTOR * fastest for t in ts] for k, ts in trips.items()}
    print(f"### batch {b}: the vCPUs' placement per round (far: round trip >= {FAR_FACTOR:g}x the fastest, "
          f"{fastest:.0f} ns)\n")
    print("| run | round trips (ns), in round order | far rounds |\n|---|---|---|")
    for k, ts in trips.items():
        print(f"| {k} | {' '.join(f'{t:.0f}' for t in ts)} | {sum(far[k])}/{len(ts)} |")
    print(f"\n### batch {b}: each engine's run-to-run range, all rounds against near rounds only\n")
    far_rounds = {k: {i for i, f in enumerate(far[k], 1) if f} for k in trips}
    _ranges_without(rows, engines, b, list(trips), far_rounds, "near rounds only")

def _stalls(rows: dict, engines: list[str], b: int, n_runs: int) -> None:
    """Batch `b`'s rounds in which every engine ran slow (`workbench.bench.stalls`) per run, and
    each engine's run-to-run range again without them."""
    runs = [k for k in range(1, n_runs + 1) if any((k, e, b) in rows for e in engines)]
    stalled = {k: stalled_rounds(round_factors([rows[(k, e, b)] for e in engines if (k, e, b) in rows]))
               for k in runs}
    print(f"### batch {b}: rounds in which the machine stalled (the median engine >= {STALL_FACTOR:g}x its "
          "own median), and each engine's run-to-run range without them\n")
    print("runs' stalled rounds: " + "; ".join(f"run {k}: {', '.join(map(str, v)) or 'none'}"
                                             for k, v in stalled.items()) + "\n")
    _ranges_without(rows, engines, b, runs, stalled, "without stalled rounds")


def _ranges_without(rows: dict, engines: list[str], b: int, runs: list[int], dropped: dict[int, list | set],
                    label: str) -> None:
    """Each engine's range of run medians at batch `b` over `runs`, with all rounds and without
    run k's rounds `dropped[k]` (1-based), as a markdown table whose second column is `label`."""
    table = []
    for e in engines:
        all_med, kept_med = [], []
        for k in runs:
            r = rows.get((k, e, b))
            if not r:
                continue
            times = run_times(r)
            all_med.append(statistics.median(times))
            kept = [t for i, t in enumerate(times, 1) if i not in dropped[k]]
            if kept:
                kept_med.append(statistics.median(kept))
        table.append({"engine": e, "range of run medians, all rounds": f"{_range_pct(all_med):.0f}%",
                      label: f"{_range_pct(kept_med):.0f}% ({len(kept_med)} runs)" if len(kept_med) > 1 else "n/a"})
    print(format_stage_table(table, list(table[0]), fmt="markdown"), "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
