"""deploy/compose.test.yaml, offline (fast; part of ``make test``).

The override the container tests run (``make deploy-test``) swaps the public images for
the ones ``scripts/container-deps.sh`` builds and adds only what podman needs here; it
must stay a valid Compose file, add no service, and mount handlers that define every
handler deploy/app's config names.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from eventrun.config import load_config
from tests.deploy.test_deploy import compose_validator

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
SCRIPT = ROOT / "scripts" / "container-deps.sh"


def services(name: str) -> dict[str, dict[str, object]]:
    return dict(yaml.safe_load((DEPLOY / name).read_text())["services"])


def test_override_is_valid_compose() -> None:
    override = yaml.safe_load((DEPLOY / "compose.test.yaml").read_text())
    errors = [f"{list(e.path)}: {e.message}" for e in compose_validator().iter_errors(override)]
    assert not errors, errors


def test_override_swaps_images_for_the_ones_the_script_builds() -> None:
    base, test = services("compose.yaml"), services("compose.test.yaml")
    assert set(test) <= set(base), "the override adds no service"
    script = SCRIPT.read_text()
    built = set(re.findall(r'="(localhost/eventrun-base/[a-z]+):\$TAG"', script))
    tag = re.search(r"^TAG=(\w+)$", script, re.M)
    assert tag
    for name in ("redis", "kafka", "kafka-init", "sqs"):
        image = str(test[name]["image"])
        assert image.rsplit(":", 1)[0] in built, name
        assert image.endswith(":" + tag.group(1)), name
        assert test[name]["ulimits"] == test["eventrun"]["ulimits"]
    eventrun = test["eventrun"]
    build = eventrun["build"]
    assert isinstance(build, dict)
    assert build["args"]["PYTHON_IMAGE"] in {f"{b}:{tag.group(1)}" for b in built}
    assert not {"ports", "command", "entrypoint", "healthcheck"} & {
        key for service in test.values() for key in service
    }, "lists merge differently in podman-compose 1.0.3 and docker compose: do not override"


def test_mounted_handlers_define_the_app_handlers() -> None:
    (mount,) = services("compose.test.yaml")["eventrun"]["volumes"]  # type: ignore[misc]
    source, target = str(mount).split(":")[:2]
    handlers = (DEPLOY / source).resolve()
    assert target == "/app/handlers.py"
    defined = {
        node.name
        for node in ast.parse(handlers.read_text()).body
        if isinstance(node, ast.FunctionDef)
    }
    config = load_config(DEPLOY / "app" / "eventrun.yaml", {}).config
    wanted = {fn.handler.split(":")[1] for fn in config.functions.values()}
    assert wanted <= defined
