"""Helpers of the operations tests: Debian's Prometheus binaries, free ports, HTTP, a model.

``prometheus``/``promtool`` come from Debian's ``prometheus`` package: installed with apt-get
when missing and allowed (root, ``STREAMREC_ALLOW_APT`` not false, as ``streamrec infra``
installs redis-server); a test is skipped only when the binary is missing and apt is not
allowed. ``.ci/run`` installs the package, so CI runs these tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "streamrec.json"
_APT_LOCK = threading.Lock()


def _apt_allowed() -> bool:
    return os.environ.get("STREAMREC_ALLOW_APT", "true").strip().lower() not in (
        "0",
        "false",
        "no",
        "off",
    )


def debian_tool(name: str) -> str:
    """The path of ``name`` (``prometheus`` or ``promtool``), installing Debian's
    ``prometheus`` package when it is missing and apt is allowed; skips otherwise."""
    found = shutil.which(name)
    if found:
        return found
    if not _apt_allowed() or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{name} not installed and apt-get not allowed (STREAMREC_ALLOW_APT=false "
                    "or not root): apt-get install prometheus")  # fmt: skip
    with _APT_LOCK:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "prometheus"]):  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
            if proc.returncode != 0:
                pytest.fail(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    found = shutil.which(name)
    assert found, f"apt-get install prometheus gave no {name}"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET; (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""
