"""A term of leadership as jobs see it, and the context that hands it to them."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class Term:
    """One leadership of this replica.

    ``token`` is the fencing token: it strictly increases with every new term of the election,
    across all replicas. Pass it downstream and have writes with an older token rejected.
    ``held`` tells, at the instant it is read, whether this replica still leads in this term;
    long Python jobs should check it between steps.
    """

    election: str
    identity: str
    token: int
    started_at: datetime
    _holds: Callable[[int], bool] = field(repr=False, compare=False)

    @property
    def held(self) -> bool:
        return self._holds(self.token)


@dataclass(frozen=True)
class Run:
    """One run of a job: which job, which scheduled fire time, under which term.

    ``cancelled`` is set when leadercron wants the run to stop (the term was lost under
    ``on_lost: cancel``, or shutdown outlasted the grace period). Command jobs are terminated;
    Python jobs should check ``cancelled`` (or ``term.held``) between steps.
    """

    job_id: str
    scheduled_time: datetime
    term: Term
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    _on_cancel: list[Callable[[], None]] = field(default_factory=list, repr=False, compare=False)

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (once, from another thread) if this run is cancelled."""
        self._on_cancel.append(hook)
        if self.cancelled.is_set():
            hook()

    def cancel(self) -> None:
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        for hook in list(self._on_cancel):
            hook()

    @property
    def scheduled_time_text(self) -> str:
        """The fire time as ISO 8601 UTC without spaces, e.g. ``2026-11-28T09:00:00.500000Z``."""
        return format_time(self.scheduled_time)


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``: ``2026-11-28T09:00:00.500000Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_current_run: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "leadercron_run", default=None
)


def current_run() -> Run | None:
    """The run the calling job belongs to, or ``None`` outside a leadercron job."""
    return _current_run.get()


def current_term() -> Term | None:
    """The term the calling job runs under, or ``None`` outside a leadercron job."""
    run = _current_run.get()
    return None if run is None else run.term


def set_current_run(run: Run | None) -> contextvars.Token[Run | None]:
    return _current_run.set(run)


def reset_current_run(token: contextvars.Token[Run | None]) -> None:
    _current_run.reset(token)
