"""Command jobs: run an external program for a job, tied to the replica's life.

The program runs under a small supervisor (``leadercron/_supervisor.py``) so that it dies with the
replica, even when the replica is killed with ``kill -9``, together with every process it started
in its process group. It gets these environment variables on top of leadercron's own:

``LEADERCRON_IDENTITY``, ``LEADERCRON_ELECTION``, ``LEADERCRON_TERM`` (the fencing token of the
term it runs under), ``LEADERCRON_JOB_ID`` and ``LEADERCRON_SCHEDULED_TIME`` (the fire time, ISO
8601 UTC, e.g. ``2026-11-28T09:00:00.500000Z``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from leadercron.errors import LeadercronError
from leadercron.term import current_run

SUPERVISOR = str(Path(__file__).with_name("_supervisor.py"))
#: Seconds between SIGTERM and SIGKILL when a running command is cancelled.
KILL_GRACE = 5.0


class CommandFailed(LeadercronError):
    """A command job exited with a non-zero status."""


def command_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a command job of the current run."""
    env = dict(os.environ if base is None else base)
    run = current_run()
    if run is not None:
        env.update(
            LEADERCRON_IDENTITY=run.term.identity,
            LEADERCRON_ELECTION=run.term.election,
            LEADERCRON_TERM=str(run.term.token),
            LEADERCRON_JOB_ID=run.job_id,
            LEADERCRON_SCHEDULED_TIME=run.scheduled_time_text,
        )
    return env


def run_command(argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run ``argv`` as a command job and wait for it. Raises :class:`CommandFailed` on failure.

    Meant to be the ``func`` of an APScheduler job managed by :class:`LeaderScheduler`; config
    files say ``command: [...]`` instead. Cancelling the run terminates the command.
    """
    run = current_run()
    full_env = command_env()
    if env:
        full_env.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", SUPERVISOR, str(os.getpid()), str(KILL_GRACE), "--", *argv],
        env=full_env,
    )
    if run is not None:
        run.on_cancel(lambda: _terminate(proc))
    code = proc.wait()
    if code != 0:
        name = run.job_id if run is not None else argv[0]
        raise CommandFailed(f"command job {name!r} exited with status {code}")
    return code


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
