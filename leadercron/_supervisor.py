"""Supervisor of one command job; run as ``python -I -S _supervisor.py PPID GRACE -- ARGV...``.

It makes sure a command never outlives its replica:

* ``PR_SET_PDEATHSIG``: the kernel sends this process SIGUSR1 the instant the leadercron thread
  that started it dies, for any reason, ``kill -9`` included;
* the command runs in a process group of its own, so that SIGUSR1 kills the whole group
  (``sh -c`` pipelines and their children) at once with SIGKILL;
* SIGTERM (leadercron cancelling the run) sends SIGTERM to the group and SIGKILL after GRACE;
* when the command exits, whatever it left behind is killed and reaped too: the supervisor is a
  child subreaper, so even a process that left the group (``setsid``) is reparented to it.

The exit status is the command's (128 + signal number if a signal ended it). Standard library
only, and no ``site``: it starts in a few milliseconds.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def children() -> list[int]:
    """Processes whose parent is this one (orphans reparented here included)."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[1].decode() == me:
            found.append(int(entry))
    return found


def reap_everything(deadline: float) -> None:
    """Kill and reap every remaining descendant, including those that left the job's group."""
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG) != (0, 0):
                pass
        except ChildProcessError:
            return
        for pid in children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)


def main() -> int:
    expected_parent = int(sys.argv[1])
    grace = float(sys.argv[2])
    argv = sys.argv[4:]
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGUSR1)
        # Orphans of the command (a daemonized grandchild) become ours, not PID 1's: no
        # zombies when leadercron runs as PID 1 in a container, and nothing escapes.
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    except (OSError, AttributeError):
        pass
    if os.getppid() != expected_parent:  # the parent died before prctl took effect
        return 128 + signal.SIGKILL
    state = {"pgid": 0}

    def kill_group(sig: int) -> None:
        if state["pgid"]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(state["pgid"], sig)

    def on_parent_death(signum: int, frame: object) -> None:
        kill_group(signal.SIGKILL)

    def on_term(signum: int, frame: object) -> None:
        kill_group(signal.SIGTERM)
        signal.setitimer(signal.ITIMER_REAL, max(grace, 0.001))

    def on_alarm(signum: int, frame: object) -> None:
        kill_group(signal.SIGKILL)

    signal.signal(signal.SIGUSR1, on_parent_death)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.signal(signal.SIGALRM, on_alarm)
    # Hold the signals back until the group id is known, so that none falls in between.
    watched = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        child = subprocess.Popen(
            argv,
            process_group=0,
            preexec_fn=lambda: (  # noqa: PLW1509 - this process has one thread
                signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
            ),
        )
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
        sys.stderr.write(f"leadercron: cannot run {argv[0]!r}: {exc.strerror}\n")
        return 127
    state["pgid"] = child.pid
    signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
    if os.getppid() != expected_parent:
        kill_group(signal.SIGKILL)
    code = child.wait()
    kill_group(signal.SIGKILL)  # stragglers left in the job's group
    reap_everything(time.monotonic() + 5.0)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
