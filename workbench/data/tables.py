"""Reading and checking labelled text tables: the rows of a .csv/.tsv/.jsonl/.json/.parquet task
file, their text and label columns (clear errors naming the file, column and rows) and class
labels mapped to 0..K-1. Used by the local-file and Hugging Face loaders in `tasks`."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.config import ConfigError
from workbench.data.pairs import PAIR_MARK, join_pair

if TYPE_CHECKING:
    from workbench.data.tasks import TaskConfig

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_SHOW = 5  # rows named in an error message
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
"""File types `read_table` reads (a .json file holds one object per line, or one array of them)."""


def _lines(rows: list[tuple[int, Any]], unit: str = "line") -> str:
    """'lines 3, 7, 9 and 4 more' for an error message."""
    shown = ", ".join(str(n) for n, _ in rows[:_SHOW])
    more = f" and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
    return f"{unit}{'s' if len(rows) > 1 else ''} {shown}{more}"


def _rows(rows: list) -> str:
    return f"{len(rows)} row{'s' if len(rows) != 1 else ''}"


def _labels_to_ints(values: list, source: str = "task", column: str = "label") -> tuple[list[int], list[str]]:
    """Class labels -> 0..K-1 and the K label names.

    Numeric labels (ints, or strings such as '-1', '1', '5') are mapped to 0..K-1 in sorted
    numeric order (-1/1 -> 0/1, 1..5 -> 0..4) and the label names record the original values;
    numbers that are not integers fail, naming them. Other labels are mapped in sorted string
    order. Fewer than two classes fail.
    """
    def number(v: Any) -> float | None:
        if isinstance(v, bool):
            return None
        if isinstance(v, (int, float, np.integer, np.floating)):
            return float(v)
        if isinstance(v, str) and _NUMBER.match(v.strip()):
            return float(v.strip())
        return None

    nums = [number(v) for v in values]
    if values and all(x is not None for x in nums):
        bad = sorted({x for x in nums if not float(x).is_integer()})
        if bad:
            shown = ", ".join(f"{x:g}" for x in bad[:_SHOW]) + (", ..." if len(bad) > _SHOW else "")
            raise ConfigError(
                f"task '{source}': label column '{column}' holds numbers that are not integers ({shown}): "
                "a classification task needs class labels; round or bin them into classes, or use class names")
        distinct = sorted({int(x) for x in nums})
        lookup = {v: i for i, v in enumerate(distinct)}
        labels, names = [lookup[int(x)] for x in nums], [str(v) for v in distinct]
    else:
        keys = [v.strip() if isinstance(v, str) else str(v) for v in values]
        names = sorted(set(keys))
        by_folded: dict[str, list[str]] = {}
        for n in names:
            by_folded.setdefault(n.casefold(), []).append(n)
        clash = next((group for group in by_folded.values() if len(group) > 1), None)
        if clash:  # 'Pos' beside 'pos' is a typo, not a third class (it got a class of its own)
            counts = ", ".join(f"{n!r} on {keys.count(n)} row{'s' if keys.count(n) != 1 else ''}" for n in clash)
            raise ConfigError(f"task '{source}': label column '{column}' has labels that differ only in case ({counts}): "
                              "they would be separate classes; write each class one way")
        lookup = {n: i for i, n in enumerate(names)}
        labels = [lookup[k] for k in keys]
    if len(names) < 2:
        raise ConfigError(f"task '{source}': label column '{column}' has {len(names)} distinct value"
                          f"{'' if len(names) == 1 else 's'} ({', '.join(names) or 'none'}): "
                          "a classifier needs examples of at least two classes")
    return labels, names


def row_unit(path: Path) -> str:
    """What `read_table`'s row numbers count in `path`: lines of the file, or rows (records)."""
    return "row" if path.suffix.lower() == ".parquet" or _json_array(path) else "line"


def _json_array(path: Path) -> bool:
    if path.suffix.lower() != ".json":
        return False
    with path.open(encoding="utf-8-sig") as f:
        head = f.read(4096).lstrip()
    return head.startswith("[")


def read_table(path: Path) -> list[tuple[int, dict]]:
    """The rows of a table file (`TABLE_SUFFIXES`), each with its line number in the file, or
    its row number (1-based) where the file has no lines to count (`row_unit`)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8" writes one) is not part of the
            # first column's name
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                rows = []
                for row in reader:
                    rows.append((reader.line_num, row))
                _check_fields(path, reader.fieldnames or [], rows)
                return rows
        if suffix == ".parquet":
            return _read_parquet(path)
        if _json_array(path):
            return _read_json_array(path)
        if suffix in (".jsonl", ".json"):
            rows = []
            with path.open(encoding="utf-8-sig") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"task file '{path}': line {n} is not valid JSON ({exc.msg}); "
                                          "a .jsonl file holds one JSON object per line (a .json file: that, "
                                          "or one array of objects)") from None
                    if not isinstance(row, dict):
                        raise ConfigError(f"task file '{path}': line {n} is not a JSON object; "
                                          "a .jsonl file holds one object per line, e.g. {\"text\": ..., \"label\": ...}")
                    rows.append((n, row))
            return rows
    except UnicodeDecodeError as exc:
        raise ConfigError(f"task file '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "save it as UTF-8") from None
    raise ConfigError(f"task '{path}': unsupported file type '{suffix}' (use {', '.join(TABLE_SUFFIXES)})")


def _read_json_array(path: Path) -> list[tuple[int, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"task file '{path}' is not valid JSON ({exc.msg} at line {exc.lineno}); a .json file "
                          "holds one array of objects, or one object per line") from None
    odd = [(i, v) for i, v in enumerate(data, 1) if not isinstance(v, dict)]
    if odd:
        raise ConfigError(f"task file '{path}': {_lines(odd, 'item')} of the array "
                          f"{'is not a JSON object' if len(odd) == 1 else 'are not JSON objects'} "
                          f"(e.g. {odd[0][1]!r}); each example is an object, e.g. "
                          "{\"text\": ..., \"label\": ...}")
    return list(enumerate(data, 1))


def _read_parquet(path: Path) -> list[tuple[int, dict]]:
    import pyarrow.parquet as pq  # (a dependency of datasets)

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow's errors for a file that is not Parquet are of several types
        raise ConfigError(f"task file '{path}' could not be read as Parquet ({type(exc).__name__}: {exc})") from None
    return list(enumerate(table.to_pylist(), 1))


def _check_fields(path: Path, header: list[str], rows: list[tuple[int, dict]]) -> None:
    """A header naming a column twice (which one holds the texts?) and rows with more fields
    than the header (an unquoted separator inside a text: "the film, was good,pos" would read
    ' was good' as the label) are errors naming the column or the lines."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, 1):
        if name in seen:
            raise ConfigError(f"task file '{path}': column '{name}' appears twice in the header (columns "
                              f"{seen[name]} and {i}); rename one")
        seen[name] = i
    long = [(n, r) for n, r in rows if None in r]  # csv.DictReader keeps the extra fields under None
    if long:
        sep = "tab" if path.suffix.lower() == ".tsv" else "comma"
        n, r = long[0]
        raise ConfigError(f"task file '{path}': {_rows(long)} {'has' if len(long) == 1 else 'have'} more fields than "
                          f"the header's {len(header)} ({'' if len(long) == 1 else _lines(long) + '; '}line {n} has "
                          f"{len(header) + len(r[None])}): "
                          f"a text that holds a {sep} must be in double quotes, e.g. \"the film, was good\"")


def _separator_hint(columns: list[str], path: Path | str) -> str:
    """When a table read as one column holds another separator in that column's name, the file
    is split by that character, not the one its extension says: a hint saying so ('' if not)."""
    if len(columns) != 1 or not isinstance(path, Path):
        return ""
    expected = "\t" if path.suffix.lower() == ".tsv" else ","
    for sep in ("\t", ";", ",", "|"):
        if sep != expected and sep in columns[0]:
            fix = "name it .tsv" if sep == "\t" else "save it with commas (.csv) or tabs (.tsv)"
            return f"; its columns seem to be separated by {sep!r}, not {expected!r} as its extension says: {fix}"
    return ""


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and v != v)


def _columns(rows: list[tuple[int, dict]], cfg: "TaskConfig", path: Path | str,
             unit: str = "line") -> tuple[list[str], list]:
    """The text and label columns of one file's rows, checked: a clear error (naming the file,
    the column and the first rows) for an empty file, a missing column, blank or non-string
    texts and blank labels; a pair task's texts come back joined (`workbench.data.pairs`). `rows`
    are (line number, row); `path` is the file, or a description
    such as "task 'hf:x' split 'train'" with `unit` "row"."""
    tc, lc, pc = cfg.text_column, cfg.label_column, cfg.text_pair_column
    where = f"task file '{path}'" if isinstance(path, Path) else str(path)
    if not rows:
        raise ConfigError(f"{where} is empty: it has no examples (at most a header line); "
                          f"add rows with a '{tc}' and a '{lc}' column")
    for col, key in ((tc, "text_column"), (lc, "label_column"), *([(pc, "text_pair_column")] if pc else [])):
        missing = [(n, r) for n, r in rows if col not in r]
        if len(missing) == len(rows):
            found = sorted({str(k) for _, r in rows for k in r if k is not None})
            hint = _separator_hint(found, path)
            raise ConfigError(f"{where}: {key} '{col}' not found; columns are {found} "
                              f"(set task: {{{key}: <name>}} in the recipe, or --{key.replace('_', '-')} for "
                              f"`workbench eval`){hint}")
        if missing:
            raise ConfigError(f"{where}: column '{col}' is missing on {_rows(missing)} "
                              f"({_lines(missing, unit)}); give every row a '{col}'")
    for col in (tc, pc) if pc else (tc,):
        bad_text = [(n, r[col]) for n, r in rows if not isinstance(r[col], str) or not r[col].strip()]
        if bad_text:
            what = ", ".join(f"{unit} {n}: {v!r}" for n, v in bad_text[:_SHOW])
            raise ConfigError(f"{where}: text column '{col}' is blank or not a string on {_rows(bad_text)} "
                              f"({what}{', ...' if len(bad_text) > _SHOW else ''}); every example needs "
                              "its text: fill in or drop those rows")
        marked = [(n, r[col]) for n, r in rows if PAIR_MARK in r[col]]
        if marked:
            raise ConfigError(f"{where}: text column '{col}' holds the character U+E000 on {_rows(marked)} "
                              f"({_lines(marked, unit)}), which marks where a text pair splits; remove it")
    blank = [(n, r[lc]) for n, r in rows if _blank(r[lc])]
    if blank:
        raise ConfigError(f"{where}: label column '{lc}' is blank on {_rows(blank)} "
                          f"({_lines(blank, unit)}); a blank is not a class: fill in those labels or drop the rows")
    odd = [(n, r[lc]) for n, r in rows if isinstance(r[lc], (list, dict))]
    if odd:
        raise ConfigError(f"{where}: label column '{lc}' holds lists or objects on {_rows(odd)} "
                          f"({_lines(odd, unit)}, e.g. {odd[0][1]!r}); one class label per example is needed")
    texts = [join_pair(r[tc], r[pc]) if pc else r[tc] for _, r in rows]
    return texts, [r[lc] for _, r in rows]
