"""Plugins: a module named in a recipe (or installed with a `workbench.recipes` entry point)
registers its recipes when loaded; a missing or broken one is a one-line ConfigError."""
from __future__ import annotations

import sys

import pytest

from workbench import plugins
from workbench.config import ConfigError

PLUGIN = """
from workbench.recipes import Recipe, register_recipe


@register_recipe("{recipe}")
class PluginRecipe(Recipe):
    def apply(self, model):
        return model
"""


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path; recipes and modules the test adds are removed afterwards."""
    from workbench.recipes.base import RECIPES

    monkeypatch.syspath_prepend(str(tmp_path))
    recipes_before, modules_before = set(RECIPES), set(sys.modules)
    yield tmp_path
    for name in set(RECIPES) - recipes_before:
        del RECIPES[name]
    for name in set(sys.modules) - modules_before:
        if name.startswith("wb_test_plugin"):
            del sys.modules[name]


def test_plugin_module_registers_a_recipe(plugin_dir):
    from workbench.recipes.base import recipe_class

    (plugin_dir / "wb_test_plugin_a.py").write_text(PLUGIN.format(recipe="wb_test_noop"))
    with pytest.raises(ConfigError, match="unknown recipe 'wb_test_noop'"):
        recipe_class("wb_test_noop", "stage 's'")
    plugins.load_plugins(["wb_test_plugin_a"], where="recipe x.yaml")
    cls = recipe_class("wb_test_noop", "stage 's'")
    assert cls.__module__ == "wb_test_plugin_a" and cls.name == "wb_test_noop"
    plugins.load_plugins(["wb_test_plugin_a"], where="recipe x.yaml")  # again: no "registered twice"
    assert recipe_class("wb_test_noop", "stage 's'") is cls


def test_missing_plugin_is_a_one_line_config_error(plugin_dir):
    with pytest.raises(ConfigError) as info:
        plugins.load_plugins(["wb_test_plugin_missing"], where="recipe x.yaml")
    msg = str(info.value)
    assert msg.startswith("recipe x.yaml: plugin 'wb_test_plugin_missing' not found") and "\n" not in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no traceback chain to show


def test_broken_plugin_names_module_and_error(plugin_dir):
    (plugin_dir / "wb_test_plugin_b.py").write_text("import wb_test_plugin_dependency_that_is_absent\n")
    (plugin_dir / "wb_test_plugin_c.py").write_text('raise RuntimeError("bad\\n  config")\n')
    with pytest.raises(ConfigError, match=r"^pipeline 'p': plugin 'wb_test_plugin_b' failed to import: "
                                          r"ModuleNotFoundError: No module named 'wb_test_plugin_dependency"):
        plugins.load_plugins(["wb_test_plugin_b"], where="pipeline 'p'")
    with pytest.raises(ConfigError) as info:
        plugins.load_plugins(["wb_test_plugin_c"], where="pipeline 'p'")
    assert str(info.value) == "pipeline 'p': plugin 'wb_test_plugin_c' failed to import: RuntimeError: bad config"
    with pytest.raises(ConfigError, match="module name"):
        plugins.load_plugins(["wb_test_plugin_a.py"], where="pipeline 'p'")
    with pytest.raises(ConfigError, match="list of module names"):
        plugins.load_plugins("wb_test_plugin_a", where="pipeline 'p'")  # type: ignore[arg-type]


def test_entry_point_plugins_load_once(plugin_dir, monkeypatch):
    from workbench.recipes.base import recipe_class

    (plugin_dir / "wb_test_plugin_ep.py").write_text(PLUGIN.format(recipe="wb_test_ep_recipe") + "\nLOADS = 1\n")
    dist = plugin_dir / "wb_test_plugin_dist-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: wb-test-plugin-dist\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[workbench.recipes]\nwb_test_ep = wb_test_plugin_ep\n")
    monkeypatch.setattr(plugins, "_entry_points_loaded", None)
    names = plugins.load_entry_point_plugins()
    assert "wb_test_ep" in names
    assert recipe_class("wb_test_ep_recipe", "stage 's'").__module__ == "wb_test_plugin_ep"
    # idempotent: the second call imports nothing and returns the same names
    del sys.modules["wb_test_plugin_ep"]
    assert plugins.load_entry_point_plugins() == names
    assert "wb_test_plugin_ep" not in sys.modules


def test_broken_entry_point_names_it(plugin_dir, monkeypatch):
    dist = plugin_dir / "wb_test_plugin_bad-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: wb-test-plugin-bad\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[workbench.recipes]\nwb_test_bad = wb_test_plugin_not_there\n")
    monkeypatch.setattr(plugins, "_entry_points_loaded", None)
    with pytest.raises(ConfigError, match=r"entry point 'wb_test_bad' \(group workbench.recipes, distribution "
                                          r"wb-test-plugin-bad\): plugin 'wb_test_plugin_not_there' not found"):
        plugins.load_entry_point_plugins()
