"""Static checks of the deploy files: they parse, and agree with the settings and the CLI.

No Docker, no cluster, no network: the files are read as YAML (and the Dockerfile as text).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from streamrec.app import cli
from streamrec.exits import Exit
from streamrec.settings import CONFIG_ENV, Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S_DIR = ROOT / "deploy" / "k8s"
K8S_FILES = sorted(K8S_DIR.glob("*.yaml"))

# Every file that may name a setting, as text (comments included: they must not lie either).
SETTINGS_FILES = [COMPOSE_FILE, DOCKERFILE, *K8S_FILES]
ENV_NAME = re.compile(r"\bSTREAMREC_[A-Z0-9_]+\b")
STREAMREC_SERVICES = ("trainer", "worker", "retrain", "serve")
#: The Deployments of deploy/k8s: component label (also the command it runs) -> name.
DEPLOYMENTS = {"worker": "streamrec-worker", "serve": "streamrec-serve"}


def _allowed_env_names() -> set[str]:
    return {"STREAMREC_" + name.upper() for name in Settings.model_fields} | {CONFIG_ENV}


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in K8S_FILES:
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def _k8s_one(kind: str) -> dict[str, Any]:
    found = [doc for doc in _k8s_docs() if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/k8s, found {len(found)}"
    return found[0]


def _env_dict(environment: Any) -> dict[str, str]:
    """A compose `environment:` (mapping or list of KEY=VALUE) as a dict of strings."""
    if environment is None:
        return {}
    if isinstance(environment, dict):
        return {str(k): "" if v is None else str(v) for k, v in environment.items()}
    return dict(item.partition("=")[::2] for item in environment)


def _argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _parse(argv: list[str], where: str) -> None:
    try:
        cli.build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse reports a bad command line by exiting
        pytest.fail(f"{where}: `streamrec {shlex.join(argv)}` does not parse (exit {exc.code})")


def _deployment(component: str = "worker") -> dict[str, Any]:
    """The Deployment of ``component`` (its app.kubernetes.io/component label)."""
    found = [
        d
        for d in _k8s_docs()
        if d["kind"] == "Deployment"
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {component} Deployment in deploy/k8s"
    assert found[0]["metadata"]["name"] == DEPLOYMENTS[component]
    return found[0]


def _deployment_containers(component: str = "worker") -> list[dict[str, Any]]:
    return _deployment(component)["spec"]["template"]["spec"]["containers"]


def _dockerfile_instruction(name: str) -> list[str]:
    """The exec-form (JSON) argument of the last `name` instruction of the Dockerfile."""
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip().upper().startswith(name + " ")
    ]
    assert lines, f"deploy/Dockerfile has no {name}"
    value = json.loads(lines[-1][len(name) :].strip())
    assert isinstance(value, list), f"{name} must use the exec (JSON) form"
    return value


# --- the files exist and parse ------------------------------------------------------------


def test_deploy_files_exist() -> None:
    for path in (COMPOSE_FILE, DOCKERFILE, ROOT / "deploy" / "README.md"):
        assert path.is_file(), path
    names = {p.name for p in K8S_FILES}
    assert "secret.example.yaml" in names
    assert {d["kind"] for d in _k8s_docs()} >= {"Deployment", "ConfigMap", "Secret"}


def test_k8s_documents_are_well_formed() -> None:
    for doc in _k8s_docs():
        assert doc.get("apiVersion"), doc
        assert doc.get("kind"), doc
        assert doc.get("metadata", {}).get("name"), doc


# --- docker-compose.yml -------------------------------------------------------------------


def test_compose_services() -> None:
    compose = _compose()
    assert "version" not in compose, "Compose spec files have no `version:`"
    assert {"kafka", "redis", "trainer", "worker"} <= set(compose["services"])


def test_kafka_is_official_image_kraft_combined() -> None:
    kafka = _compose()["services"]["kafka"]
    repo, _, tag = kafka["image"].partition(":")
    assert repo == "apache/kafka"
    assert re.fullmatch(r"4\.\d+(\.\d+)?", tag), f"expected a 4.x tag, got {tag!r}"

    env = _env_dict(kafka["environment"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    voter_ids = {v.split("@")[0] for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")}
    assert voter_ids == {env["KAFKA_NODE_ID"]}  # one node, and it is the controller
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "PLAINTEXT://kafka:9092" in advertised  # containers
    assert any(a.endswith("://127.0.0.1:9092") for a in advertised)  # the host
    listener_names = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    protocol_map = dict(
        p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert listener_names <= set(protocol_map)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listener_names

    test = kafka["healthcheck"]["test"]
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in " ".join(_argv(test))


def test_redis_is_healthchecked_and_local_only() -> None:
    redis = _compose()["services"]["redis"]
    # It holds state: persisted and never evicted (the worker's preflight refuses evicting).
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis["image"].startswith("redis:7")
    assert "ping" in _argv(redis["healthcheck"]["test"])
    assert all(str(p).startswith("127.0.0.1:") for p in redis.get("ports", []))


def test_compose_reaches_services_by_name() -> None:
    services = _compose()["services"]
    for name in STREAMREC_SERVICES:
        env = _env_dict(services[name].get("environment"))
        assert env.get("STREAMREC_KAFKA_BOOTSTRAP") == "kafka:9092", name
        assert env.get("STREAMREC_REDIS_URL", "").startswith("redis://redis:6379"), name


def test_trainer_then_worker_share_the_models_volume() -> None:
    compose = _compose()
    trainer, worker = compose["services"]["trainer"], compose["services"]["worker"]
    for service in (trainer, worker):
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert trainer["image"] == worker["image"]

    assert trainer["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert trainer["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert worker["restart"] == "unless-stopped"

    assert "models:/models" in trainer["volumes"]
    assert "models:/models:ro" in worker["volumes"]
    assert "models" in compose["volumes"]
    out = _argv(trainer["command"])
    assert out[out.index("--out") + 1].startswith("/models/")
    assert "--publish" in out


# --- every STREAMREC_* name is a setting, every value is valid ----------------------------


@pytest.mark.parametrize("path", SETTINGS_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_streamrec_env_names_are_settings(path: Path) -> None:
    unknown = set(ENV_NAME.findall(path.read_text())) - _allowed_env_names()
    assert not unknown, f"{path.relative_to(ROOT)}: not settings: {sorted(unknown)}"


def test_structured_env_names_are_settings() -> None:
    """The same check on the parsed files, so a name YAML builds (anchors) is seen too."""
    allowed = _allowed_env_names()
    names: set[str] = set()
    for name in STREAMREC_SERVICES:
        names |= set(_env_dict(_compose()["services"][name].get("environment")))
    names |= set(_k8s_one("ConfigMap")["data"])
    for component in DEPLOYMENTS:
        for container in _deployment_containers(component):
            names |= {item["name"] for item in container.get("env", [])}
    assert names, "no env vars found"
    assert all(n.startswith("STREAMREC_") for n in _k8s_one("ConfigMap")["data"])
    assert {n for n in names if n.startswith("STREAMREC_")} <= allowed


def _check_values(values: dict[str, str], where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("STREAMREC_"):
            monkeypatch.delenv(key)
    prefix = "STREAMREC_"
    fields = {
        k[len(prefix) :].lower(): v
        for k, v in values.items()
        if k.startswith(prefix) and k != CONFIG_ENV
    }
    # A file with no settings at all would validate trivially: that is a broken file here.
    assert fields, f"{where}: no STREAMREC_* settings found"
    try:
        Settings.model_validate(fields)
    except ValidationError as exc:
        pytest.fail(f"{where}: invalid settings: {exc}")


@pytest.mark.parametrize("service", STREAMREC_SERVICES)
def test_compose_settings_values_validate(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env_dict(_compose()["services"][service].get("environment"))
    _check_values(env, f"docker-compose.yml {service}", monkeypatch)


def test_configmap_settings_values_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {k: str(v) for k, v in _k8s_one("ConfigMap")["data"].items()}
    _check_values(data, "deploy/k8s ConfigMap", monkeypatch)


# --- every command parses with the real CLI -----------------------------------------------


@pytest.mark.parametrize("service", STREAMREC_SERVICES)
def test_compose_commands_parse(service: str) -> None:
    argv = _argv(_compose()["services"][service]["command"])
    assert argv[0] == {"trainer": "train", "worker": "worker", "retrain": "retrain",
                       "serve": "serve"}[service]  # fmt: skip
    _parse(argv, f"docker-compose.yml {service}")


@pytest.mark.parametrize("component", DEPLOYMENTS)
def test_k8s_container_args_parse(component: str) -> None:
    for container in _deployment_containers(component):
        assert "command" not in container, "keep the image's `streamrec` entrypoint"
        argv = [str(a) for a in container["args"]]
        assert argv[0] == component
        _parse(argv, f"deploy/k8s container {container['name']}")


def test_dockerfile_entrypoint_and_cmd() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "libgomp1" in text
    assert re.search(r"pip install .*\.\s*(\\|$)", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert _dockerfile_instruction("ENTRYPOINT")[-1] == "streamrec"
    cmd = _dockerfile_instruction("CMD")
    _parse(cmd, "deploy/Dockerfile CMD")


# --- Kubernetes worker --------------------------------------------------------------------


@pytest.mark.parametrize("component", DEPLOYMENTS)
def test_k8s_deployment(component: str) -> None:
    deployment = _deployment(component)
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    assert pod["terminationGracePeriodSeconds"] == 30
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()

    (container,) = pod["containers"]
    resources = container["resources"]
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[part]), part

    configmap = _k8s_one("ConfigMap")["metadata"]["name"]
    assert {"configMapRef": {"name": configmap}} in container["envFrom"]

    secret = _k8s_one("Secret")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    refs = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    ref = refs["STREAMREC_REDIS_PASSWORD"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret_keys

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    assert mounts["/models"]["name"] in volumes


def test_secret_example_has_no_placeholders() -> None:
    secret = _k8s_one("Secret")
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert values
    for key, value in values.items():
        assert value and not re.search(r"[<>{}$]|change.?me|todo|xxx", str(value), re.I), key


def test_retrain_is_scheduled_in_k8s_and_compose() -> None:
    jobs = [d for d in _k8s_docs() if d["kind"] == "CronJob"]
    assert len(jobs) == 1
    spec = jobs[0]["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    containers = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    for container in containers:
        argv = [str(a) for a in container["args"]]
        assert argv[0] == "retrain"
        _parse(argv, f"deploy/k8s cronjob {container['name']}")
    # exit 5 means "kept the live model": a verdict the job must not retry (test below)
    assert spec["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    compose = _compose()["services"]["retrain"]
    assert "--at" in _argv(compose["command"])


# --- Kubernetes: jobs, security, scraping, scaling (issue 14) ------------------------------


def _pod_templates() -> dict[str, dict[str, Any]]:
    """Every pod template in deploy/k8s by its owner's kind/name."""
    out = {}
    for doc in _k8s_docs():
        spec = doc.get("spec", {})
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if doc["kind"] in ("Deployment", "Job", "CronJob"):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = spec["template"]
    return out


def _k8s_named(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in deploy/k8s"
    return found[0]


def _rule_for_exit(rules: list[dict[str, Any]], code: int) -> str | None:
    """The action of the first podFailurePolicy rule matching exit ``code`` (Kubernetes
    applies the first rule that matches); None: the default (counted against backoffLimit)."""
    for rule in rules:
        codes = rule.get("onExitCodes")
        if codes is None:
            continue
        inside = code in codes["values"]
        if inside == (codes["operator"] == "In"):
            return str(rule["action"])
    return None


def test_retrain_kept_ends_the_job_at_once_without_another_pod() -> None:
    """Exit 5 must not re-run the retrain: ``Ignore`` would start a replacement pod and
    ``Count`` retry up to backoffLimit; ``FailJob`` ends the Job (deploy/README.md why)."""
    job = _k8s_one("CronJob")["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    (container,) = pod["containers"]
    rules = job["podFailurePolicy"]["rules"]
    for rule in rules:
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] == container["name"]
    assert _rule_for_exit(rules, Exit.KEPT) == "FailJob"
    for verdict in (Exit.USAGE, Exit.DATA, Exit.AUTH):  # retrying cannot help
        assert _rule_for_exit(rules, verdict) == "FailJob"
    for transient in (1, Exit.INFRA):  # a bug or an outage: retried, counted
        assert _rule_for_exit(rules, transient) is None
    assert 1 <= job["backoffLimit"] <= 3
    disruption = [r for r in rules if "onPodConditions" in r]
    assert disruption and disruption[0]["action"] == "Ignore"
    assert disruption[0]["onPodConditions"] == [{"type": "DisruptionTarget"}]


@pytest.mark.parametrize("owner", sorted(_pod_templates()))
def test_every_pod_runs_locked_down(owner: str) -> None:
    pod = _pod_templates()[owner]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True, owner
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, owner
        assert sc["readOnlyRootFilesystem"] is True, owner
        assert sc["capabilities"]["drop"] == ["ALL"], owner
        # The root filesystem is read-only: what it writes must be on a writable mount.
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]], owner
        configmap = {k: str(v) for k, v in _k8s_one("ConfigMap")["data"].items()}
        assert configmap["STREAMREC_HOME"].startswith("/tmp/")
        argv = [str(a) for a in c["args"]]
        for flag in ("--models-dir", "--out", "--report"):
            if flag in argv:
                path = argv[argv.index(flag) + 1]
                mount = mounts["/" + path.strip("/").split("/")[0]]
                assert not mount.get("readOnly"), f"{owner}: {flag} {path} is read-only"


@pytest.mark.parametrize("owner", ["CronJob/streamrec-retrain", "Job/streamrec-first-model"])
def test_training_pods_pin_openmp_to_their_cpu_limit(owner: str) -> None:
    (c,) = _pod_templates()[owner]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    ref = env["OMP_NUM_THREADS"]["valueFrom"]["resourceFieldRef"]
    assert ref == {"containerName": c["name"], "resource": "limits.cpu", "divisor": "1"}
    assert "cpu" in c["resources"]["limits"]


def test_all_jobs_commands_parse() -> None:
    for owner, template in _pod_templates().items():
        for c in template["spec"]["containers"]:
            assert "command" not in c, "keep the image's `streamrec` entrypoint"
            _parse([str(a) for a in c["args"]], f"deploy/k8s {owner}")


def test_a_fresh_install_gets_a_first_model_and_workers_wait_for_it() -> None:
    """No crash loop for want of a model: a Job trains one only if none is published, and
    the workers wait for it, alive (/livez) but not ready (/healthz)."""
    job = _k8s_named("Job", "streamrec-first-model")
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    argv = [str(a) for a in c["args"]]
    assert argv[0] == "train" and {"--publish", "--if-absent"} <= set(argv)
    assert pod["restartPolicy"] == "Never"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}  # fmt: skip
    worker_pod = _deployment("worker")["spec"]["template"]["spec"]
    for component in DEPLOYMENTS:  # the serving API loads the model the pointer names too
        other = _deployment(component)["spec"]["template"]["spec"]
        other_claims = {v["persistentVolumeClaim"]["claimName"] for v in other["volumes"]
                        if "persistentVolumeClaim" in v}  # fmt: skip
        assert claims == other_claims, component  # the path it publishes is valid there
    configmap = {k: str(v) for k, v in _k8s_one("ConfigMap")["data"].items()}
    assert float(configmap["STREAMREC_MODEL_WAIT_S"]) >= 3600
    (worker,) = worker_pod["containers"]
    assert worker["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_probed_paths_answer_as_the_probes_expect() -> None:
    """The worker's real endpoint (no services needed): alive and ready when serving;
    alive and not ready while it waits for a model."""
    import urllib.error
    import urllib.request

    from streamrec.worker.metrics import Metrics, MetricsServer

    (worker,) = _deployment_containers("worker")
    live = worker["livenessProbe"]["httpGet"]["path"]
    ready = worker["readinessProbe"]["httpGet"]["path"]
    m = Metrics()
    server = MetricsServer(m, "127.0.0.1:0")

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    try:
        assert (status(live), status(ready)) == (200, 200)
        m.wait_for("a model")
        assert (status(live), status(ready)) == (200, 503)
    finally:
        server.close()


@pytest.mark.parametrize("component", DEPLOYMENTS)
def test_voluntary_disruptions_leave_pods_running(component: str) -> None:
    deployment = _deployment(component)
    pdb = _k8s_named("PodDisruptionBudget", deployment["metadata"]["name"])
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    replicas = deployment["spec"]["replicas"]
    if "maxUnavailable" in pdb["spec"]:
        assert 1 <= pdb["spec"]["maxUnavailable"] < replicas
    else:
        assert 1 <= pdb["spec"]["minAvailable"] < replicas  # else a drain could never proceed


def test_prometheus_finds_the_workers() -> None:
    deployment = _deployment("worker")
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    bind = str(_k8s_one("ConfigMap")["data"]["STREAMREC_METRICS_BIND"])
    assert int(bind.rpartition(":")[2]) == ports["metrics"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    assert annotations["prometheus.io/path"] == "/metrics"

    service = _k8s_named("Service", "streamrec-worker")
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics" and port["port"] == ports["metrics"]
    monitor = _k8s_one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    # The alert rules expect the job the ServiceMonitor gives: the Service's name.
    rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    assert f'job="{service["metadata"]["name"]}"' in rules


def test_keda_scales_the_worker_group_on_its_lag() -> None:
    scaled = _k8s_one("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    deployment = _deployment("worker")
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    configmap = {k: str(v) for k, v in _k8s_one("ConfigMap")["data"].items()}
    assert meta["bootstrapServers"] == configmap["STREAMREC_KAFKA_BOOTSTRAP"]
    assert meta["consumerGroup"] == configmap["STREAMREC_CONSUMER_GROUP"]
    assert meta["topic"] == configmap["STREAMREC_TOPIC_EVENTS"]
    assert int(meta["lagThreshold"]) > 0
    # More workers than partitions would idle: never scale past the partition count.
    partitions = int(
        configmap.get(
            "STREAMREC_TOPIC_EVENTS_PARTITIONS",
            Settings.model_fields["topic_events_partitions"].default,
        )
    )
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert scaled["spec"]["maxReplicaCount"] <= partitions
    assert meta["allowIdleConsumers"] == "false"
    # A group with no committed offset starts where the worker starts.
    source = (ROOT / "worker" / "source.py").read_text()
    assert f'"auto.offset.reset": "{meta["offsetResetPolicy"]}"' in source


# --- the serving API (streamrec serve): Kubernetes and compose -----------------------------


def _serve_container() -> dict[str, Any]:
    (container,) = _deployment_containers("serve")
    return container


def _port_of(bind: str) -> int:
    return int(bind.rpartition(":")[2])


def _serve_bind() -> str:
    """The serving API's host:port in the pods: the ConfigMap's, else the setting's default."""
    data = {k: str(v) for k, v in _k8s_one("ConfigMap")["data"].items()}
    return data.get("STREAMREC_SERVE_BIND", Settings.model_fields["serve_bind"].default)


def test_serve_listens_where_its_probes_and_service_look() -> None:
    bind = _serve_bind()
    host = bind.rpartition(":")[0].strip("[]")
    # The default binds loopback: kubelet's probes and the Service could never reach it.
    assert host in ("0.0.0.0", "::", ""), f"STREAMREC_SERVE_BIND {bind} is not on the pod IP"
    container = _serve_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == _port_of(bind)
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", ports["http"]), probe
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # The model's factors are memory-mapped from the pointer's path: the claim, read-only.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    # preStop's pause must end well inside the grace period, or SIGTERM comes at its end.
    pod = _deployment("serve")["spec"]["template"]["spec"]
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep" and 0 < int(pause[1]) < pod["terminationGracePeriodSeconds"] / 2

    service = _k8s_named("Service", "streamrec-serve")
    labels = _deployment("serve")["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= labels.items()
    # Only the serving pods: a selector the workers' pods match too would send them requests.
    worker_labels = _deployment("worker")["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= worker_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ("http", ports["http"])
    assert port["port"] == ports["http"]


def test_compose_serve_is_published_and_healthchecked() -> None:
    compose = _compose()
    serve, worker = compose["services"]["serve"], compose["services"]["worker"]
    assert serve["image"] == worker["image"] and serve["build"] == worker["build"]
    assert serve["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert "models:/models:ro" in serve["volumes"]
    bind = _env_dict(serve["environment"])["STREAMREC_SERVE_BIND"]
    assert bind.rpartition(":")[0] == "0.0.0.0"  # reachable through the published port
    published = [str(p).rsplit(":", 2) for p in serve["ports"]]
    assert [(h, int(c)) for h, _, c in published] == [("127.0.0.1", _port_of(bind))]
    url = re.search(r"https?://[^'\"\s]+", " ".join(_argv(serve["healthcheck"]["test"])))
    assert url, "the healthcheck asks no URL"
    assert url.group(0) == f"http://127.0.0.1:{_port_of(bind)}/readyz"


def _healthcheck_exit(port: int) -> int:
    """Run the compose healthcheck's own command against ``port`` (its URL's port replaced)."""
    import subprocess
    import sys

    test = _argv(_compose()["services"]["serve"]["healthcheck"]["test"])
    assert test[:2] == ["CMD", "python"], test
    bind = _env_dict(_compose()["services"]["serve"]["environment"])["STREAMREC_SERVE_BIND"]
    argv = [a.replace(f":{_port_of(bind)}/", f":{port}/") for a in test[2:]]
    return subprocess.run([sys.executable, *argv], capture_output=True, timeout=30).returncode


def _http_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_serve_probed_paths_answer_before_it_can_serve() -> None:
    """The real app on uvicorn (no services): alive, and not ready while Redis does not
    answer and no model is loaded; the compose healthcheck fails on that answer."""
    import socket

    import redis

    from streamrec.app.web.asgi import create_app
    from streamrec.app.web.server import WebServer
    from streamrec.app.web.service import Service

    container = _serve_container()
    live = container["livenessProbe"]["httpGet"]["path"]
    ready = container["readinessProbe"]["httpGet"]["path"]
    with socket.socket() as s:  # a port nothing listens on: Redis refused at once
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    client = redis.Redis(host="127.0.0.1", port=closed, socket_timeout=1, socket_connect_timeout=1)
    settings = Settings.model_validate({"redis_url": f"redis://127.0.0.1:{closed}/0"})
    service = Service(settings, client=client, follow=False, follow_catalog=False)
    with WebServer(0).start(create_app(service), [service.close]) as server:
        assert _http_status(server.url + live) == 200
        assert _http_status(server.url + ready) == 503
        assert service.ready()[0] is False
        assert _healthcheck_exit(int(server.url.rpartition(":")[2])) != 0


@pytest.mark.integration
def test_serve_is_ready_once_a_model_is_published(stack: Any, small_model: Path) -> None:
    """As the pods run it (the pointer followed, the catalog topic read): not ready until a
    model is published, then ready; the compose healthcheck passes then."""
    from streamrec.app.web.asgi import create_app
    from streamrec.app.web.server import WebServer
    from streamrec.app.web.service import Service
    from streamrec.artifact import load_model
    from streamrec.connect import ensure_topics, redis_client
    from streamrec.model.publish import publish
    from tests.conftest import wait_for

    container = _serve_container()
    live = container["livenessProbe"]["httpGet"]["path"]
    ready = container["readinessProbe"]["httpGet"]["path"]
    settings = stack()
    ensure_topics(settings)
    service = Service(settings)
    with WebServer(0).start(create_app(service), [service.close]) as server:
        assert (_http_status(server.url + live), _http_status(server.url + ready)) == (200, 503)
        client = redis_client(settings)
        try:
            publish(load_model(small_model), settings, client, histories={}, announce=False)
        finally:
            client.close()
        wait_for(lambda: _http_status(server.url + ready) == 200, timeout_s=60, interval_s=0.2)
        assert _http_status(server.url + live) == 200
        assert _healthcheck_exit(int(server.url.rpartition(":")[2])) == 0


def test_compose_trainer_never_replaces_a_promoted_model() -> None:
    """`docker compose up` runs the one-shot trainer every time: --if-absent makes it a no-op
    once a model is published (tests/ops/test_train_if_absent.py runs it against Redis)."""
    argv = _argv(_compose()["services"]["trainer"]["command"])
    assert "--if-absent" in argv and "--publish" in argv


# --- Grafana dashboard ----------------------------------------------------------------------

DASHBOARD = ROOT / "deploy" / "grafana" / "streamrec.json"
#: What the issue asks the dashboard to show, and a metric each such panel must read.
DASHBOARD_NEEDS = {
    "events in": "streamrec_messages_total",
    "events applied": "streamrec_events_decoded_total",
    "dead letters": "streamrec_events_dead_lettered_total",
    "consumer lag": "streamrec_consumer_lag",
    "latency": "streamrec_event_to_redis_seconds_bucket",
    "stage timings": "streamrec_stage_seconds_bucket",
    "model version": "streamrec_model_info",
    "model swaps": "streamrec_model_swaps_total",
    "refused models": "streamrec_models_refused_total",
    "health": "streamrec_dependency_up",
    "retrain outcome": "streamrec_retrain_last_outcome",
}


def test_dashboard_is_a_grafana_dashboard_over_the_worker_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = []
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["description"], p["title"]
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            exprs.append(t["expr"])
            # Only variables the dashboard defines, or Grafana's own.
            used = set(re.findall(r"\$(\w+)", t["expr"]))
            assert used <= set(variables) | {"__rate_interval"}, (p["title"], used)
    text = "\n".join(exprs)
    for what, metric in DASHBOARD_NEEDS.items():
        assert metric in text, f"no panel shows {what} ({metric})"
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.99," in text
