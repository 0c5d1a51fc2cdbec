"""The alert rules are valid (`promtool check rules`) and behave as their unit tests say (`promtool test rules`)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from ops_tools import DEPLOY

pytestmark = pytest.mark.tools
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"


def promtool(tool: Callable[[str], Path], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool("promtool")), *args], capture_output=True, text=True, timeout=120,
                          cwd=RULES.parent)


def test_rules_are_valid(tool: Callable[[str], Path]) -> None:
    done = promtool(tool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_rules_pass_their_unit_tests(tool: Callable[[str], Path]) -> None:
    done = promtool(tool, "test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_unit_test_and_a_runbook_entry() -> None:
    import yaml

    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    readme = (DEPLOY.parent / "README.md").read_text()
    for rule in rules:
        name = rule["alert"]
        assert name in tested, f"{name} has no promtool unit test"
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert f'<a id="{anchor}"></a>' in readme, f"{name}: no runbook entry {anchor} in the README"
