"""``kubectl apply -k deploy/k8s`` without kubectl: the kustomization rendered, then checked.

:func:`render` does what kustomize does for the fields deploy/k8s/kustomization.yaml
uses (``resources``, ``namespace``, ``labels``) and refuses any other field, so a new
kustomize feature in the file fails here until it is rendered too (it matched
``kubectl kustomize deploy/k8s``, kustomize v5.5, object for object, when written).
The rendered set must be what a cluster accepts: each object valid against its
schema (strict), one object per kind/namespace/name, everything namespaced in the
kustomization's namespace, and every reference (ConfigMap, Secret, selectors, the
ScaledObject's target) resolving inside the rendered set.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.test_deploy import K8S, K8S_VERSION, keda_validator

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


class Unsupported(ValueError):
    """The kustomization uses a field :func:`render` does not implement."""


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize folder`` prints, for the supported fields."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise Unsupported(
            f"{folder / 'kustomization.yaml'}: {sorted(unknown)} not rendered by "
            "tests/deploy/test_kustomize.py; implement them in render()"
        )
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = folder / resource
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    namespace = kustomization.get("namespace")
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        if namespace and obj["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = namespace
        for label in kustomization.get("labels", []):
            unknown = set(label) - {"pairs", "includeSelectors", "includeTemplates"}
            if unknown:
                raise Unsupported(f"labels: {sorted(unknown)} not rendered")
            pairs = label["pairs"]
            meta.setdefault("labels", {}).update(pairs)
            template = obj.get("spec", {}).get("template")
            if template and (label.get("includeTemplates") or label.get("includeSelectors")):
                template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            selector = obj.get("spec", {}).get("selector")
            if label.get("includeSelectors") and isinstance(selector, dict):
                selector.setdefault("matchLabels", selector).update(pairs)
    return objects


def rendered() -> dict[tuple[str, str, str], dict[str, Any]]:
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for obj in render(K8S):
        key = (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        assert key not in out, f"{key} defined twice"
        out[key] = obj
    return out


def test_rendering_applies_namespace_and_labels() -> None:
    objects = rendered()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    namespace = kustomization["namespace"]
    assert ("Namespace", "", namespace) in objects
    for (kind, ns, name), obj in objects.items():
        if kind not in CLUSTER_SCOPED:
            assert ns == namespace, (kind, name)
        for label in kustomization["labels"]:
            assert label["pairs"].items() <= obj["metadata"]["labels"].items(), (kind, name)


def test_rendered_objects_validate() -> None:
    keda = keda_validator()
    for (kind, _, name), obj in rendered().items():
        if obj["apiVersion"].startswith("keda.sh/"):
            errors = [e.message for e in keda.iter_errors(obj)]
            assert not errors, (kind, name, errors)
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def pod_references(pod: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret a pod template names."""
    out = set()
    for volume in pod["spec"].get("volumes", []):
        if "configMap" in volume:
            out.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            out.add(("Secret", volume["secret"]["secretName"]))
    for container in pod["spec"]["containers"]:
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                out.add(("Secret", source["secretRef"]["name"]))
            if "configMapRef" in source:
                out.add(("ConfigMap", source["configMapRef"]["name"]))
    return out


def test_rendered_references_resolve() -> None:
    objects = rendered()
    (deployment_key,) = [k for k in objects if k[0] == "Deployment"]
    deployment = objects[deployment_key]
    ns = deployment_key[1]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    references = pod_references(pod)
    assert references
    for kind, name in references:
        assert (kind, ns, name) in objects, (kind, name)
    for key, obj in objects.items():
        if key[0] in ("Service", "PodDisruptionBudget"):
            selector = obj["spec"]["selector"]
            assert selector.get("matchLabels", selector).items() <= labels.items(), key
            assert key[1] == ns
        if key[0] == "ScaledObject":
            target = obj["spec"]["scaleTargetRef"]
            assert (target.get("kind", "Deployment"), key[1], target["name"]) in objects


def test_render_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for extra in ({"images": [{"name": "x", "newTag": "1"}]}, {"commonLabels": {"a": "b"}}):
        folder = tmp_path / next(iter(extra))
        folder.mkdir()
        changed = copy.deepcopy(kustomization) | extra
        changed["resources"] = []
        (folder / "kustomization.yaml").write_text(yaml.safe_dump(changed))
        with pytest.raises(Unsupported):
            render(folder)
