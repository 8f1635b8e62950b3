"""Where the workbench keeps things on disk (all overridable by environment variables)."""
from __future__ import annotations

import os
from pathlib import Path

# The source checkout, when running from one (editable install): caches live beside the code.
REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Tokenized datasets and fine-tuned teachers. `WORKBENCH_CACHE` overrides."""
    env = os.environ.get("WORKBENCH_CACHE")
    if env:
        return Path(env)
    if (REPO_ROOT / "setup.py").exists():
        return REPO_ROOT / ".cache" / "workbench"
    return Path.home() / ".cache" / "workbench"


def embedded_data_dirs() -> list[Path]:
    """Folders searched for the embedded source archives (`make setup` fills the first)."""
    dirs = [REPO_ROOT / ".cache" / "embedded", Path.home() / ".cache" / "workbench" / "embedded"]
    env = os.environ.get("WORKBENCH_DATA_DIR")
    return ([Path(env)] if env else []) + dirs


def results_dir() -> Path:
    """Where runs write their results. `WORKBENCH_RESULTS` overrides."""
    env = os.environ.get("WORKBENCH_RESULTS")
    return Path(env) if env else Path.cwd() / "results"


def run_folder(run: str | Path) -> Path:
    """The folder of a run given on the command line: a folder, else a run name under
    `results_dir()`. Neither: ConfigError saying so (what the folder must hold is the caller's
    check)."""
    from workbench.config import ConfigError

    path = Path(run)
    if path.is_dir():
        return path
    named = results_dir() / str(run)
    if named.is_dir():
        return named
    raise ConfigError(f"no run at '{run}' (neither a folder nor a run name under {results_dir()}); give a folder "
                      "written by `workbench run`, or its name under results/")
