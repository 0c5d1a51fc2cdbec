"""The dashboard and the alert rules name only metrics the code exports, and every metric family has a panel.

The exported families are read from the Prometheus registry after importing every module that defines metrics
(not by grepping the source); the names the dashboard and rules use are the metric-name tokens of their PromQL.
"""

from __future__ import annotations

import json
import re

import yaml
from ops_tools import DEPLOY
from prometheus_client import REGISTRY

import bytewax.speechmatics.connectors.kafka.source  # noqa: F401 - registers Bytewax's consumer-lag gauge
import bytewax.speechmatics.connectors.metrics  # noqa: F401 - every bwsm_ metric

DASHBOARD = DEPLOY / "grafana" / "bytewax-speechmatics.json"
RULES = DEPLOY / "prometheus" / "alerts.yml"
#: Bytewax's own metrics, served from Rust beside the Python registry on its dataflow API (0.21.1): not in REGISTRY.
BYTEWAX_RUNTIME = {"bytewax_snapshot_duration_seconds", "bytewax_partd_write_duration_seconds",
                   "bytewax_item_out_count", "bytewax_inp_part_next_batch_duration_seconds"}
#: Prometheus's own series of every target.
PROMETHEUS = {"up"}
#: Our families (what must have a panel): ours, and the consumer lag our source publishes in Bytewax's gauge.
OURS = re.compile(r"^(bwsm_|bytewax_kafka_consumer_lag$)")
TOKEN = re.compile(r"\b(?:bwsm|bytewax|process)_[a-z0-9_]+\b|\bup\b(?=\s*[{(\[])")


def families() -> dict[str, set[str]]:
    """Family name -> the sample names it exports (counter `_total`, histogram `_bucket`/`_sum`/`_count`, ...)."""
    out: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        names = {family.name}
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                    "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        out[family.name] = names
    return out


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def named(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in TOKEN.findall(e)}


def exported() -> set[str]:
    names = set().union(*families().values())
    return names | PROMETHEUS | {n + s for n in BYTEWAX_RUNTIME for s in ("", "_total", "_bucket", "_sum", "_count")}


def test_the_dashboard_names_only_exported_metrics() -> None:
    unknown = named(dashboard_exprs()) - exported()
    assert not unknown, f"the dashboard queries metrics the code does not export: {sorted(unknown)}"


def test_the_rules_name_only_exported_metrics() -> None:
    unknown = named(rule_exprs()) - exported()
    assert not unknown, f"the alert rules query metrics the code does not export: {sorted(unknown)}"


def test_every_exported_family_has_a_panel() -> None:
    ours = {name: samples for name, samples in families().items() if OURS.match(name)}
    assert "bwsm_chunks" in ours and "bwsm_source_lag_seconds" in ours  # the registry was read
    shown = named(dashboard_exprs())
    missing = sorted(name for name, samples in ours.items() if not samples & shown)
    assert not missing, f"exported metric families without a dashboard panel: {missing}"


def test_the_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']} has no query"
        assert all(t["expr"].count("(") == t["expr"].count(")") for t in panel["targets"]), panel["title"]
