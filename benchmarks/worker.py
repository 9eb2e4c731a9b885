"""Measured candidate processes: ``python -m benchmarks.worker MODE ...``.

Modes (each prints ``EV`` lines, see :mod:`benchmarks.instrument`; SIGUSR1 prints ``counts``):

``cli``
    ``leadercron run`` itself (``leadercron.cli.main``), with an elector listener that prints
    ``elected``/``lost`` when the elector's state changes and ``waiting`` when the replica first
    blocks in ``wait_for_change`` (it is in line). SIGTERM is leadercron's own graceful shutdown.
``pool``
    ``--n`` Electors in one process, each with a backend instance (connection) of its own; reads
    ``resign ID`` / ``join ID`` / ``counts`` / ``quit`` from stdin (the 50-candidate runs).
``tooz``
    A tooz coordinator campaigning with ``watch_elected_as_leader`` and a ``heartbeat()`` +
    ``run_watchers()`` loop every ``--period`` seconds (tooz's own examples use 0.1 s); SIGTERM
    stands down and stops the coordinator.
``redislock``
    A redis-py ``Lock`` loop: ``acquire(blocking=True)`` (redis-py retries ``SET NX`` every
    ``sleep`` = 0.1 s, its default), then ``reacquire()`` every ttl/3 while leading; SIGTERM
    releases the lock.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from benchmarks import instrument
from benchmarks.instrument import emit


class _Terminate(Exception):
    """Raised in the main thread by the SIGTERM handler of the peer loops."""


def _on_usr1(signum: int, frame: FrameType | None) -> None:
    emit("counts", instrument.snapshot())


def _raise_terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminate


def _announce(backend: Any, ident: str | None = None) -> None:
    """Count the backend's calls and print ``waiting`` on its first wait_for_change."""
    instrument.count_backend_calls(backend)
    original = backend.wait_for_change
    told = threading.Event()

    def wait_for_change(election: str, timeout: float) -> None:
        if not told.is_set():
            told.set()
            emit("waiting", None if ident is None else {"id": ident})
        original(election, timeout)

    backend.wait_for_change = wait_for_change


def _listener(ident: str | None = None) -> Any:
    from leadercron.elector import Listener

    class Stamps(Listener):
        def elected(self, term: Any) -> None:
            emit("elected", {"id": ident or term.identity, "token": term.token})

        def lost(self, term: Any, reason: str) -> None:
            emit("lost", {"id": ident or term.identity, "reason": reason})

    return Stamps()


def run_cli(argv: list[str]) -> int:
    instrument.install()
    from leadercron import cli
    from leadercron.elector import Elector

    original_init = Elector.__init__

    def init(self: Elector, backend: Any, **kwargs: Any) -> None:
        original_init(self, backend, **kwargs)
        _announce(backend)
        self.subscribe(_listener())

    Elector.__init__ = init  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, _on_usr1)
    emit("started")
    return cli.main(["run", *argv])


def run_pool(args: argparse.Namespace) -> int:
    instrument.install()
    from leadercron.backends import from_url
    from leadercron.elector import Elector

    electors: dict[str, Elector] = {}

    def join(ident: str) -> None:
        backend = from_url(args.url)
        _announce(backend, ident)
        elector = Elector(
            backend,
            election=args.election,
            identity=ident,
            ttl=args.ttl,
            renew_deadline=args.renew_deadline,
            retry_period=args.retry_period,
        )
        elector.subscribe(_listener(ident))
        electors[ident] = elector
        elector.start()

    for i in range(args.n):
        join(f"{args.prefix}{i}")
    emit("started")
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "resign":
            elector = electors.pop(arg)
            emit("resigning", {"id": arg})
            elector.stop()
            elector.backend.close()
            emit("resigned", {"id": arg})
        elif cmd == "join":
            join(arg)
        elif cmd == "counts":
            emit("counts", instrument.snapshot())
        elif cmd == "quit":
            break
    for elector in electors.values():
        elector.stop(release=False, timeout=5)
    return 0


def run_tooz(args: argparse.Namespace) -> int:
    instrument.install()
    import tooz
    from tooz import coordination

    signal.signal(signal.SIGUSR1, _on_usr1)
    signal.signal(signal.SIGTERM, _raise_terminate)
    group = args.group.encode()
    coord = coordination.get_coordinator(args.url, args.member.encode())
    leading = threading.Event()

    def elected(event: Any) -> None:
        leading.set()
        emit("elected", {"id": args.member})

    try:
        coord.start(start_heart=False)
        with contextlib.suppress(coordination.GroupAlreadyExist):
            coord.create_group(group).get()
        coord.join_group(group).get()
        coord.watch_elected_as_leader(group, elected)
        emit("started")
        told = False
        while True:
            coord.heartbeat()
            coord.run_watchers()
            if not told and not leading.is_set():
                told = True
                emit("waiting", {"id": args.member})
            time.sleep(args.period)
    except _Terminate:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # The redis driver has no stand_down_group_leader; its stop() releases the locks it holds.
        with contextlib.suppress(tooz.NotImplemented):
            coord.stand_down_group_leader(group)
        coord.stop()
    return 0


def run_redislock(args: argparse.Namespace) -> int:
    instrument.install()
    import redis
    from redis.exceptions import LockError

    signal.signal(signal.SIGUSR1, _on_usr1)
    signal.signal(signal.SIGTERM, _raise_terminate)
    client = redis.Redis.from_url(args.url)
    lock = client.lock(args.name, timeout=args.ttl, sleep=args.sleep)
    emit("started")
    try:
        while True:
            emit("waiting", {"id": args.member})
            lock.acquire(blocking=True)
            emit("elected", {"id": args.member})
            try:
                while True:
                    time.sleep(args.ttl / 3)
                    lock.reacquire()
            except LockError:
                emit("lost", {"id": args.member})
    except _Terminate:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if lock.owned():
            lock.release()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "cli":
        return run_cli(argv[1:])
    parser = argparse.ArgumentParser(prog="benchmarks.worker")
    sub = parser.add_subparsers(dest="mode", required=True)
    pool = sub.add_parser("pool")
    pool.add_argument("--url", required=True)
    pool.add_argument("--election", required=True)
    pool.add_argument("--n", type=int, required=True)
    pool.add_argument("--prefix", required=True)
    pool.add_argument("--ttl", type=float, default=15.0)
    pool.add_argument("--renew-deadline", type=float, default=10.0)
    pool.add_argument("--retry-period", type=float, default=2.0)
    tooz = sub.add_parser("tooz")
    tooz.add_argument("--url", required=True)
    tooz.add_argument("--group", required=True)
    tooz.add_argument("--member", required=True)
    tooz.add_argument("--period", type=float, default=0.1)
    lock = sub.add_parser("redislock")
    lock.add_argument("--url", required=True)
    lock.add_argument("--name", required=True)
    lock.add_argument("--member", required=True)
    lock.add_argument("--ttl", type=float, default=3.0)
    lock.add_argument("--sleep", type=float, default=0.1)
    args = parser.parse_args(argv)
    if args.mode == "pool":
        return run_pool(args)
    if args.mode == "tooz":
        return run_tooz(args)
    return run_redislock(args)


if __name__ == "__main__":
    sys.exit(main())
