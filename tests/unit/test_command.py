"""Command jobs: environment, failure, cancellation, and death with the replica."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from leadercron.command import CommandFailed, run_command
from leadercron.term import Run, Term, reset_current_run, set_current_run
from tests.conftest import PYTHON, wait_until


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def a_run(job_id: str = "job-1") -> Run:
    term = Term("nightly", "replica-7", 42, datetime.now(UTC), _holds=lambda token: True)
    scheduled = datetime(2026, 11, 28, 9, 0, 0, 500000, tzinfo=UTC)
    return Run(job_id=job_id, scheduled_time=scheduled, term=term)


def test_environment_of_a_command_job(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    token = set_current_run(a_run())
    try:
        run_command(
            [
                "sh",
                "-c",
                f"env | grep -E '^LEADERCRON_(ELECTION|IDENTITY|JOB_ID|SCHEDULED_TIME|TERM)=' | sort > {out}",
            ]
        )
    finally:
        reset_current_run(token)
    assert out.read_text().splitlines() == [
        "LEADERCRON_ELECTION=nightly",
        "LEADERCRON_IDENTITY=replica-7",
        "LEADERCRON_JOB_ID=job-1",
        "LEADERCRON_SCHEDULED_TIME=2026-11-28T09:00:00.500000Z",
        "LEADERCRON_TERM=42",
    ]


def test_non_zero_exit_raises() -> None:
    with pytest.raises(CommandFailed, match="exited with status 3"):
        run_command(["sh", "-c", "exit 3"])


def test_missing_program_fails_cleanly() -> None:
    with pytest.raises(CommandFailed, match="status 127"):
        run_command(["/nonexistent/program"])


def test_cancel_terminates_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    run = a_run()
    token = set_current_run(run)
    errors: list[BaseException] = []

    def target() -> None:
        tok = set_current_run(run)
        try:
            run_command(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"])
        except CommandFailed as exc:
            errors.append(exc)
        finally:
            reset_current_run(tok)

    thread = threading.Thread(target=target)
    thread.start()
    reset_current_run(token)
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10)
    grandchild = int(pidfile.read_text())
    assert alive(grandchild)
    run.cancel()
    thread.join(10)
    assert not thread.is_alive()
    assert errors, "a cancelled command reports failure"
    assert wait_until(lambda: not alive(grandchild), 5)


def test_command_dies_with_its_replica_even_on_kill_9(
    tmp_path: Path, python_env: dict[str, str]
) -> None:
    pidfile = tmp_path / "pid"
    script = (
        "import threading, time\n"
        "from leadercron.command import run_command\n"
        f"threading.Thread(target=run_command, args=(['sh', '-c', 'sleep 60 & echo $! > {pidfile};"
        " sleep 60'],)).start()\n"
        "time.sleep(60)\n"
    )
    replica = subprocess.Popen([PYTHON, "-c", script], env=python_env)
    try:
        assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10)
        grandchild = int(pidfile.read_text())
        assert alive(grandchild)
        replica.send_signal(signal.SIGKILL)
        replica.wait()
        killed_at = time.monotonic()
        assert wait_until(lambda: not alive(grandchild), 5), "the command outlived its replica"
        assert time.monotonic() - killed_at < 5
    finally:
        replica.kill()
        replica.wait()


def test_stragglers_are_killed_when_the_command_exits(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    run_command(["sh", "-c", f"sleep 60 & echo $! > {pidfile}"])
    straggler = int(pidfile.read_text())
    assert wait_until(lambda: not alive(straggler), 5)


def test_daemonized_grandchildren_are_killed_and_reaped(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # setsid leaves the job's process group; the supervisor still finds and kills it.
    run_command(["sh", "-c", f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' & sleep 0.2"])
    escaped = int(pidfile.read_text())
    assert wait_until(lambda: not alive(escaped), 5), "a daemonized grandchild survived its job"
