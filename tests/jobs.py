"""Job functions for tests (imported by ``func:`` references in test configs)."""

from __future__ import annotations

import os
import time

from leadercron.term import current_run


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def record(path: str, seconds: float = 0.0) -> None:
    """Append ``identity scheduled_time term start_time`` to ``path``; optionally take ``seconds``."""
    run = current_run()
    assert run is not None
    _append(
        path, f"{run.term.identity} {run.scheduled_time_text} {run.term.token} {time.time():.6f}\n"
    )
    if seconds:
        time.sleep(seconds)


def fail() -> None:
    raise RuntimeError("this job always fails")


def record_job(path: str, seconds: float = 0.0) -> None:
    """Append ``identity job scheduled_time term start_time`` to ``path``; then take ``seconds``."""
    run = current_run()
    assert run is not None
    _append(
        path,
        f"{run.term.identity} {run.job_id} {run.scheduled_time_text} {run.term.token} "
        f"{time.time():.6f}\n",
    )
    if seconds:
        time.sleep(seconds)
