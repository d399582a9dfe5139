"""The shipped Prometheus configuration: promtool accepts the config and the rule
files, every alert has a promtool unit test that passes, and every metric the
rules use is one ppcswitch or Asterisk really exposes."""

from __future__ import annotations

import yaml

from metrics_scrape import REPO, promql_metric_names, promtool, real_metric_names

PROM = REPO / "prometheus"
# Scrape health comes from Prometheus itself, not from a target.
PROMETHEUS_OWN = {"up"}


def rules():
    for path in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from group["rules"]


def test_promtool_accepts_config_and_rules():
    check = promtool("check", "config", "prometheus.yml", cwd=PROM)
    assert check.returncode == 0, check.stdout + check.stderr
    check = promtool("check", "rules", *map(str, sorted((PROM / "rules").glob("*.yml"))))
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_alert_has_a_passing_unit_test():
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert {"PpcswitchAMIDisconnected", "PpcswitchNoCallsDuringOpenHours", "PpcswitchFallbackRateHigh",
            "PpcswitchBuyerAnswerRateDropped", "PpcswitchBuyerCapsExhausted",
            "PpcswitchPublisherFlaggedRateHigh", "AsteriskScrapeFailing"} <= alerts
    test_files = sorted((PROM / "tests").glob("*_test.yml"))
    tested = set()
    for path in test_files:
        for t in yaml.safe_load(path.read_text())["tests"]:
            tested |= {case["alertname"] for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alerts - tested == set(), "alerts without a test where they fire"
    run = promtool("test", "rules", *map(str, test_files))
    assert run.returncode == 0, run.stdout + run.stderr


def test_rules_use_only_metrics_that_exist(controller, sandbox):
    real = real_metric_names(controller, sandbox) | PROMETHEUS_OWN
    used = {(r.get("alert") or r.get("record"), name) for r in rules() for name in promql_metric_names(r["expr"])}
    assert used and {(rule, name) for rule, name in used if name not in real} == set()
