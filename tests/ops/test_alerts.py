"""deploy/prometheus/alerts.yml: valid rules (promtool check rules), each one's alert firing on
the series a worker exports in its situation and not before (promtool test rules)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.ops.conftest import PROMETHEUS_DIR, debian_tool

ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"

#: What the issue asks to be alerted on, and the alert that does it.
REQUIRED = {
    "lag growing": "StreamrecConsumerLagGrowing",
    "DLQ rate": "StreamrecDeadLetters",
    "refused model": "StreamrecModelRefused",
    "p99 over budget": "StreamrecLatencyOverBudget",
    "worker down": "StreamrecWorkerDown",
    "retrain kept": "StreamrecRetrainKeptModel",
    "retrain failed": "StreamrecRetrainFailed",
}


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([debian_tool("promtool"), *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=PROMETHEUS_DIR)  # fmt: skip


def test_promtool_checks_the_rules() -> None:
    proc = _promtool("check", "rules", ALERTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    proc = _promtool("test", "rules", ALERTS_TEST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: a worker-down rule waiting 10 minutes instead of 2 does."""
    text = ALERTS.read_text()
    broken = re.sub(r"(alert: StreamrecWorkerDown\n\s+expr: [^\n]+\n\s+for: )2m", r"\g<1>10m",
                    text)  # fmt: skip
    assert broken != text
    (tmp_path / "alerts.yml").write_text(broken)
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST.read_text())
    proc = subprocess.run([debian_tool("promtool"), "test", "rules", "alerts_test.yml"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert proc.returncode != 0
    assert "StreamrecWorkerDown" in proc.stdout + proc.stderr


def test_every_alert_is_required_documented_and_fires_in_a_unit_test() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert set(REQUIRED.values()) <= set(names)
    for rule in rules:
        assert rule["labels"]["severity"] in ("page", "warning", "info"), rule["alert"]
        assert {"summary", "runbook"} <= set(rule["annotations"]), rule["alert"]
        # Only a counter's increase may fire at once; everything else must last a while.
        if "increase(" not in rule["expr"]:
            assert re.fullmatch(r"\d+[mh]", rule.get("for", "")), rule["alert"]
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    fired = {
        case["alertname"] for t in tests for case in t["alert_rule_test"] if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for t in tests
        for case in t["alert_rule_test"]
        if not case.get("exp_alerts")
    }
    assert fired == set(names), f"never shown firing: {set(names) - fired}"
    assert quiet == set(names), f"never shown quiet: {set(names) - quiet}"
