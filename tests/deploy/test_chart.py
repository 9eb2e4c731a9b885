"""The Helm chart (helm/leadercron): lint, render and validate with the real tools.

Rendering and linting use Helm's own Go SDK through ``helm-python-sdk`` (values.schema.json
included); every rendered manifest is validated with ``kubernetes-validate --strict`` against
Kubernetes 1.30; the rendered ConfigMap is checked by ``leadercron check`` itself. Values files
live in ``tests/deploy/values/`` (``invalid/`` holds ones the schema must reject).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk is not installed (scripts/install-deploy-tools.sh)"
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "leadercron"
VALUES = Path(__file__).resolve().parent / "values"
KUBE_VERSION = "1.30.0"
RELEASE, NAMESPACE = "demo", "jobs"
FULLNAME = "demo-leadercron"
SECRET_ROOT = "/var/run/secrets/leadercron/"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

CASES = sorted(p.stem for p in VALUES.glob("*.yaml"))
INVALID = sorted(p.stem for p in (VALUES / "invalid").glob("*.yaml"))


def _values(case: str) -> dict[str, Any]:
    data = yaml.safe_load((VALUES / f"{case}.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _tool(name: str) -> str:
    """A console script of the test environment: next to this Python, else on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/install-deploy-tools.sh)")
    return found


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    helm.disable_logging()
    with helm.Chart.load(CHART) as loaded:
        yield loaded


class Rendered:
    """The manifests of one render, by kind and name."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.docs: list[dict[str, Any]] = []
        for name, text in sorted(files.items()):
            if name.endswith("NOTES.txt"):
                continue
            self.docs.extend(d for d in yaml.safe_load_all(text) if d)

    @property
    def notes(self) -> str:
        return next(v for k, v in self.files.items() if k.endswith("NOTES.txt"))

    def kinds(self) -> set[str]:
        return {d["kind"] for d in self.docs}

    def get(self, kind: str) -> dict[str, Any]:
        found = [d for d in self.docs if d["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.get("Deployment")

    @property
    def container(self) -> dict[str, Any]:
        containers = self.deployment["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    @property
    def env(self) -> dict[str, Any]:
        return {e["name"]: e for e in self.container["env"]}

    @property
    def config_text(self) -> str:
        return self.get("ConfigMap")["data"]["config.yaml"]

    @property
    def config(self) -> dict[str, Any]:
        data = yaml.safe_load(self.config_text)
        assert isinstance(data, dict)
        return data


def render(chart: Any, values: dict[str, Any] | None) -> Rendered:
    return Rendered(chart.render(values=values, name=RELEASE, namespace=NAMESPACE))


@pytest.fixture(scope="module")
def rendered(chart: Any) -> dict[str, Rendered]:
    return {case: render(chart, _values(case)) for case in CASES}


# -- helm lint ----------------------------------------------------------------------------------


def _lint_problems(values: dict[str, Any] | None) -> list[str]:
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = list(report["errors"])
    problems += [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return problems


@pytest.mark.parametrize("case", CASES)
def test_lint(case: str) -> None:
    assert _lint_problems(_values(case)) == []


def test_lint_default_values() -> None:
    assert _lint_problems(None) == []


# -- every manifest is valid Kubernetes 1.30 ------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_manifests_validate_strictly(
    case: str, rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    manifest = tmp_path / f"{case}.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered[case].docs, sort_keys=False))
    proc = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "-k", KUBE_VERSION, str(manifest)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for line in output.splitlines():
        if line.startswith("INFO"):
            continue
        # Only the Prometheus Operator's custom resources have no schema to check against.
        assert line.startswith("WARN"), line
        assert any(f"kind {k} " in line for k in CRD_KINDS), line
    validated = len(re.findall(r"^INFO .* passed", output, re.MULTILINE))
    assert validated == len([d for d in rendered[case].docs if d["kind"] not in CRD_KINDS])


# -- the rendered config is a valid leadercron config ------------------------------------------


def _check_config(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``leadercron check`` on a rendered config file, as a pod would load it.

    Secret files the chart mounts under /var/run/secrets/leadercron/ are replaced by
    placeholder files, and the backends' password variables are set, so that the backends'
    own URL checks (files exist, a user has a password) pass as they would in the pod.
    """
    secrets = tmp_path / "secrets"
    for path in set(re.findall(re.escape(SECRET_ROOT) + r"[\w./-]+", text)):
        placeholder = secrets / path.removeprefix(SECRET_ROOT)
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        placeholder.write_text("placeholder\n")
    config = tmp_path / "config.yaml"
    config.write_text(text.replace(SECRET_ROOT, f"{secrets}/"))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LEADERCRON_") and k != "POD_NAME"
    }
    env.update(
        POD_NAME=f"{FULLNAME}-7d9f8b6c5d-x2x4q",
        LEADERCRON_ETCD_PASSWORD="placeholder",
        LEADERCRON_REDIS_PASSWORD="placeholder",
    )
    return subprocess.run(
        [sys.executable, "-m", "leadercron", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )


@pytest.mark.parametrize("case", CASES)
def test_config_passes_leadercron_check(
    case: str, rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    from leadercron.backends import schemes
    from leadercron.config import Config

    text = rendered[case].config_text
    scheme = rendered[case].config["election"]["backend"].partition("://")[0]
    if scheme in schemes():
        proc = _check_config(text, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("ok: "), proc.stdout
    else:
        # A scheme whose backend is not in this checkout: everything but the backend URL is
        # still validated by the config model itself.
        Config.model_validate(yaml.safe_load(text))


def test_config_carries_the_values(rendered: dict[str, Rendered]) -> None:
    config = rendered["custom-jobs"].config
    assert config["election"] == {
        "name": "platform/cron",
        "backend": (
            "consul://consul-server.consul:8500?token_file=/var/run/secrets/leadercron/backend/token"
        ),
        "ttl": "30s",
        "renew_deadline": "20s",
        "retry_period": "5s",
    }
    assert "identity" not in config["election"]  # each pod's own name, from POD_NAME
    assert config["http"] == {"listen": "0.0.0.0:9464"}
    assert config["scheduler"]["on_lost"] == "cancel"
    assert config["log"] == {"level": "debug", "format": "text"}
    jobs = {job["id"]: job for job in config["jobs"]}
    assert set(jobs) == {"report", "compact", "migrate-once"}
    assert jobs["compact"]["command"] == ["/scripts/compact.sh", "--all"]
    assert jobs["compact"]["max_instances"] == 2
    assert jobs["report"] == {
        "id": "report",
        "cron": "30 6 * * *",
        "func": "leadercron.examples:report",
    }
    # The default election name is the release's full name.
    assert rendered["redis-secret-file"].config["election"]["name"] == FULLNAME


# -- the Deployment -----------------------------------------------------------------------------


def test_defaults_three_replicas_probes_and_security(rendered: dict[str, Rendered]) -> None:
    r = rendered["redis-secret"]
    spec = r.deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    c = r.container
    assert c["args"] == ["run", "--config", "/etc/leadercron/config.yaml"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "cpu" not in c["resources"]["limits"]
    assert c["resources"]["limits"]["memory"] == "256Mi"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["config"] == {"name": "config", "mountPath": "/etc/leadercron", "readOnly": True}
    assert mounts["tmp"]["mountPath"] == "/tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    assert volumes["config"]["configMap"]["name"] == FULLNAME
    # The identity comes from the pod's name through the downward API.
    assert r.env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    spread = pod["topologySpreadConstraints"]
    assert [t["topologyKey"] for t in spread] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    assert all(t["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"] for t in spread)
    assert pod["automountServiceAccountToken"] is False
    assert r.deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


@pytest.mark.parametrize(
    ("case", "seconds"),
    [("redis-secret", 45), ("custom-jobs", 135), ("file-single", 45)],
)
def test_termination_grace_follows_grace_period(
    case: str, seconds: int, rendered: dict[str, Rendered]
) -> None:
    pod = rendered[case].deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == seconds


@pytest.mark.parametrize(
    ("grace", "margin", "expected"),
    [("500ms", 15, 16), (12.5, 0, 13), ("1h", 5, 3605), ("7", 10, 17), (".5s", 1, 2)],
)
def test_termination_grace_parses_durations(
    chart: Any, grace: object, margin: int, expected: int
) -> None:
    values = _values("redis-secret")
    values["config"]["scheduler"] = {"grace_period": grace}
    values["terminationGracePeriodMarginSeconds"] = margin
    pod = render(chart, values).deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == expected
    values["terminationGracePeriodSeconds"] = 99
    pod = render(chart, values).deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 99


def test_custom_values_reach_the_pod(rendered: dict[str, Rendered]) -> None:
    r = rendered["custom-jobs"]
    spec = r.deployment["spec"]
    assert spec["replicas"] == 5
    pod = spec["template"]["spec"]
    assert pod["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "DoNotSchedule"
    assert len(pod["topologySpreadConstraints"]) == 1
    assert r.env["TZ"] == {"name": "TZ", "value": "Europe/Berlin"}
    mounts = {m["name"]: m["mountPath"] for m in r.container["volumeMounts"]}
    assert mounts["scripts"] == "/scripts"
    assert "startupProbe" not in r.container
    assert pod["shareProcessNamespace"] is True
    assert (
        "shareProcessNamespace"
        not in rendered["redis-secret"].deployment["spec"]["template"]["spec"]
    )
    assert r.get("PodDisruptionBudget")["spec"]["minAvailable"] == 3
    assert "maxUnavailable" not in r.get("PodDisruptionBudget")["spec"]
    assert "Service" not in r.kinds()
    image = rendered["etcd-tls"].container["image"]
    assert image == (
        "registry.example.com/platform/leadercron@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert rendered["redis-secret"].container["image"] == "leadercron:0.1.0"


def test_single_file_replica(rendered: dict[str, Rendered]) -> None:
    r = rendered["file-single"]
    assert r.deployment["spec"]["replicas"] == 1
    assert "PodDisruptionBudget" not in r.kinds()
    assert "topologySpreadConstraints" not in r.deployment["spec"]["template"]["spec"]


# -- credentials --------------------------------------------------------------------------------


def test_secret_as_env(rendered: dict[str, Rendered]) -> None:
    r = rendered["redis-secret"]
    assert r.env["LEADERCRON_REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "redis-auth", "key": "redis-password"}
    }
    assert r.config["election"]["backend"] == "redis://redis-master.redis:6379/2"
    assert "backend-secret" not in {
        v["name"] for v in r.deployment["spec"]["template"]["spec"]["volumes"]
    }
    etcd = rendered["etcd-tls"]
    assert etcd.env["LEADERCRON_ETCD_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "etcd-leadercron",
        "key": "etcd-password",
    }
    volumes = {v["name"]: v for v in etcd.deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["backend-tls"]["secret"]["secretName"] == "etcd-ca"
    mounts = {m["name"]: m for m in etcd.container["volumeMounts"]}
    assert mounts["backend-tls"]["mountPath"] == "/var/run/secrets/leadercron/tls"


def test_secret_as_file(rendered: dict[str, Rendered]) -> None:
    r = rendered["redis-secret-file"]
    assert r.config["election"]["backend"] == (
        "redis://redis-master.redis:6379/0?prefix=jobs:"
        "&password_file=/var/run/secrets/leadercron/backend/password"
    )
    assert not any(name.startswith("LEADERCRON_") for name in r.env)
    volumes = {v["name"]: v for v in r.deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["backend-secret"]["secret"]["secretName"] == "redis-auth"
    mounts = {m["name"]: m for m in r.container["volumeMounts"]}
    assert mounts["backend-secret"] == {
        "name": "backend-secret",
        "mountPath": "/var/run/secrets/leadercron/backend",
        "readOnly": True,
    }
    # No Secret is ever rendered by the chart.
    assert all("Secret" not in r.kinds() for r in rendered.values())


# -- RBAC only for the kubernetes:// backend ------------------------------------------------------


def test_rbac_only_with_the_kubernetes_backend(chart: Any, rendered: dict[str, Rendered]) -> None:
    r = rendered["kubernetes"]
    role = r.get("Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "watch", "create", "update"],
        }
    ]
    binding = r.get("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": FULLNAME,
    }
    account = r.get("ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    pod = r.deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account
    assert pod["automountServiceAccountToken"] is True
    assert r.env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    for case, other in rendered.items():
        if case != "kubernetes":
            assert not other.kinds() & {"Role", "RoleBinding"}, case
    values = _values("kubernetes")
    values["rbac"] = {"create": False}
    without = render(chart, values)
    assert not without.kinds() & {"Role", "RoleBinding"}
    assert "rbac.create is false" in without.notes


def test_rbac_follows_the_lease_namespace(chart: Any) -> None:
    values = _values("kubernetes")
    values["config"]["election"]["backend"] = "kubernetes://batch/?timeout=3s"
    r = render(chart, values)
    assert r.get("Role")["metadata"]["namespace"] == "batch"
    binding = r.get("RoleBinding")
    assert binding["metadata"]["namespace"] == "batch"
    assert binding["subjects"][0]["namespace"] == NAMESPACE  # the pods' ServiceAccount
    assert r.deployment["metadata"]["namespace"] == NAMESPACE


# -- monitoring ---------------------------------------------------------------------------------


def test_service_monitor_on_and_off(rendered: dict[str, Rendered]) -> None:
    r = rendered["monitoring"]
    monitor = r.get("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    service = r.get("Service")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert service["spec"]["ports"][0]["name"] == "metrics"
    for case, other in rendered.items():
        if case != "monitoring":
            assert not other.kinds() & CRD_KINDS, case


def _alert_names(groups: list[dict[str, Any]]) -> list[str]:
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_prometheus_rule_has_the_project_alerts(
    rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    chart_copy = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    groups = rendered["monitoring"].get("PrometheusRule")["spec"]["groups"]
    expected = [a for a in _alert_names(chart_copy["groups"]) if a != "LeadercronMissedFires"]
    assert _alert_names(groups) == [*expected, "LeadercronSyncStale"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    assert rules["LeadercronNoLeader"]["expr"] == "max by (election) (leadercron_is_leader) == 0"
    assert "{{ $labels.election }}" in rules["LeadercronNoLeader"]["annotations"]["summary"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/install-servers.sh installs it)")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}))
    proc = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_chart_alerts_match_ops_alerts() -> None:
    ops = ROOT / "ops" / "prometheus" / "alerts.yaml"
    if not ops.exists():
        pytest.skip("ops/prometheus/alerts.yaml is not in this checkout")
    chart_copy = CHART / "files" / "alerts.yaml"
    assert yaml.safe_load(chart_copy.read_text()) == yaml.safe_load(ops.read_text()), (
        "helm/leadercron/files/alerts.yaml differs from ops/prometheus/alerts.yaml: "
        "cp ops/prometheus/alerts.yaml helm/leadercron/files/alerts.yaml"
    )


# -- NOTES.txt ----------------------------------------------------------------------------------


def test_notes_show_no_credentials(chart: Any) -> None:
    values = _values("etcd-tls")
    values["config"]["election"]["backend"] = "etcd://leadercron@etcd:2379/jobs"
    notes = render(chart, values).notes
    assert "leadercron status --backend 'etcd://***@etcd:2379/jobs'" in notes
    assert f"--election '{FULLNAME}'" in notes


# -- values that must be rejected ---------------------------------------------------------------


@pytest.mark.parametrize("case", INVALID)
def test_schema_rejects(chart: Any, case: str) -> None:
    values = yaml.safe_load((VALUES / "invalid" / f"{case}.yaml").read_text())
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmError, match="schema"):
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    assert _lint_problems(values), "helm lint accepted invalid values"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "config.election.backend is required"),
        (
            {"config": {"election": {"backend": "file:///tmp/x.lock"}}},
            "only coordinates processes in one pod",
        ),
        (
            {"config": {"election": {"backend": "redis://:s3cret@redis:6379"}}},
            "must not contain a password",
        ),
        (
            {"config": {"election": {"backend": "consul://consul:8500?token=abc"}}},
            "must not contain a password",
        ),
        (
            {"config": {"election": {"backend": "kubernetes:///", "name": "Nightly_Report"}}},
            "the election name is the Lease's name",
        ),
        (
            {
                "config": {"election": {"backend": "kubernetes:///"}},
                "backendAuth": {"existingSecret": "x", "mode": "file"},
            },
            "takes no password_file option",
        ),
        (
            {
                "config": {"election": {"backend": "kubernetes:///"}},
                "backendAuth": {"existingSecret": "x"},
            },
            "set backendAuth.envName",
        ),
        (
            {
                "config": {"election": {"backend": "redis://redis:6379"}},
                "podDisruptionBudget": {"minAvailable": 2},
            },
            "not both",
        ),
        (
            {
                "config": {"election": {"backend": "redis://redis:6379"}},
                "service": {"enabled": False},
                "metrics": {"serviceMonitor": {"enabled": True}},
            },
            "needs service.enabled",
        ),
    ],
)
def test_render_rejects(chart: Any, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


def test_user_given_password_file_is_kept(chart: Any) -> None:
    values = _values("redis-secret-file")
    values["config"]["election"]["backend"] = "redis://redis:6379?password_file=/custom/pw"
    r = render(chart, values)
    assert r.config["election"]["backend"] == "redis://redis:6379?password_file=/custom/pw"


# -- the chart's README documents every value ---------------------------------------------------


def _leaf_keys(data: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(data, dict) and data:
        for key, value in data.items():
            yield from _leaf_keys(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    # A value is documented in a row of its own, or (for Kubernetes objects passed through as
    # they are, like `resources`) by the row of the object that contains it.
    missing = [
        key
        for key in _leaf_keys(defaults)
        if not any(".".join(key.split(".")[:n]) in documented for n in range(1, key.count(".") + 2))
    ]
    assert missing == []
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    assert set(defaults) <= set(schema["properties"])
