"""Bad input: one clear line on stderr and exit code 2, from both `check` and `run`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from leadercron import config as config_module
from leadercron.cli import main
from leadercron.errors import ConfigError
from tests.conftest import PYTHON, ROOT

GOOD = """
election:
  name: nightly-reports
  backend: file:///tmp/leadercron-test-cli.lock
  identity: replica-1
  ttl: 15s
  renew_deadline: 10s
  retry_period: 2s
scheduler:
  timezone: UTC
  misfire_grace_time: 30s
  coalesce: true
http:
  listen: 127.0.0.1:9464
jobs:
  - id: report
    cron: "0 9 * * *"
    func: tests.jobs:record
    args: ["/dev/null"]
    kwargs: {}
    max_instances: 1
  - id: tick
    interval: 30s
    command: ["sh", "-c", "true"]
  - id: once
    date: 2026-12-01T09:00:00Z
    func: tests.jobs:fail
"""

BAD = {
    "unknown key": ("election:\n  name: x\n  colour: red\n", "election.colour: unknown key"),
    "unknown top-level key": ("election: {name: x}\nextra: 1\n", "extra: unknown key"),
    "wrong type": ("election: {name: x}\nscheduler: {coalesce: maybe}\n", "scheduler.coalesce"),
    "bad duration": ("election: {name: x, ttl: soon}\n", "election.ttl: expected a duration"),
    "invalid cron": (
        "election: {name: x}\njobs: [{id: a, cron: '61 * * * *', command: ['true']}]\n",
        "jobs[0]: invalid cron expression '61 * * * *'",
    ),
    "unknown scheme": (
        "election: {name: x, backend: 'nosuch://h'}\n",
        "unknown backend scheme 'nosuch://'",
    ),
    "func does not import": (
        "election: {name: x}\njobs: [{id: a, interval: 1s, func: 'no_such_module_xyz:f'}]\n",
        "jobs[0].func: cannot import 'no_such_module_xyz'",
    ),
    "func attribute missing": (
        "election: {name: x}\njobs: [{id: a, interval: 1s, func: 'tests.jobs:nope'}]\n",
        "jobs[0].func: 'tests.jobs' has no attribute 'nope'",
    ),
    "two triggers": (
        "election: {name: x}\njobs: [{id: a, interval: 1s, cron: '* * * * *', command: ['true']}]\n",
        "needs exactly one of cron, interval, date (found: cron, interval)",
    ),
    "no trigger": (
        "election: {name: x}\njobs: [{id: a, command: ['true']}]\n",
        "needs exactly one of cron, interval, date (found: none)",
    ),
    "no target": (
        "election: {name: x}\njobs: [{id: a, interval: 1s}]\n",
        "needs exactly one of func, command (found: none)",
    ),
    "two targets": (
        "election: {name: x}\njobs: [{id: a, interval: 1s, command: ['true'], func: 'a:b'}]\n",
        "needs exactly one of func, command (found: func, command)",
    ),
    "duplicate job ids": (
        "election: {name: x}\njobs: [{id: a, interval: 1s, command: [t]}, "
        "{id: a, interval: 2s, command: [t]}]\n",
        "duplicate job id 'a'",
    ),
    "ttl not above renew_deadline": (
        "election: {name: x, ttl: 10s, renew_deadline: 10s}\n",
        "ttl (10s) must be greater than renew_deadline (10s)",
    ),
    "renew_deadline not above retry_period": (
        "election: {name: x, renew_deadline: 1s, retry_period: 2s}\n",
        "renew_deadline (1s) must be greater than retry_period (2s)",
    ),
    "malformed yaml": ("election: {name: x\n  bad: [\n", "malformed YAML at line"),
    "not a mapping": ("- just\n- a list\n", "expected a mapping at the top level"),
    "missing election": ("jobs: []\n", "election: required key is missing"),
    "bad timezone": (
        "election: {name: x}\nscheduler: {timezone: Mars/Olympus}\n",
        "unknown time zone",
    ),
    "bad listen": (
        "election: {name: x}\nhttp: {listen: nowhere}\n",
        "http.listen: expected host:port",
    ),
    "bad url option": (
        "election: {name: x, backend: 'file:///tmp/x.lock?colour=red'}\n",
        "unknown option 'colour'",
    ),
    "unknown mode": ("mode: round-robin\nelection: {name: x}\n", "mode: Input should be"),
    "lock_ttl in leader mode": (
        "election: {name: x}\njobs: [{id: a, interval: 1m, command: [t], lock_ttl: 10s}]\n",
        "jobs[0].lock_ttl applies only with mode: per-job",
    ),
    "lock in leader mode": (
        "election: {name: x}\njobs: [{id: a, interval: 1m, command: [t], lock: l}]\n",
        "jobs[0].lock applies only with mode: per-job",
    ),
    "per-job max_instances": (
        "mode: per-job\nelection: {name: x}\n"
        "jobs: [{id: a, interval: 1m, command: [t], max_instances: 2}]\n",
        "jobs[0].max_instances must be 1 with mode: per-job",
    ),
    "per-job lock_ttl not below the interval": (
        "mode: per-job\nelection: {name: x}\njobs: [{id: a, interval: 10s, command: [t]}]\n",
        "jobs[0]: scheduler.lock_ttl 30s is not shorter than the interval 10s",
    ),
    "per-job lock_ttl zero": (
        "mode: per-job\nelection: {name: x}\n"
        "jobs: [{id: a, interval: 10s, command: [t], lock_ttl: 0s}]\n",
        "lock_ttl must be greater than 0",
    ),
    "per-job shared lock": (
        "mode: per-job\nelection: {name: x}\njobs: [{id: a, interval: 1m, command: [t], lock: l}, "
        "{id: b, interval: 1m, command: [t], lock: l}]\n",
        "jobs[1]: lock 'l' is also the lock of job 'a'",
    ),
    "per-job lock ttl below the backend minimum": (
        "mode: per-job\nelection: {name: x, backend: 'etcd://127.0.0.1:1'}\n"
        "jobs: [{id: a, interval: 1m, command: [t], lock_ttl: 500ms}]\n",
        "jobs[0] (lock 'x.a', lock_ttl 0.5s): the etcd backend needs ttl >=",
    ),
    "per-job lock name the backend cannot hold": (
        "mode: per-job\nelection: {name: x, backend: 'kubernetes://default/'}\n"
        "jobs: [{id: Nightly_Export, cron: '0 3 * * *', command: [t]}]\n",
        "jobs[0] (lock 'x.Nightly_Export', lock_ttl 30s): kubernetes: election name",
    ),
    "command not a list": (
        "election: {name: x}\njobs: [{id: a, interval: 1s, command: 'echo hi'}]\n",
        "jobs[0].command",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_config_is_one_line_and_exit_2(
    name: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = BAD[name]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = main([command, "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("leadercron: error: ")
    assert expected in err, err
    assert "Traceback" not in err


def test_missing_file_and_missing_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    env_backup = os.environ.pop("LEADERCRON_CONFIG", None)
    try:
        assert main(["check"]) == 2
        assert "no config" in capsys.readouterr().err
    finally:
        if env_backup is not None:
            os.environ["LEADERCRON_CONFIG"] = env_backup


def test_bad_flag_is_one_line_exit_2() -> None:
    proc = subprocess.run(
        [PYTHON, "-m", "leadercron", "run", "--ttl"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "expected one argument" in proc.stderr


def test_inconsistent_flags_override_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    proc = subprocess.run(
        [PYTHON, "-m", "leadercron", "run", "-c", str(path), "--ttl", "5s"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"leadercron: error: {path}: election: ttl (5s) must be greater than renew_deadline "
        "(10s): a leader must stop dispatching before the backend can hand its lease to "
        "another replica"
    )


def test_good_config_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert main(["check", "--config", str(path)]) == 0
    assert "ok: election 'nightly-reports'" in capsys.readouterr().out


def test_per_job_config_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "per-job.yaml"
    path.write_text(
        "mode: per-job\nelection: {name: billing}\nscheduler: {lock_ttl: 20s}\n"
        "jobs: [{id: export, interval: 1m, command: [t]}, "
        "{id: sweep, interval: 5s, command: [t], lock: billing-sweep, lock_ttl: 2s}]\n"
    )
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok: per-job mode on file://, 2 job(s), locks: billing.export (20s), " in out
    assert "billing-sweep (2s)" in out
    # The mode can come from the environment or a flag too.
    leader = tmp_path / "leader.yaml"
    leader.write_text("election: {name: x}\njobs: [{id: a, interval: 1m, command: [t]}]\n")
    loaded = config_module.load(leader, env={"LEADERCRON_MODE": "Per_Job"})
    assert loaded.mode == "per-job"
    assert config_module.load(leader, env={}, flags={".mode": "per-job"}).mode == "per-job"
    loaded = config_module.load(leader, env={"LEADERCRON_SCHEDULER_LOCK_TTL": "5s"})
    assert loaded.scheduler.lock_ttl == 5.0
    assert main(["check", "--config", str(leader), "--mode", "per-job"]) == 0
    assert "ok: per-job mode" in capsys.readouterr().out


def test_env_and_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    env = {"LEADERCRON_ELECTION_TTL": "20s", "LEADERCRON_ELECTION_IDENTITY": "from-env"}
    loaded = config_module.load(path, env=env, flags={"election.identity": "from-flag"})
    assert loaded.election.ttl == 20.0
    assert loaded.election.identity == "from-flag"
    assert loaded.election.renew_deadline == 10.0
    assert loaded.http.listen == "127.0.0.1:9464"
    assert [job.id for job in loaded.jobs] == ["report", "tick", "once"]
    assert loaded.jobs[1].interval == 30.0


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("10s", 10.0), ("1m", 60.0), (3, 3.0), ("1.5", 1.5)]
)
def test_durations(text: object, seconds: float) -> None:
    loaded = config_module.build(
        {"election": {"name": "x", "retry_period": text, "renew_deadline": "2m", "ttl": "3m"}}
    )
    assert loaded.election.retry_period == seconds


def test_identity_defaults_to_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "leadercron-7d9f-abc")
    assert config_module.build({"election": {"name": "x"}}).election.identity == (
        "leadercron-7d9f-abc"
    )
    monkeypatch.delenv("POD_NAME")
    assert config_module.build({"election": {"name": "x"}}).election.identity.endswith(
        f"-{os.getpid()}"
    )


def test_missing_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "kazoo" else real(name, *a),
    )
    from leadercron.backends import from_url

    with pytest.raises(ConfigError, match=r"pip install 'leadercron\[zookeeper\]'"):
        from_url("zookeeper://127.0.0.1:2181")


def test_status_reports_leader_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leadercron.backends.file import FileBackend

    url = f"file://{tmp_path / 's.lock'}"
    assert main(["status", "--backend", url, "--election", "s"]) == 1
    assert "no leader" in capsys.readouterr().out
    lease = FileBackend(tmp_path / "s.lock").acquire("s", "holder-1", 30)
    assert lease is not None
    assert main(["status", "--backend", url, "--election", "s", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"leader": "holder-1"' in out
    assert f'"term": {lease.token}' in out
    assert main(["status", "--backend", "nosuch://x", "--election", "s"]) == 2


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_example_config_checks(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(example)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
