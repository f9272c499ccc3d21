"""deploy/k8s/kinesis/: the ScaledObject that scales a Kinesis-reading eventrun on the
stream's shard count (KEDA's aws-kinesis-stream scaler), checked offline as the other
manifests are: strict validation against KEDA's vendored CRD schema, its target and
authentication resolving, and its trigger watching the stream the app next to it reads."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import yaml

from eventrun.config import load_config
from tests.deploy.test_deploy import K8S, k8s_objects, keda_validator, run_check

KINESIS = K8S / "kinesis"
# The aws-kinesis-stream scaler's metadata keys (keda.sh/docs/latest/scalers/aws-kinesis)
SCALER_KEYS = {"streamName", "awsRegion", "awsEndpoint", "shardCount", "activationShardCount"}


def objects() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((KINESIS / "keda-scaledobject.yaml").read_text())
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs if d}


def kinesis_trigger(scaled: dict[str, Any]) -> dict[str, Any]:
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "aws-kinesis-stream"]
    return dict(trigger)


def test_scaled_object_validates_strictly() -> None:
    scaled = objects()["ScaledObject/eventrun"]
    errors = [e.message for e in keda_validator().iter_errors(scaled)]
    assert not errors, errors
    numeric = copy.deepcopy(scaled)
    kinesis_trigger(numeric)["metadata"]["shardCount"] = 2  # KEDA wants strings
    assert list(keda_validator().iter_errors(numeric))


def test_it_replaces_the_default_scaled_object_for_the_same_deployment() -> None:
    scaled = objects()["ScaledObject/eventrun"]
    default = k8s_objects()["ScaledObject/eventrun"]
    assert scaled["metadata"] == default["metadata"], "same name: applied instead of it"
    assert scaled["spec"]["scaleTargetRef"] == default["spec"]["scaleTargetRef"]
    target = scaled["spec"]["scaleTargetRef"]
    assert f"{target['kind']}/{target['name']}" in k8s_objects()
    assert 1 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]


def test_trigger_watches_the_stream_the_app_reads() -> None:
    objs = objects()
    trigger = kinesis_trigger(objs["ScaledObject/eventrun"])
    meta = trigger["metadata"]
    assert set(meta) <= SCALER_KEYS, set(meta) - SCALER_KEYS
    assert {"streamName", "awsRegion"} <= set(meta)
    assert all(isinstance(v, str) for v in meta.values())
    assert int(meta["shardCount"]) >= 1
    auth = f"TriggerAuthentication/{trigger['authenticationRef']['name']}"
    assert (
        objs[auth]["metadata"]["namespace"]
        == objs["ScaledObject/eventrun"]["metadata"]["namespace"]
    )
    assert objs[auth]["spec"] == {"podIdentity": {"provider": "aws"}}

    config = load_config(KINESIS / "eventrun.yaml", {}).config
    streams = [
        (t.spec, config.connections.kinesis[t.spec.connection])
        for fn in config.functions.values()
        for t in fn.triggers
        if t.kind == "kinesis"
    ]
    assert any(
        spec.stream == meta["streamName"] and conn.region == meta["awsRegion"]
        for spec, conn in streams
    ), "the scaler must watch a stream (and region) the app reads"
    assert str(config.store.url).startswith("redis://"), "replicas share leases in Redis"


def test_app_passes_eventrun_check(tmp_path: Path) -> None:
    shutil.copy(KINESIS / "eventrun.yaml", tmp_path / "eventrun.yaml")
    shutil.copy(KINESIS / "handlers.py", tmp_path / "handlers.py")
    result = run_check(tmp_path / "eventrun.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
