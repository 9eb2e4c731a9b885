"""The scheme registry: built-ins, entry points, lazy imports, clear errors."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from leadercron import backends
from leadercron.backends import backend_class, from_url, schemes
from leadercron.backends.file import FileBackend
from leadercron.backends.memory import MemoryBackend
from leadercron.errors import ConfigError


def test_builtin_schemes() -> None:
    assert isinstance(from_url("file:///tmp/x.lock"), FileBackend)
    assert isinstance(from_url("memory://"), MemoryBackend)
    assert {"file", "memory", "etcd", "zookeeper", "zk", "consul", "redis"} <= set(schemes())


def test_client_libraries_are_imported_only_when_their_scheme_is_used() -> None:
    code = (
        "import sys, leadercron, leadercron.cli\n"
        "from leadercron.backends import from_url, schemes\n"
        "from_url('file:///tmp/x.lock'); schemes()\n"
        "print(sorted(m for m in ('kazoo', 'redis', 'consul', 'etcd3gw', 'aetcd') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_third_party_scheme_from_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(
        name="custom", value="leadercron.backends.memory:MemoryBackend", group="leadercron.backends"
    )
    monkeypatch.setattr(backends, "entry_points", lambda group: [ep])
    assert "custom" in schemes()
    assert backend_class("custom") is MemoryBackend


def test_entry_point_that_is_not_a_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="bogus", value="os.path:join", group="leadercron.backends")
    monkeypatch.setattr(backends, "entry_points", lambda group: [ep])
    with pytest.raises(ConfigError, match="not a Backend"):
        backend_class("bogus")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuch://x", "unknown backend scheme 'nosuch://'"),
        ("not a url", "is not a URL"),
        ("file://host/tmp/x", "names no host"),
        ("file:///tmp/x?timeout=forever", "timeout: expected a duration"),
        ("file:///tmp/x?timeout=1s&timeout=2s", "given twice"),
        ("memory://?x=1", "unknown option 'x'"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_url(url)


def test_redact_url_hides_secrets() -> None:
    from leadercron.backends.base import redact_url

    assert redact_url("redis://user:hunter2@h:6379/0?token=abc&prefix=x") == (
        "redis://user:***@h:6379/0?token=***&prefix=x"
    )


def test_host_lists_are_parsed_alike_by_every_backend() -> None:
    from leadercron.backends.base import parse_hosts

    assert parse_hosts("x://", "a,b:1,[::1]:3,[fe80::2]", 9) == [
        ("a", 9),
        ("b", 1),
        ("::1", 3),
        ("fe80::2", 9),
    ]
    for url in ("etcd://h:70000", "redis://h:0", "zookeeper://h:1,,h:2", "etcd://h:1,[::1]x"):
        with pytest.raises(ConfigError, match=r"bad host '.*' \(expected host\[:port\]"):
            from_url(url)


@pytest.mark.parametrize("scheme", ["etcd", "redis", "zookeeper", "consul", "postgresql"])
def test_an_unbalanced_bracket_is_a_config_error(scheme: str) -> None:
    with pytest.raises(ConfigError, match="is malformed: Invalid IPv6 URL") as caught:
        from_url(f"{scheme}://user:secret@[::1")
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h?timeout=0s", "timeout must be greater than 0s"),
        ("zookeeper://h?min_session_timeout=0", "min_session_timeout must be greater than 0s"),
        ("file:///tmp/x?timeout=-1s", "timeout"),
        ("kubernetes://default/?timeout=soon", "timeout: expected a duration"),
        ("postgresql://u@h/db?recheck=never", "recheck: expected a duration"),
    ],
)
def test_duration_options_are_checked_alike(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_url(url)
    assert "\n" not in message


def test_consul_lock_delay_may_be_zero() -> None:
    backend = from_url("consul://h?lock_delay=0s")
    assert backend.url.startswith("consul://")
