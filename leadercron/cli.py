"""Command line: a thin shell over :mod:`leadercron.config` and :mod:`leadercron.service`.

Exit codes: 0 success; 1 (``status``) no leader; 2 bad input (config, flags, URL) — always with a
one-line message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from leadercron import __version__
from leadercron.errors import BackendUnavailable, ConfigError

EXIT_OK, EXIT_NO_LEADER, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"leadercron: error: {message}\n")


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default=os.environ.get("LEADERCRON_CONFIG"),
        help="YAML config file (default: $LEADERCRON_CONFIG)",
    )
    group = parser.add_argument_group("overrides (flags beat LEADERCRON_* variables beat the file)")
    group.add_argument(
        "--mode", dest=".mode", choices=["leader", "per-job"], help="leader (default) or per-job"
    )
    group.add_argument("--election", dest="election.name", metavar="NAME")
    group.add_argument("--backend", dest="election.backend", metavar="URL")
    group.add_argument("--identity", dest="election.identity", metavar="ID")
    group.add_argument("--ttl", dest="election.ttl", metavar="DURATION")
    group.add_argument("--renew-deadline", dest="election.renew_deadline", metavar="DURATION")
    group.add_argument("--retry-period", dest="election.retry_period", metavar="DURATION")
    group.add_argument("--http-listen", dest="http.listen", metavar="HOST:PORT")
    group.add_argument(
        "--log-level", dest="log.level", choices=["debug", "info", "warning", "error"]
    )
    group.add_argument("--log-format", dest="log.format", choices=["text", "json"])


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="leadercron", description="Leader-elected APScheduler service.")
    top.add_argument("--version", action="version", version=f"leadercron {__version__}")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run the service")
    _add_overrides(run)
    check = sub.add_parser("check", help="validate the config and job references")
    _add_overrides(check)
    status = sub.add_parser("status", help="show who leads an election")
    status.add_argument("--backend", required=True, metavar="URL")
    status.add_argument("--election", required=True, metavar="NAME")
    status.add_argument("--json", action="store_true", help="print JSON")
    return top


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if "." in k and v is not None}


def _load(args: argparse.Namespace) -> Any:
    from leadercron import config

    if (
        args.config is None
        and "election.name" not in _flags(args)
        and not os.environ.get("LEADERCRON_ELECTION_NAME")
    ):
        raise ConfigError("no config: pass --config FILE (or set LEADERCRON_CONFIG)")
    loaded = config.load(args.config, flags=_flags(args))
    config.resolve_jobs(loaded, args.config or "config")
    return loaded


def cmd_check(args: argparse.Namespace) -> int:
    loaded = _load(args)
    scheme = loaded.election.backend.split("://")[0]
    if loaded.mode == "per-job":
        locks = ", ".join(
            f"{loaded.lock_name(job)} ({loaded.lock_ttl(job):g}s)" for job in loaded.jobs
        )
        print(
            f"ok: per-job mode on {scheme}://, {len(loaded.jobs)} job(s), locks: {locks or 'none'}"
        )
        return EXIT_OK
    print(
        f"ok: election {loaded.election.name!r} on {scheme}://, "
        f"{len(loaded.jobs)} job(s), ttl {loaded.election.ttl:g}s, renew_deadline "
        f"{loaded.election.renew_deadline:g}s, retry_period {loaded.election.retry_period:g}s"
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from leadercron import logs
    from leadercron.service import Service

    loaded = _load(args)
    logs.setup(loaded.log.level, loaded.log.format)
    return Service(loaded).serve()


def cmd_status(args: argparse.Namespace) -> int:
    from leadercron.backends import from_url

    backend = from_url(args.backend)
    try:
        info = backend.leader(args.election)
        contenders = backend.candidates(args.election)
    finally:
        backend.close()
    if args.json:
        print(
            json.dumps(
                {
                    "election": args.election,
                    "backend": backend.url,
                    "leader": None if info is None else info.identity,
                    "term": None if info is None else info.token,
                    "candidates": contenders,
                }
            )
        )
    elif info is None:
        print(f"election {args.election!r}: no leader")
    else:
        term = "unknown" if info.token is None else str(info.token)
        print(f"election {args.election!r}: leader {info.identity} (term {term})")
        if contenders:
            print("candidates: " + ", ".join(contenders))
    return EXIT_OK if info is not None else EXIT_NO_LEADER


COMMANDS = {"run": cmd_run, "check": cmd_check, "status": cmd_status}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"leadercron: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BackendUnavailable as exc:
        print(f"leadercron: backend unavailable: {exc}", file=sys.stderr)
        return EXIT_USAGE if args.command == "status" else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
