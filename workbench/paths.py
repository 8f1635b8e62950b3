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


def check_output_path(path: str | Path, flag: str, folder: bool = True) -> None:
    """An output path given on the command line can be written: the nearest part of it that
    exists is a folder (the path itself too when `folder`). A file there failed with
    NotADirectoryError after the data was loaded; this fails first, naming the flag."""
    from workbench.config import ConfigError

    path = Path(path).expanduser()
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == path else f"lies under the file '{existing}'"
        raise ConfigError(f"{flag} '{path}' {where}; give {'a folder' if folder else 'a path in a folder'}")


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
