"""Dotted paths into a pipeline recipe dict (e.g. `stages.student.train.lr`): read, set, drop stages.

A path walks the recipe as `PipelineSpec.to_dict()` writes it: mapping keys by name, `stages` by
stage name (or index), a stage's `recipes` by recipe name (or index). `stages.<name>.enabled` is
not a setting of the recipe: false is applied by removing the stage (`drop_stages`). The sweep
file (`workbench.sweep.spec`) addresses its `overrides` and `space` with these paths.
"""
from __future__ import annotations

import copy
import difflib
from typing import Any

from workbench.config import ConfigError

ENABLED = "enabled"


# ------------------------------------------------------------------------------ paths
def _split(path: str, where: str) -> list[str]:
    if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
        raise ConfigError(f"{where}: '{path}' is not a valid path (dot-separated names, e.g. "
                          "stages.student.train.lr)")
    return path.split(".")


def _named_item(items: list[Any], token: str, kind: str, where: str, path: str) -> int:
    """Index of the list item named `token` (stages by 'name', recipes by their one key) or by index."""
    names = [it.get("name") if kind == "stage" else next(iter(it)) for it in items]
    if token in names:
        if names.count(token) > 1:
            raise ConfigError(f"{where}: '{path}': {kind} '{token}' occurs {names.count(token)} times; "
                              f"address it by index ({', '.join(f'{i}={n}' for i, n in enumerate(names))})")
        return names.index(token)
    if token.isdigit() and int(token) < len(items):
        return int(token)
    close = difflib.get_close_matches(token, [str(n) for n in names], n=1)
    raise ConfigError(f"{where}: '{path}': no {kind} '{token}' in the base recipe"
                      + (f"; did you mean '{close[0]}'?" if close else "")
                      + f" (known: {', '.join(map(str, names))})")


def _walk(data: Any, tokens: list[str], where: str, path: str) -> tuple[Any, Any]:
    """The container holding the last token and the key/index within it."""
    node = data
    for depth, token in enumerate(tokens):
        last = depth == len(tokens) - 1
        parent_key = tokens[depth - 1] if depth else None
        if isinstance(node, list):
            kind = "stage" if parent_key == "stages" else "recipe" if parent_key == "recipes" else None
            if kind is None:
                if not token.isdigit() or int(token) >= len(node):
                    raise ConfigError(f"{where}: '{path}': '{token}' is not an index of the list "
                                      f"{'.'.join(tokens[:depth])} (length {len(node)})")
                key: Any = int(token)
            else:
                key = _named_item(node, token, kind, where, path)
            if last:
                return node, key
            node = node[key]
            if kind == "recipe":  # a recipe item is {name: settings}: step into the settings
                node = next(iter(node.values()))
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: '{path}': '{'.'.join(tokens[:depth])}' is a value "
                              f"({node!r}), it has no setting '{token}'")
        if token not in node:
            known = sorted(map(str, node))
            close = difflib.get_close_matches(token, known, n=1)
            raise ConfigError(f"{where}: '{path}': no setting '{token}' at "
                              f"'{'.'.join(tokens[:depth]) or '(top)'}' of the base recipe"
                              + (f"; did you mean '{close[0]}'?" if close else "")
                              + f" (known: {', '.join(known)})")
        if last:
            return node, token
        node = node[token]
    raise AssertionError("unreachable")


def _is_enabled_path(tokens: list[str]) -> bool:
    return len(tokens) == 3 and tokens[0] == "stages" and tokens[2] == ENABLED


def get_path(data: dict[str, Any], path: str, where: str = "sweep") -> Any:
    tokens = _split(path, where)
    if _is_enabled_path(tokens):
        _named_item(data["stages"], tokens[1], "stage", where, path)
        return True
    node, key = _walk(data, tokens, where, path)
    return node[key]


def set_path(data: dict[str, Any], path: str, value: Any, where: str = "sweep") -> None:
    """Set `path` in the recipe dict `data` in place (`stages.X.enabled` is applied later)."""
    tokens = _split(path, where)
    if _is_enabled_path(tokens):
        _named_item(data["stages"], tokens[1], "stage", where, path)
        return
    node, key = _walk(data, tokens, where, path)
    node[key] = copy.deepcopy(value)


def drop_stages(data: dict[str, Any], disabled: list[str]) -> None:
    """Remove the named stages; a stage that came `from` a dropped one comes from its source."""
    for name in disabled:
        stages = data["stages"]
        i = next(k for k, s in enumerate(stages) if s["name"] == name)
        source = stages[i].get("from") or (stages[i - 1]["name"] if i else None)
        for later in stages[i + 1:]:
            if later.get("from") == name:
                if source is None:
                    later.pop("from")
                else:
                    later["from"] = source
        del stages[i]
    if not data["stages"]:
        raise ConfigError("sweep: every stage was disabled; a pipeline needs at least one stage")
