"""leadercron: run APScheduler jobs on exactly one of several replicas, by leader election
(or spread them over the replicas with one lock per job: :class:`PerJobScheduler`)."""

from __future__ import annotations

from leadercron.elector import Elector, Listener, State
from leadercron.errors import (
    BackendAuthError,
    BackendError,
    BackendUnavailable,
    ConfigError,
    LeadercronError,
    MissingExtraError,
)
from leadercron.locks import LockHeld, hold, locked
from leadercron.perjob import PerJobScheduler
from leadercron.scheduler import LeaderScheduler
from leadercron.term import Run, Term, current_run, current_term

__version__ = "0.1.0"

__all__ = [
    "BackendAuthError",
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "Elector",
    "LeaderScheduler",
    "LeadercronError",
    "Listener",
    "LockHeld",
    "MissingExtraError",
    "PerJobScheduler",
    "Run",
    "State",
    "Term",
    "__version__",
    "current_run",
    "current_term",
    "hold",
    "locked",
]
