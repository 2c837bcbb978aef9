"""deploy/ holds together: the Kubernetes manifests pass Kubernetes' own JSON schemas (strict:
no unknown fields) and the platform's rules; the compose file, systemd units, image, gunicorn
config and Grafana dashboard say what the platform needs; `manage.py check --deploy` is clean
with the production settings the manifests give.

`docker compose config` and kubeconform are not available here: YAML is parsed with PyYAML and
the manifests validated with kubernetes-validate, which ships the schemas.
"""

from __future__ import annotations

import configparser
import copy
import json
import os
import re
import runpy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from django.conf import settings
from saas_platform.lib import metrics

from tests.stacks import manage

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S_VERSION = kubernetes_validate.utils.latest_version()


def _manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def _of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _manifests() if d["kind"] == kind}


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return containers


def _command(workload: dict[str, Any]) -> list[str]:
    command: list[str] = _containers(workload)[0]["command"]
    return command


@pytest.mark.parametrize("doc", _manifests(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_each_manifest_passes_kubernetes_schemas_strictly(doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_refuses_a_misspelt_field():
    # Guards the test above against a validator that accepts anything.
    broken = copy.deepcopy(_of_kind("Deployment")["jobs-web"])
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_workloads_select_their_own_pods_run_non_root_and_read_the_shared_config():
    config_maps = set(_of_kind("ConfigMap"))
    workloads = [*_of_kind("Deployment").values(), *_of_kind("Job").values()]
    assert workloads
    for workload in workloads:
        spec = workload["spec"]
        labels = spec["template"]["metadata"]["labels"]
        if "selector" in spec and workload["kind"] == "Deployment":
            assert spec["selector"]["matchLabels"].items() <= labels.items()
        assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        for container in _containers(workload):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert "memory" in container["resources"]["limits"]
            refs = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
            assert refs
            assert set(refs) <= config_maps
            assert container["command"][:3] in (
                ["celery", "-A", "saas_platform"],
                ["gunicorn", "-c", "deploy/gunicorn.conf.py"],
                ["python", "manage.py", "migrate"],
            )


def test_web_is_probed_on_healthz_and_readyz_and_serves_every_tenant_host():
    web = _of_kind("Deployment")["jobs-web"]
    [container] = _containers(web)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    base = _of_kind("ConfigMap")["jobs-config"]["data"]["BASE_DOMAIN"]
    for probe in ("livenessProbe", "readinessProbe"):
        [host] = container[probe]["httpGet"]["httpHeaders"]
        assert host == {"name": "Host", "value": base}  # the public host, where they live
    [ingress] = _of_kind("Ingress").values()
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts == {base, f"*.{base}"}
    services = _of_kind("Service")
    for rule in ingress["spec"]["rules"]:
        for route in rule["http"]["paths"]:
            assert route["backend"]["service"]["name"] in services


def test_one_beat_and_a_worker_deployment_for_every_queue_scaled_on_its_depth():
    deployments = _of_kind("Deployment")
    beats = [d for d in deployments.values() if _command(d)[3] == "beat"]
    [beat] = beats
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"  # never two during a rollout
    queues_served = {}
    for name, deployment in deployments.items():
        command = _command(deployment)
        if command[3] == "worker":
            queues_served[command[command.index("-Q") + 1]] = name
            assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
    assert set(queues_served) == {queue.name for queue in settings.CELERY_TASK_QUEUES}
    autoscalers = _of_kind("HorizontalPodAutoscaler").values()
    scaled = {hpa["spec"]["scaleTargetRef"]["name"]: hpa for hpa in autoscalers}
    for queue, deployment in queues_served.items():
        [metric] = scaled[deployment]["spec"]["metrics"]
        assert metric["external"]["metric"]["name"] == "jobs_queue_depth"
        assert metric["external"]["metric"]["selector"]["matchLabels"] == {"queue": queue}
    [migrate] = _of_kind("Job").values()
    assert _command(migrate)[:3] == ["python", "manage.py", "migrate"]


def test_the_compose_file_runs_every_process_from_one_image():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "web", "worker", "heavy", "beat", "flower"} <= set(services)
    app = {name: s for name, s in services.items() if "build" in s}
    assert {s["build"]["dockerfile"] for s in app.values()} == {"deploy/Dockerfile"}
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, (name, needed)
        assert service.get("deploy", {}).get("replicas", 1) == 1 or name != "beat"
    assert services["heavy"]["command"][services["heavy"]["command"].index("-Q") + 1] == "heavy"
    assert services["worker"]["command"][services["worker"]["command"].index("-Q") + 1] == "default"
    assert services["beat"]["command"][3] == "beat"
    assert services["flower"]["command"][3] == "flower"
    for service in app.values():
        assert service["environment"]["LOG_FORMAT"] == "json"
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:")


def test_the_image_is_multi_stage_non_root_and_without_compilers_or_embedded_servers():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    stages = re.split(r"(?m)^FROM ", dockerfile)[1:]
    assert len(stages) == 2
    final = stages[-1]
    assert "build-essential" not in final
    assert "apt-get" not in final
    assert re.search(r"(?m)^USER 10001$", final)
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs
    assert not any("embedded" in line or "dev" in line for line in installs)
    assert "COPY --from=build /venv /venv" in final


def test_systemd_units_run_the_platforms_processes_with_one_beat():
    units = {path.name: path for path in (DEPLOY / "systemd").glob("*.service")}
    assert {"jobs-web.service", "jobs-worker@.service", "jobs-beat.service"} <= set(units)
    for name, path in units.items():
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.read_string(path.read_text())
        service = parser["Service"]
        assert service["User"] == "jobs", name
        assert service["EnvironmentFile"] == "/etc/jobs/jobs.env"
        assert "saas_platform" in service["ExecStart"] or "manage.py" in service["ExecStart"]
    worker = configparser.ConfigParser(interpolation=None)
    worker.read_string(units["jobs-worker@.service"].read_text())
    assert "-Q %i" in worker["Service"]["ExecStart"]
    assert worker["Service"]["KillSignal"] == "SIGTERM"


def test_gunicorn_config_sets_the_metrics_directory_before_any_worker(tmp_path, monkeypatch):
    target = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(target))
    (target).mkdir()
    (target / "stale_counter_1.db").write_bytes(b"old")
    config = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    assert config["worker_class"] == "sync"
    assert callable(config["child_exit"])
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(target)
    assert list(target.iterdir()) == []  # a previous run's files would be counted again


def test_the_dashboard_charts_only_metrics_the_platform_exports():
    dashboard = json.loads((DEPLOY / "grafana" / "jobs-dashboard.json").read_text())
    exported = {"jobs_queue_depth"}
    for value in vars(metrics).values():
        name = getattr(value, "_name", None)
        if isinstance(name, str):
            exported |= {name, f"{name}_total", f"{name}_bucket", f"{name}_count"}
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b((?:jobs?|reconciler|beat)_[a-z_]+)\b", target["expr"]))
    assert used
    assert used <= exported, used - exported


def test_check_deploy_is_clean_with_the_manifests_production_settings():
    config = _of_kind("ConfigMap")["jobs-config"]["data"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DEBUG", "SECURE_"))},
        **config,
        # The Secret's keys; nothing connects during the check.
        "SECRET_KEY": "k" * 20 + "-production-shaped-secret-key-of-fifty-chars",
        "DATABASE_URL": "postgres://jobs@db.internal:5432/jobs",
        "REDIS_URL": "redis://redis.internal:6379/0",
        "METRICS_TOKEN": "token",
    }
    env.pop("TEST_DATABASE_NAME", None)
    output = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert "no issues" in output
