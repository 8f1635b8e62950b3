"""`optuna`, imported on first use and quieted: one place for every Optuna user (the sweep, the
dynamic length search). A module of its own so that a user outside `workbench.sweep` does not
import the sweep package (and its runner) just to get Optuna."""
from __future__ import annotations

import warnings
from typing import Any


def optuna_module() -> Any:
    """`optuna`, imported on first use, with its logging and experimental warnings quieted."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    return optuna
