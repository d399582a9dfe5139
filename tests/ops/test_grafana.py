"""Grafana: provisioning files, and dashboards that are valid Grafana JSON, are what
grafana/build.py writes, filter by the template variables, and query only metrics
that ppcswitch or Asterisk really expose (a real scrape of both, taken now)."""

from __future__ import annotations

import importlib.util
import json

import yaml

from metrics_scrape import REPO, promql_metric_names, real_metric_names

GRAFANA = REPO / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROMETHEUS_OWN = {"up"}
PANEL_TYPES = {"timeseries", "stat", "bargauge", "barchart", "table", "gauge", "text", "row"}


def load(path):
    return json.loads(path.read_text())


def queries(dash):
    for p in dash["panels"]:
        for t in p.get("targets", []):
            yield p["title"], t["expr"]
    for v in dash["templating"]["list"]:
        yield "variable " + v["name"], v["query"]["query"] if isinstance(v["query"], dict) else v["query"]


def test_dashboards_are_valid_grafana_json_and_what_build_writes():
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert {p.name: p.read_text() for p in DASHBOARDS} == build.render(), "run python grafana/build.py"
    uids = set()
    for path in DASHBOARDS:
        d = load(path)
        assert d["uid"] not in uids and d["title"] and isinstance(d["schemaVersion"], int)
        uids.add(d["uid"])
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)) and ids
        for p in d["panels"]:
            assert p["type"] in PANEL_TYPES, p["title"]
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
            assert p["datasource"]["uid"] == "prometheus" and p["targets"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)) and all(t["expr"].strip() for t in p["targets"])
        names = {v["name"] for v in d["templating"]["list"]}
        assert names >= {"campaign"} and names & {"buyer", "publisher"}, path.name
        # Every variable is used somewhere, so the filters really filter.
        text = json.dumps(d["panels"])
        assert all(f"${n}" in text for n in names), path.name
    assert {"ppcswitch-noc", "ppcswitch-buyers", "ppcswitch-publishers", "ppcswitch-finance"} <= uids


def test_provisioning_points_at_the_dashboards_and_prometheus():
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    [source] = ds["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus"
    assert source["url"] == "http://127.0.0.1:9090"
    prov = yaml.safe_load((GRAFANA / "provisioning/dashboards/ppcswitch.yml").read_text())
    [provider] = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards/ppcswitch"


def test_every_panel_queries_metrics_that_exist(controller, sandbox):
    real = real_metric_names(controller, sandbox) | PROMETHEUS_OWN
    missing, used = [], set()
    for path in DASHBOARDS:
        for where, expr in queries(load(path)):
            names = promql_metric_names(expr)
            assert names, (path.name, where, expr)
            used |= names
            missing += [(path.name, where, n) for n in names if n not in real]
    assert missing == []
    assert any(n.startswith("asterisk_") for n in used)
