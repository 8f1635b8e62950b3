"""The sweep's search space: one `Param` (distribution) per recipe path, parsed and checked.

`parse_param` reads `{choices: [...]}` or `{low, high, log, step, type}` for one path;
`Param.suggest` asks an Optuna trial for a value and `Param.decode` turns a value as Optuna
stored it back into the recipe value. Used by the sweep file (`workbench.sweep.spec`).
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from workbench.config import ConfigError, fail
from workbench.sweep.recipe_paths import _is_enabled_path


# ------------------------------------------------------------------------------ distributions
@dataclass
class Param:
    path: str
    kind: str                      # "categorical" | "float" | "int"
    choices: list[Any] = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None

    @property
    def encoded(self) -> bool:
        """Optuna's categorical values must be None/bool/int/float/str: other choices go as JSON."""
        return self.kind == "categorical" and any(
            not (c is None or isinstance(c, (bool, int, float, str))) for c in self.choices)

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":
            if self.encoded:
                return json.loads(trial.suggest_categorical(self.path, [json.dumps(c) for c in self.choices]))
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.path, self.low, self.high, step=self.step, log=self.log)

    def decode(self, value: Any) -> Any:
        """A value as Optuna stored it (trial.params) -> the recipe value."""
        return json.loads(value) if self.encoded and isinstance(value, str) else value

    def corners(self) -> list[Any]:
        return list(self.choices) if self.kind == "categorical" else (
            [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high])

    def describe(self) -> str:
        if self.kind == "categorical":
            return "choices " + ", ".join(json.dumps(c) for c in self.choices)
        return (f"{self.kind} [{self.low:g}, {self.high:g}]" + (" log" if self.log else "")
                + (f" step {self.step:g}" if self.step else ""))


def _number(v: Any, where: str, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        fail(where, key, f"must be a number, got {v!r}")
    try:
        f = float(v)
    except ValueError:
        fail(where, key, f"must be a number, got {v!r}")
    if not math.isfinite(f):
        fail(where, key, f"must be finite, got {v!r}")
    return f


def parse_param(path: str, raw: Any, base_value: Any) -> Param:
    where = f"sweep space '{path}'"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping, {{choices: [...]}} or {{low: .., high: .., log: ..}}, "
                          f"got {raw!r}")
    tokens = path.split(".")
    if "choices" in raw:
        extra = set(raw) - {"choices"}
        if extra:
            fail(where, sorted(extra)[0], "cannot be combined with 'choices'")
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            fail(where, "choices", f"must be a non-empty list, got {choices!r}")
        if len({json.dumps(c, sort_keys=True) for c in choices}) != len(choices):
            fail(where, "choices", f"has repeated values: {choices!r}")
        if _is_enabled_path(tokens) and not all(isinstance(c, bool) for c in choices):
            fail(where, "choices", f"must be true/false for 'enabled', got {choices!r}")
        return Param(path, "categorical", choices=list(choices))
    if _is_enabled_path(tokens):
        fail(where, "choices", "is required for 'enabled' (e.g. {choices: [true, false]})")
    known = {"low", "high", "log", "step", "type"}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known | {"choices"}), n=1)
            fail(where, str(key), "is not a distribution setting" + (f"; did you mean '{close[0]}'?" if close else "")
                 + " (known: choices, or low, high, log, step, type)")
    for key in ("low", "high"):
        if key not in raw:
            fail(where, key, "is required (or give 'choices')")
    low, high = _number(raw["low"], where, "low"), _number(raw["high"], where, "high")
    kind = raw.get("type")
    if kind is None:
        if isinstance(base_value, bool):
            fail(where, "low", "a true/false setting needs {choices: [true, false]}")
        if isinstance(base_value, int):
            kind = "int"
        elif isinstance(base_value, float):
            kind = "float"
        elif base_value is None:
            kind = "int" if all(isinstance(raw[k], int) and not isinstance(raw[k], bool)
                                for k in ("low", "high")) else "float"
        else:
            fail(where, "low", f"a range needs a numeric setting; the base value is {base_value!r} "
                 "(use 'choices')")
    if kind not in ("int", "float"):
        fail(where, "type", f"must be 'int' or 'float', got {kind!r}")
    if kind == "int" and (low != int(low) or high != int(high)):
        fail(where, "low", f"must be integers for an int setting, got low={raw['low']!r} high={raw['high']!r}")
    if low >= high:
        fail(where, "high", f"must be > low, got low={raw['low']!r} high={raw['high']!r}")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        fail(where, "log", f"must be true or false, got {log!r}")
    if log and low <= 0:
        fail(where, "low", f"must be > 0 with log: true, got {raw['low']!r}")
    step = raw.get("step")
    if step is not None:
        step = _number(step, where, "step")
        if step <= 0:
            fail(where, "step", f"must be > 0, got {raw['step']!r}")
        if log:
            fail(where, "step", "cannot be combined with log: true")
        if kind == "int" and step != int(step):
            fail(where, "step", f"must be an integer for an int setting, got {raw['step']!r}")
        if step > high - low:
            fail(where, "step", f"is larger than high - low ({high - low:g})")
    return Param(path, kind, low=low, high=high, log=log, step=step)
