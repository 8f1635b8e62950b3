"""Plugins: modules that register recipes and loss terms when imported.

A plugin is an ordinary Python module whose import runs `@register_recipe(...)` /
`@register_loss(...)` decorators:

    # my_recipes.py (on PYTHONPATH, or installed)
    from workbench.recipes import Recipe, register_recipe

    @register_recipe("my_prune")
    class MyPrune(Recipe): ...

It is loaded in one of two ways:

* named by a pipeline recipe (`plugins: [my_recipes]`) or on the command line:
  `load_plugins(["my_recipes"], where="recipes/x.yaml")`;
* installed with an entry point in the group `workbench.recipes`, which
  `load_entry_point_plugins()` imports (once per process):

      # pyproject.toml of the plugin's distribution
      [project.entry-points."workbench.recipes"]
      my_recipes = "my_recipes"

  The entry point's value names the module to import (`module` or `module:attribute`;
  the attribute is looked up, never called).
"""
from __future__ import annotations

import importlib
from typing import Any

from workbench.config import ConfigError

ENTRY_POINT_GROUP = "workbench.recipes"

_entry_points_loaded: list[str] | None = None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _missing(module: str, exc: BaseException) -> bool:
    """The module itself (or a package above it) does not exist, as opposed to a module it imports."""
    name = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    return bool(name) and (module == name or module.startswith(name + "."))


def _import(module: str, where: str, load: Any) -> None:
    try:
        load()
    except Exception as exc:
        if _missing(module, exc):
            raise ConfigError(f"{where}: plugin '{module}' not found: no module named '{exc.name}' "
                              "(is it installed, or its folder on PYTHONPATH?)") from None
        raise ConfigError(f"{where}: plugin '{module}' failed to import: {_one_line(exc)}") from exc


def load_plugins(modules: list[str], where: str) -> None:
    """Import each module (already imported ones are not imported again), so its recipes and
    losses are registered. Raises ConfigError naming `where`, the module and the error."""
    if isinstance(modules, str) or not isinstance(modules, (list, tuple)):
        raise ConfigError(f"{where}: 'plugins' must be a list of module names, got {type(modules).__name__}")
    for module in modules:
        if not isinstance(module, str) or not module.strip():
            raise ConfigError(f"{where}: 'plugins' entries must be module names (a.b.c), got {module!r}")
        module = module.strip()
        if module.endswith(".py") or "/" in module or "\\" in module:
            raise ConfigError(f"{where}: plugin '{module}' is a file name; give the module name "
                              "(e.g. 'my_recipes' for my_recipes.py, with its folder on PYTHONPATH)")
        _import(module, where, lambda: importlib.import_module(module))


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)  # the same distribution seen twice on sys.path counts once
    return list(found.values())


def load_entry_point_plugins() -> list[str]:
    """Import every installed plugin (entry points in the group `workbench.recipes`); returns
    their names. Runs once per process: later calls return the same names without importing.
    A plugin that fails to import raises ConfigError naming its entry point and module."""
    global _entry_points_loaded
    if _entry_points_loaded is not None:
        return list(_entry_points_loaded)
    names = []
    for ep in _entry_points():
        dist = getattr(getattr(ep, "dist", None), "name", None)
        where = f"entry point '{ep.name}' (group {ENTRY_POINT_GROUP}" + (f", distribution {dist}" if dist else "") + ")"
        _import(ep.module, where, ep.load)
        names.append(ep.name)
    _entry_points_loaded = names
    return list(names)
