"""eventrun.workers._harden as a non-root user: the daemon as ``nobody``, with and without
an ambient capability (systemd's ``AmbientCapabilities=``).

The process runs as uid 65534 in a user namespace of its own (``unshare --user``): the
kernel treats it as that plain user, while the files it writes (coverage data) still
belong to the user running the suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


def _userns_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        return False
    probe = ["unshare", "--user", f"--map-user={NOBODY}", f"--map-group={NOBODY}", "true"]
    return subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0


@pytest.fixture(autouse=True, scope="module")
def _needs_user_namespaces() -> None:
    """Missing tools fail the tests loudly, like a missing server (never a silent skip)."""
    if not _userns_available():
        pytest.fail(
            "these tests run a worker as uid 65534 in a user namespace: they need "
            "`unshare --user` and `setpriv` (Debian's util-linux) and user namespaces "
            "enabled in the kernel (sysctl kernel.unprivileged_userns_clone=1)",
            pytrace=False,
        )


SCRIPT = """
import json, os
from eventrun.workers import _harden

def status():
    keep = ("CapEff", "CapPrm", "CapAmb", "CapInh", "NoNewPrivs")
    with open("/proc/self/status") as f:
        rows = (line.split(":", 1) for line in f)
        return {k: int(v.split()[0], 16) for k, v in rows if k in keep}

before = {"held": _harden._holds_capabilities(), **status()}
_harden.drop_capabilities()
_harden.make_undumpable()
print(json.dumps({"uid": os.geteuid(), "before": before, "after": status()}))
"""


def _as_nobody(*caps: str) -> dict[str, object]:
    userns = ["unshare", "--user", f"--map-user={NOBODY}", f"--map-group={NOBODY}"]
    if caps:  # keep the namespace's capabilities, then only this one, ambient
        cap = caps[0]
        userns += [
            "--keep-caps",
            "setpriv",
            f"--inh-caps=-all,+{cap}",
            f"--ambient-caps=-all,+{cap}",
        ]
    out = subprocess.run(
        [*userns, sys.executable, "-c", SCRIPT],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, check=True, cwd="/",
    )  # fmt: skip
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    assert result["uid"] == NOBODY
    return result


def test_a_user_without_capabilities_is_left_as_it_is() -> None:
    """Nothing to drop: no ``no_new_privs`` either (a plain user's worker may still exec
    setuid helpers it could run anyway)."""
    result = _as_nobody()
    assert result["before"] == {
        "held": False, "CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0, "NoNewPrivs": 0
    }  # fmt: skip
    assert result["after"] == {k: v for k, v in result["before"].items() if k != "held"}  # type: ignore[union-attr]


def test_an_ambient_capability_of_a_non_root_daemon_is_dropped_for_good() -> None:
    """A daemon started as a plain user with an ambient capability (CAP_SYS_PTRACE here):
    the worker holds it until it drops everything, then cannot regain it by execve."""
    result = _as_nobody("sys_ptrace")
    before, after = result["before"], result["after"]
    assert isinstance(before, dict)
    assert before["held"] is True
    assert before["CapAmb"] == before["CapEff"] == 1 << 19  # CAP_SYS_PTRACE
    assert after == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0, "NoNewPrivs": 1}
