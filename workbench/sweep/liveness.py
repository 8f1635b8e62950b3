"""Crash recovery: finding the RUNNING trials of sweep workers that died.

Each trial records its worker (host, pid, process start time, so a reused pid is not mistaken for
the worker). A RUNNING trial whose worker on this host is gone is marked FAIL and re-queued with
the same parameters; workers on other hosts are covered by Optuna's heartbeats (`grace_period`).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from workbench.sweep.spec import SweepSpec
from workbench.optuna_import import optuna_module as _optuna


# ------------------------------------------------------------------------------ liveness
def _proc_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _proc_start(os.getpid())}


def _alive(ident: dict[str, Any]) -> bool:
    pid = ident.get("pid")
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _proc_start(pid)
    return ident.get("start") is None or start is None or start == ident["start"]


def reap_dead_trials(study: Any, sweep: SweepSpec) -> list[int]:
    """FAIL (and re-queue) RUNNING trials whose worker on this host has died; then the
    heartbeat check for workers elsewhere. Returns the numbers failed here."""
    optuna = _optuna()
    from optuna.trial import TrialState

    host = socket.gethostname()
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=sweep.retries)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        ident = t.user_attrs.get("worker")
        if not isinstance(ident, dict) or ident.get("host") != host or _alive(ident):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "worker process died")
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                failed.append(t.number)
                retry(study, study._storage.get_trial(t._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    optuna.storages.fail_stale_trials(study)
    return failed
