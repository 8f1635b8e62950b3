"""`targets:` lists: which modules a recipe acts on.

Each entry is either an exact qualified module name (`bert.encoder.layer.0.attention.self.query`)
or `re:<pattern>`, a Python regular expression that must match the *whole* qualified name
(`re.fullmatch`; the llm-compressor / torchao convention), e.g. `re:.*attention.*` or
`re:bert\\.encoder\\.layer\\.[0-2]\\..*`. The result is the union of every entry's matches, in
model order; an entry that matches nothing is an error (a typo never silently prunes nothing).

    validate_target_syntax(cfg.targets, where)           # at config-validation time, no model
    resolve_targets(model, cfg.targets, where)           # {qualified name: module}
"""
from __future__ import annotations

import difflib
import re
from typing import Any

from torch import nn

from workbench.config import ConfigError, fail

REGEX_PREFIX = "re:"


def _kind_name(kind: type | tuple[type, ...]) -> str:
    """'Linear ' for nn.Linear; '' for nn.Module (any module: the kind says nothing)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return "" if nn.Module in kinds else "/".join(k.__name__ for k in kinds) + " "


def _examples(entry: str, candidates: dict[str, nn.Module]) -> str:
    """Up to three candidate names to show beside an entry that matched nothing: the closest
    spellings of it, else the first Linears (the usual targets), else the first names. The root
    module (named '') is never one."""
    names = [n for n in candidates if n]
    bare = entry[len(REGEX_PREFIX):] if entry.startswith(REGEX_PREFIX) else entry
    close = difflib.get_close_matches(bare, names, n=3, cutoff=0.6)
    linears = [n for n in names if isinstance(candidates[n], nn.Linear)]
    return ", ".join(close or linears[:3] or names[:3]) or "none: the model has no such module"


def _compile(entry: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(entry[len(REGEX_PREFIX):])
    except re.error as exc:
        fail(where, "targets", f"entry '{entry}' is not a valid regular expression: {exc}")


def validate_target_syntax(targets: Any, where: str) -> None:
    """Check that `targets` is a non-empty list of non-empty strings whose `re:` patterns
    compile; ConfigError naming the bad entry otherwise. Needs no model."""
    if not isinstance(targets, (list, tuple)) or isinstance(targets, str):
        fail(where, "targets", f"must be a list of module names or 're:<pattern>' entries, got {targets!r}")
    if not targets:
        fail(where, "targets", "must name at least one module (leave it out for the recipe's default)")
    for entry in targets:
        if not isinstance(entry, str) or not entry.strip():
            fail(where, "targets", f"entries must be non-empty strings, got {entry!r}")
        if entry.startswith(REGEX_PREFIX):
            if not entry[len(REGEX_PREFIX):]:
                fail(where, "targets", f"entry '{entry}' has an empty pattern")
            _compile(entry, where)


def resolve_targets(model: nn.Module, targets: list[str], where: str, *,
                    kind: type | tuple[type, ...] = nn.Linear,
                    candidates: dict[str, nn.Module] | None = None) -> dict[str, nn.Module]:
    """The modules `targets` names, by qualified name, in model order.

    Searched among `candidates` (default: every module of `kind` in `model`). An entry matching
    no candidate raises ConfigError: "<where>: 'targets' entry '<entry>' matches no <kind> module
    (e.g. <three candidate names>)".
    """
    validate_target_syntax(targets, where)
    if candidates is None:
        candidates = {name: m for name, m in model.named_modules() if isinstance(m, kind)}
    chosen: set[str] = set()
    for entry in targets:
        if entry.startswith(REGEX_PREFIX):
            pattern = _compile(entry, where)
            hits = [name for name in candidates if pattern.fullmatch(name)]
        else:
            hits = [entry] if entry in candidates else []
        if not hits:
            raise ConfigError(f"{where}: 'targets' entry '{entry}' matches no {_kind_name(kind)}module "
                              f"(e.g. {_examples(entry, candidates)})")
        chosen.update(hits)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return {name: candidates[name]
            for name in sorted(chosen, key=lambda n: (order.get(n, len(order)), n))}
