"""Typed configuration: a YAML file, overridden by ``LEADERCRON_*`` variables, overridden by flags.

Everything is validated when it loads — unknown keys, types, durations, cron expressions, time
zones, job targets, duplicate job ids, the backend URL and the timing invariants — and every
problem becomes a one-line :class:`~leadercron.errors.ConfigError`.

Environment variables name a setting by section and key: ``LEADERCRON_ELECTION_BACKEND``,
``LEADERCRON_ELECTION_TTL``, ``LEADERCRON_SCHEDULER_TIMEZONE``, ``LEADERCRON_HTTP_LISTEN``,
``LEADERCRON_LOG_LEVEL`` and so on (jobs come only from the file).
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from leadercron.durations import parse_duration
from leadercron.errors import ConfigError

Duration = Annotated[float, BeforeValidator(parse_duration)]
DEFAULT_BACKEND = "file:///tmp/leadercron.lock"


def default_identity() -> str:
    """``$POD_NAME`` if set (Kubernetes' downward API), else ``hostname-pid``."""
    pod = os.environ.get("POD_NAME", "").strip()
    return pod or f"{socket.gethostname()}-{os.getpid()}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ElectionConfig(_Section):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    backend: str = DEFAULT_BACKEND
    identity: str = Field(default_factory=default_identity, min_length=1, max_length=200)
    ttl: Duration = 15.0
    renew_deadline: Duration = 10.0
    retry_period: Duration = 2.0

    @model_validator(mode="after")
    def _timing(self) -> ElectionConfig:
        from leadercron.elector import validate_timing

        try:
            validate_timing(self.ttl, self.renew_deadline, self.retry_period)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


class SchedulerConfig(_Section):
    timezone: str = "UTC"
    misfire_grace_time: Duration = 30.0
    coalesce: bool = True
    on_lost: Literal["finish", "cancel"] = "finish"
    grace_period: Duration = 30.0
    max_workers: int = Field(default=10, ge=1, le=1000)
    interval_origin: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    lock_ttl: Duration = 30.0

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("misfire_grace_time", "lock_ttl")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("interval_origin")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class HttpConfig(_Section):
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _hostport(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {value!r}")
        return value


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class JobConfig(_Section):
    id: str = Field(min_length=1, max_length=200)
    cron: str | None = None
    interval: Duration | None = None
    date: datetime | None = None
    func: str | None = None
    command: list[str] | None = None
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    max_instances: int = Field(default=1, ge=1)
    misfire_grace_time: Duration | None = None
    coalesce: bool | None = None
    start_date: datetime | None = None
    lock: str | None = Field(default=None, min_length=1, max_length=253)
    lock_ttl: Duration | None = None

    @model_validator(mode="after")
    def _one_trigger_one_target(self) -> JobConfig:
        triggers = [k for k in ("cron", "interval", "date") if getattr(self, k) is not None]
        if len(triggers) != 1:
            found = ", ".join(triggers) if triggers else "none"
            raise ValueError(f"needs exactly one of cron, interval, date (found: {found})")
        targets = [k for k in ("func", "command") if getattr(self, k) is not None]
        if len(targets) != 1:
            found = ", ".join(targets) if targets else "none"
            raise ValueError(f"needs exactly one of func, command (found: {found})")
        if self.command is not None and (self.args or self.kwargs):
            raise ValueError("args and kwargs go with func, not with command")
        if self.command is not None and not self.command:
            raise ValueError("command must not be empty")
        if self.interval is not None and self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        if self.cron is not None:
            _check_cron(self.cron)
        if self.func is not None and ":" not in self.func:
            raise ValueError(f"func must look like 'package.module:function', got {self.func!r}")
        if self.lock_ttl is not None and self.lock_ttl <= 0:
            raise ValueError("lock_ttl must be greater than 0")
        return self


Mode = Literal["leader", "per-job"]


class Config(_Section):
    mode: Mode = "leader"
    election: ElectionConfig
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    jobs: list[JobConfig] = Field(default_factory=list)

    @field_validator("jobs")
    @classmethod
    def _unique_ids(cls, jobs: list[JobConfig]) -> list[JobConfig]:
        seen: set[str] = set()
        for job in jobs:
            if job.id in seen:
                raise ValueError(f"duplicate job id {job.id!r}")
            seen.add(job.id)
        return jobs

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        return value.strip().lower().replace("_", "-") if isinstance(value, str) else value

    @model_validator(mode="after")
    def _per_job_settings(self) -> Config:
        for index, job in enumerate(self.jobs):
            where = f"jobs[{index}]"
            if self.mode == "leader":
                for key in ("lock", "lock_ttl"):
                    if getattr(job, key) is not None:
                        raise ValueError(f"{where}.{key} applies only with mode: per-job")
                continue
            if job.max_instances != 1:
                raise ValueError(
                    f"{where}.max_instances must be 1 with mode: per-job (the job's lock lets "
                    "one run at a time across all replicas)"
                )
            ttl = self.lock_ttl(job)
            if job.interval is not None and ttl >= job.interval:
                source = "lock_ttl" if job.lock_ttl is not None else "scheduler.lock_ttl"
                raise ValueError(
                    f"{where}: {source} {ttl:g}s is not shorter than the interval "
                    f"{job.interval:g}s: a replica that dies holding the lock would keep every "
                    f"replica from the next fire; set {where}.lock_ttl below {job.interval:g}s "
                    "(long runs are extended while they run)"
                )
        return self

    def lock_ttl(self, job: JobConfig) -> float:
        """The lock ttl of a job in per-job mode."""
        return job.lock_ttl if job.lock_ttl is not None else self.scheduler.lock_ttl

    def lock_name(self, job: JobConfig) -> str:
        """The lock of a job in per-job mode: ``lock``, else ``<election>.<job id>``."""
        from leadercron.perjob import lock_name

        return job.lock or lock_name(self.election.name, job.id)


def _check_cron(expression: str) -> None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expression, timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from None


# -- loading ---------------------------------------------------------------------------------

#: Settings that ``LEADERCRON_<SECTION>_<KEY>`` variables may set.
ENV_SETTINGS: dict[str, tuple[str, ...]] = {
    "election": ("name", "backend", "identity", "ttl", "renew_deadline", "retry_period"),
    "scheduler": (
        "timezone",
        "misfire_grace_time",
        "coalesce",
        "on_lost",
        "grace_period",
        "max_workers",
        "interval_origin",
        "lock_ttl",
    ),
    "http": ("listen",),
    "log": ("level", "format"),
}


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file into a dict; one-line ConfigError on any problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(file)!r} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(file)!r} is a directory") from None
    except PermissionError:
        raise ConfigError(
            f"config file {str(file)!r} is not readable (permission denied)"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(file)!r} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(file)!r}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{file}: malformed YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def merge_overrides(
    data: dict[str, Any], env: Mapping[str, str], flags: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Apply ``LEADERCRON_*`` variables, then flags (``{"election.ttl": "5s"}``), to ``data``."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}

    def put(section: str, key: str, value: Any) -> None:
        current = merged.get(section)
        if current is None:
            current = merged[section] = {}
        if not isinstance(current, dict):
            raise ConfigError(f"{section}: expected a mapping, got {type(current).__name__}")
        current[key] = value

    if "LEADERCRON_MODE" in env:
        merged["mode"] = env["LEADERCRON_MODE"]
    for section, keys in ENV_SETTINGS.items():
        for key in keys:
            name = f"LEADERCRON_{section}_{key}".upper()
            if name in env:
                put(section, key, env[name])
    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if section:
            put(section, key, value)
        else:  # a top-level setting, such as ".mode"
            merged[key] = value
    return merged


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue
        else:
            text += f".{part}" if text else str(part)
    return text or "config"


def _one_line(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = _location(tuple(first["loc"]))
    kind = first["type"]
    message = first["msg"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key"
    if kind == "missing":
        return f"{where}: required key is missing"
    message = message.removeprefix("Value error, ")
    if kind in (
        "string_type",
        "int_type",
        "int_parsing",
        "bool_type",
        "bool_parsing",
        "list_type",
        "dict_type",
        "float_type",
        "float_parsing",
        "model_type",
        "datetime_type",
        "datetime_parsing",
        "datetime_from_date_parsing",
        "literal_error",
        "string_pattern_mismatch",
        "string_too_short",
    ):
        message = f"{message} (got {first.get('input')!r})"
    return f"{where}: {message}"


def build(data: Mapping[str, Any], source: str = "config") -> Config:
    """Validate a raw mapping into a :class:`Config`, checking the backend URL and its timing."""
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_one_line(exc)}") from None
    from leadercron.backends import from_url

    try:
        backend = from_url(config.election.backend)
        backend.validate_timing(
            ttl=config.election.ttl,
            renew_deadline=config.election.renew_deadline,
            retry_period=config.election.retry_period,
        )
        backend.validate_election(config.election.name)
    except ConfigError as exc:
        raise ConfigError(f"{source}: election.backend: {exc}") from None
    if config.mode == "per-job":
        _check_locks(config, backend, source)
    return config


def _check_locks(config: Config, backend: Any, source: str) -> None:
    """Per-job mode: every job's lock name and lock ttl must suit the backend; names unique."""
    owners: dict[str, str] = {}
    for index, job in enumerate(config.jobs):
        name, ttl = config.lock_name(job), config.lock_ttl(job)
        if name in owners:
            raise ConfigError(
                f"{source}: jobs[{index}]: lock {name!r} is also the lock of job "
                f"{owners[name]!r}; give each job its own lock"
            )
        owners[name] = job.id
        try:
            backend.validate_election(name)
            backend.validate_timing(ttl=ttl, renew_deadline=ttl * 2 / 3, retry_period=ttl / 3)
        except ConfigError as exc:
            raise ConfigError(
                f"{source}: jobs[{index}] (lock {name!r}, lock_ttl {ttl:g}s): {exc}"
            ) from None


def load(
    path: str | os.PathLike[str] | None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Load the config file (if any), apply environment and flag overrides, validate."""
    environ = os.environ if env is None else env
    data = read_file(path) if path is not None else {}
    source = str(path) if path is not None else "config"
    return build(merge_overrides(data, environ, flags), source)


def resolve_func(reference: str) -> Callable[..., Any]:
    """Import ``package.module:function`` (dots allowed after the colon); ConfigError if absent."""
    module_name, _, attr_path = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # a module that fails while importing
        raise ConfigError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{module_name!r} has no attribute {attr_path!r}") from None
    if not callable(target):
        raise ConfigError(f"{reference!r} is not callable")
    return target  # type: ignore[no-any-return]


def resolve_jobs(config: Config, source: str = "config") -> dict[str, Callable[..., Any]]:
    """Import every ``func`` job target; ConfigError naming the job on the first failure."""
    resolved: dict[str, Callable[..., Any]] = {}
    for index, job in enumerate(config.jobs):
        if job.func is None:
            continue
        try:
            resolved[job.id] = resolve_func(job.func)
        except ConfigError as exc:
            raise ConfigError(f"{source}: jobs[{index}].func: {exc}") from None
    return resolved
