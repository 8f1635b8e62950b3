"""Atomic result files and folders (a reader never sees a half-written metrics.json, CSV, YAML or
saved stage), and the one formatter of stage tables for humans (`format_stage_table`)."""
from __future__ import annotations

import csv
import glob
import io
import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml


def _writers_prefix(path: Path) -> str:
    """`.<name>.<host>-`: how every temporary copy of `path` written on this host starts (then
    the writer's `<pid>.` and a random part), so a later writer can tell a dead writer's
    leftovers from a live one's."""
    return f".{path.name}.{socket.gethostname().split('.')[0] or 'host'}-"


def remove_dead_writers_temps(path: Path) -> list[Path]:
    """Remove the temporary copies of `path` left beside it by writers on this host that were
    killed mid-write (SIGKILL, power loss): their process no longer exists. A live writer's copy,
    another host's (a shared file system) and anything not named like ours are left alone; a
    recycled pid only makes a dead writer's leftover look alive, never the other way round."""
    path = Path(path)
    prefix = _writers_prefix(path)
    removed = []
    try:
        beside = list(path.parent.glob(f"{glob.escape(prefix)}*.tmp*"))
    except OSError:
        return removed
    for leftover in beside:
        pid_part = leftover.name[len(prefix):].split(".", 1)[0]
        if not pid_part.isdigit() or _process_alive(int(pid_part)):
            continue
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A private temporary path beside `path` to write (by any writer: `torch.save`, a file
    opened by name); when the block ends without an error it is fsynced and becomes `path` in one
    rename, otherwise it is removed. Leftovers of killed writers of `path` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_writers_prefix(path)}{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """A private empty folder beside `target` to fill; when the block ends without an error it
    becomes `target` in one rename (an older `target` is replaced), otherwise it is removed.

    The folder's name is unique, so processes that fill the same cache entry at once (two sweep
    workers, a notebook beside a test) never write into or delete each other's half. If another
    writer's copy lands while ours is being moved in, that complete copy is kept and ours dropped.
    Leftovers of killed writers of `target` are removed first (`remove_dead_writers_temps`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_temps(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{_writers_prefix(target)}{os.getpid()}.", suffix=".tmp"))
    try:
        yield tmp
        aside = target.with_name(f"{tmp.name}.old")  # unique too: derived from ours
        try:
            os.rename(target, aside)
        except FileNotFoundError:  # nothing to replace (or another writer moved it first)
            pass
        try:
            os.rename(tmp, target)
        except OSError:  # another writer's complete copy landed in between: keep it
            if not target.is_dir():
                raise
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None, *,
              float_format: str | None = "{:.6g}") -> None:
    """Every CSV of the package: header + one line per row, written atomically.

    `columns` fixes the column order (default: keys in order of first appearance); keys not in
    `columns` are dropped, missing ones are left empty. Floats are written with `float_format`
    (None: as Python prints them).
    """
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (float_format.format(v) if float_format and isinstance(v, float) else v)
                    for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


# ------------------------------------------------------------------------------ tables for humans
STAGE_COLUMNS = ("stage", "engine", "accuracy", "macro_f1", "params", "nonzero_params", "disk_mb",
                 "throughput_b1", "throughput_b8")
"""The columns of `workbench run` / `workbench show`."""

REPORT_STAGE_COLUMNS = ("stage", "engine", "accuracy", "params", "nonzero_params", "sparsity", "disk_mb",
                        "latency_ms_b1", "throughput_b1")
"""The columns of the stage tables in `workbench report` (a run, a sweep's best trial)."""

STAGE_FORMATS = {
    "accuracy": "{:.4f}", "macro_f1": "{:.4f}", "params": "{:,}", "nonzero_params": "{:,}",
    "sparsity": "{:.1%}", "disk_mb": "{:.1f}", "latency_ms_b1": "{:.1f}", "latency_ms_b8": "{:.1f}",
    "throughput_b1": "{:.1f}", "throughput_b8": "{:.1f}", "train_seconds": "{:.0f}",
}
"""How a StageMetrics value is shown when the caller names only the column."""

ColumnSpec = str | tuple[str, str | None] | tuple[str, str | None, str]
"""A table column: a key, (key, str.format pattern or None), or (key, pattern, header)."""


def format_cell(value: Any, spec: str | None = None) -> str:
    """One table cell: None -> "-"; a string as it is (already formatted, e.g. "0.82 ± 0.01");
    a (mean, std) pair -> "mean ± std", both with `spec`; otherwise `spec` (a str.format
    pattern), or floats to 4 decimals and ints with thousands separators."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"{format_cell(value[0], spec)} ± {format_cell(value[1], spec)}"
    if spec:
        try:
            return spec.format(value)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _column(col: ColumnSpec) -> tuple[str, str | None, str]:
    if isinstance(col, str):
        return col, STAGE_FORMATS.get(col), col
    key, spec, *header = col
    return key, spec, (header[0] if header else key)


def format_stage_table(rows: list[dict[str, Any]], columns: Sequence[ColumnSpec] | None = None,
                       fmt: str = "text") -> str:
    """A table of `rows` (a run's stages, or any dicts) for humans, as one string (no final newline).

    columns: the keys to show, in order (default `STAGE_COLUMNS`); each is a key (shown with
    its `STAGE_FORMATS` pattern), `(key, pattern)` or `(key, pattern, header)`. Missing and None
    values show as "-"; string values are shown as they are (a spread column: "0.8250 ± 0.0040").
    fmt: "text" (aligned columns for a terminal) or "markdown" (a GitHub table).
    A row flagged `degenerate` (metrics.json: one class predicted for everything, or macro-F1
    within noise of chance) shows DEGENERATE_MARK after its accuracy (or its first cell);
    `degenerate_notes(rows)` gives the reasons.
    """
    cols = [_column(c) for c in (STAGE_COLUMNS if columns is None else columns)]
    headers = [h for _, _, h in cols]
    cells = [[format_cell(r.get(k), spec) for k, spec, _ in cols] for r in rows]
    keys = [k for k, _, _ in cols]
    flag_at = keys.index("accuracy") if "accuracy" in keys else 0
    for r, c in zip(rows, cells):
        if r.get("degenerate") and c:
            c[flag_at] += DEGENERATE_MARK
    if fmt == "markdown":
        def line(values: list[str]) -> str:
            return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

        return "\n".join([line(headers), "|" + "---|" * len(cols), *(line(c) for c in cells)])
    if fmt != "text":
        raise ValueError(f"format_stage_table: fmt must be 'text' or 'markdown', not {fmt!r}")
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()
                     for values in [headers, *cells])


DEGENERATE_MARK = " !"
"""Appended to a degenerate stage's accuracy in stage tables."""


def degenerate_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per degenerate row: "! stage 'x': <reason>" (for under a stage table)."""
    return [f"{DEGENERATE_MARK.strip()} stage '{r.get('stage')}': {r['degenerate']}"
            for r in rows if r.get("degenerate")]


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV written by `write_csv` (values as strings)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
