"""Writes the Grafana dashboards in grafana/dashboards/ (run: python grafana/build.py).

The JSON files are generated so that every panel follows the same conventions
(datasource, filters by the $campaign / $buyer / $publisher variables, units);
edit this file, not the JSON. tests/test_grafana.py checks that the JSON is
what this script writes and that every metric a panel queries really exists.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"

C = 'campaign=~"$campaign"'
P = 'publisher=~"$publisher"'
B = 'buyer=~"$buyer"'


def variable(name: str, metric: str, label: str | None = None) -> dict:
    label = label or name
    return {
        "name": name, "label": label.capitalize(), "type": "query", "datasource": DS,
        "query": {"query": f"label_values({metric}, {label})", "refId": f"{name}-values"},
        "definition": f"label_values({metric}, {label})",
        "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


CAMPAIGN = variable("campaign", "ppcswitch_calls_offered_total")
PUBLISHER = variable("publisher", "ppcswitch_calls_offered_total")
BUYER = variable("buyer", "ppcswitch_calls_routed_total")
NODE = variable("node", "ppcswitch_node_info")


def panel(title: str, kind: str, targets: list[tuple[str, str]], unit: str = "short", w: int = 8, h: int = 8,
          description: str = "", interval: str = "", **options) -> dict:
    p = {
        "title": title, "type": kind, "datasource": DS, "description": description,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(65 + i)}
                    for i, (expr, legend) in enumerate(targets)],
        "options": options, "_w": w, "_h": h,
    }
    if interval:
        p["interval"] = interval
    return p


def dashboard(uid: str, title: str, variables: list[dict], panels: list[dict], description: str) -> dict:
    x = y = row_h = 0
    for i, p in enumerate(panels, 1):
        w, h = p.pop("_w"), p.pop("_h")
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"], p["gridPos"] = i, {"x": x, "y": y, "w": w, "h": h}
        x, row_h = x + w, max(row_h, h)
    return {
        "uid": uid, "title": title, "description": description, "tags": ["ppcswitch"],
        "schemaVersion": 39, "version": 1, "editable": False, "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
        "templating": {"list": variables}, "annotations": {"list": []}, "panels": panels,
    }


def noc() -> dict:
    f = f"{{{C},{P}}}"
    return dashboard("ppcswitch-noc", "ppcswitch / NOC overview", [CAMPAIGN, PUBLISHER], [
        panel("Calls per second", "timeseries", [(f"sum(rate(ppcswitch_calls_offered_total{f}[{RATE}]))", "offered"),
                                                 (f'sum(rate(ppcswitch_calls_total{{{C},{P},outcome="connected"}}[{RATE}]))', "connected")], "reqps"),
        panel("Live calls", "timeseries", [("sum(ppcswitch_live_calls)", "ppcswitch"), ("sum(asterisk_channels_count)", "Asterisk channels")]),
        panel("Answer rate", "stat", [(f'sum(increase(ppcswitch_calls_total{{{C},{P},outcome="connected"}}[1h])) / sum(increase(ppcswitch_calls_offered_total{f}[1h]))', "last hour")],
              "percentunit", w=4, description="Connected calls over offered calls, last hour"),
        panel("Fallback calls (1h)", "stat", [("sum(increase(ppcswitch_fallback_calls_total[1h]))", "fallback")], w=4,
              description="Calls the dialplan handled alone because the controller was unreachable"),
        panel("Outcomes", "timeseries", [(f"sum by (outcome) (rate(ppcswitch_calls_total{f}[{RATE}]))", "{{outcome}}")], "reqps"),
        panel("AMI / AGI", "stat", [("max(ppcswitch_ami_connected)", "AMI connected"), ("max(ppcswitch_agi_up)", "FastAGI up"),
                                    ('min(up{job="ppcswitch"})', "controller scraped"), ('min(up{job="asterisk"})', "Asterisk scraped")], w=8),
        panel("AMI reconnects and event lag", "timeseries", [("sum(increase(ppcswitch_ami_reconnects_total[10m]))", "reconnects / 10m"),
                                                             ("max(ppcswitch_ami_event_lag_seconds)", "event lag (s)")]),
        panel("FastAGI requests", "timeseries", [(f"sum(rate(ppcswitch_agi_requests_total[{RATE}]))", "requests"),
                                                 (f"sum(rate(ppcswitch_agi_dropped_connections_total[{RATE}]))", "dropped"),
                                                 (f"sum(rate(ppcswitch_agi_errors_total[{RATE}]))", "errors")], "reqps"),
        panel("Routing decision time", "timeseries", [
            (f"histogram_quantile(0.5, sum by (le) (rate(ppcswitch_routing_decision_seconds_bucket[{RATE}])))", "p50"),
            (f"histogram_quantile(0.99, sum by (le) (rate(ppcswitch_routing_decision_seconds_bucket[{RATE}])))", "p99")], "s"),
        panel("Database writer", "timeseries", [("max(ppcswitch_db_write_queue_depth)", "queue depth"),
                                                (f"histogram_quantile(0.95, sum by (le) (rate(ppcswitch_db_write_seconds_bucket[{RATE}])))", "write p95 (s)"),
                                                ("sum(increase(ppcswitch_call_record_failures_total[1h]))", "records refused / 1h")]),
        panel("Transcription", "timeseries", [("max(ppcswitch_transcription_queue_depth)", "calls waiting"),
                                              ("max(ppcswitch_transcription_lag_seconds)", "oldest waiting (s)"),
                                              ("max(ppcswitch_transcription_workers_busy)", "workers busy")],
              description="Recorded calls waiting for their transcript (call intelligence); the lag should come back down"),
        panel("Asterisk", "stat", [("max(asterisk_core_uptime_seconds)", "uptime"), ("max(asterisk_core_last_reload_seconds)", "since reload")], "s"),
        panel("Asterisk endpoints, bridges, scrape time", "timeseries", [("sum(asterisk_endpoints_count)", "endpoints"), ("sum(asterisk_bridges_count)", "bridges"),
                                                                         ("max(asterisk_core_scrape_time_ms)", "scrape ms")]),
    ], "Traffic, outcomes and the health of the controller and Asterisk")


def buyers() -> dict:
    f = f"{{{C},{B}}}"
    return dashboard("ppcswitch-buyers", "ppcswitch / Buyers", [CAMPAIGN, BUYER], [
        panel("Cap use", "bargauge", [(f"max by (buyer) (ppcswitch_buyer_cap_use_ratio{{{B}}})", "{{buyer}}")], "percentunit", w=12,
              description="Live legs over concurrency cap; buyers without live legs are not shown"),
        panel("Live legs", "timeseries", [(f"sum by (buyer) (ppcswitch_buyer_live_calls{{{B}}})", "{{buyer}}")], w=12),
        panel("Answer rate", "timeseries", [(f"sum by (buyer) (rate(ppcswitch_calls_answered_total{f}[{RATE}])) / sum by (buyer) (rate(ppcswitch_calls_routed_total{f}[{RATE}]))", "{{buyer}}")],
              "percentunit", w=12, description="Answered over offered legs"),
        panel("Dial outcomes", "timeseries", [(f"sum by (buyer, outcome) (rate(ppcswitch_dial_outcomes_total{{{B}}}[{RATE}]))", "{{buyer}} {{outcome}}")], "reqps", w=12),
        panel("Average ring time", "timeseries", [
            (f"sum by (buyer) (rate(ppcswitch_buyer_ring_seconds_sum{{{B}}}[{RATE}])) / sum by (buyer) (rate(ppcswitch_buyer_ring_seconds_count{{{B}}}[{RATE}]))", "{{buyer}}")],
              "s", w=12, description="From dialling the buyer to its answer"),
        panel("Ring time p50 / p95, all buyers", "timeseries", [
            (f"histogram_quantile(0.5, sum by (le) (rate(ppcswitch_ring_seconds_bucket[{RATE}])))", "p50"),
            (f"histogram_quantile(0.95, sum by (le) (rate(ppcswitch_ring_seconds_bucket[{RATE}])))", "p95")], "s", w=12),
        panel("Billable calls today", "bargauge", [(f"sum by (buyer) (increase(ppcswitch_buyer_billable_calls_total{f}[1d]))", "{{buyer}}")], w=12),
        panel("RTB ping time", "timeseries", [
            (f"sum by (buyer) (rate(ppcswitch_rtb_ping_seconds_sum{{{B}}}[{RATE}])) / sum by (buyer) (rate(ppcswitch_rtb_ping_seconds_count{{{B}}}[{RATE}]))", "{{buyer}} average"),
            (f"histogram_quantile(0.95, sum by (le) (rate(ppcswitch_rtb_ping_all_seconds_bucket[{RATE}])))", "p95, all buyers")], "s", w=12),
        panel("RTB outcomes", "timeseries", [(f"sum by (buyer, outcome) (rate(ppcswitch_rtb_pings_total{{{B}}}[{RATE}]))", "{{buyer}} {{outcome}}")], "reqps", w=12),
    ], "Cap use, answer rate, ring time and RTB per buyer")


def publishers() -> dict:
    f = f"{{{C},{P}}}"
    return dashboard("ppcswitch-publishers", "ppcswitch / Publishers", [CAMPAIGN, PUBLISHER], [
        panel("Volume", "timeseries", [(f"sum by (publisher) (rate(ppcswitch_calls_offered_total{f}[{RATE}]))", "{{publisher}}")], "reqps", w=12),
        panel("Billable rate", "timeseries", [(f"sum by (publisher) (rate(ppcswitch_calls_billable_total{f}[{RATE}])) / sum by (publisher) (rate(ppcswitch_calls_offered_total{f}[{RATE}]))", "{{publisher}}")],
              "percentunit", w=12),
        panel("Flagged rate", "timeseries", [(f"sum by (publisher) (rate(ppcswitch_fraud_flags_total{{{P}}}[{RATE}])) / sum by (publisher) (rate(ppcswitch_calls_offered_total{f}[{RATE}]))", "{{publisher}}")],
              "percentunit", w=12, description="Fraud flags over offered calls"),
        panel("Flags by reason", "timeseries", [(f"sum by (publisher, reason) (rate(ppcswitch_fraud_flags_total{{{P}}}[{RATE}]))", "{{publisher}} {{reason}}")], "reqps", w=12),
        panel("Calls today", "bargauge", [(f"sum by (publisher) (increase(ppcswitch_calls_offered_total{f}[1d]))", "{{publisher}}")], w=12),
        panel("Payout today", "bargauge", [(f"sum by (publisher) (increase(ppcswitch_payout_cents_total{f}[1d])) / 100", "{{publisher}}")], "currencyUSD", w=12),
    ], "Volume, billable rate and flagged rate per publisher")


def finance() -> dict:
    rev, pay = f"ppcswitch_revenue_cents_total{{{C},{B}}}", f"ppcswitch_payout_cents_total{{{C},{P}}}"

    def per(window: str) -> list[tuple[str, str]]:
        r, p = f"sum(increase({rev}[{window}])) / 100", f"sum(increase({pay}[{window}])) / 100"
        return [(r, "revenue"), (p, "payout"), (f"({r}) - ({p})", "margin")]

    return dashboard("ppcswitch-finance", "ppcswitch / Finance", [CAMPAIGN, BUYER, PUBLISHER], [
        panel("Revenue, payout and margin per hour", "barchart", per("1h"), "currencyUSD", w=24, interval="1h"),
        panel("Revenue, payout and margin per day", "barchart", per("1d"), "currencyUSD", w=24, interval="1d"),
        panel("Margin per campaign today", "bargauge", [(f"(sum by (campaign) (increase({rev}[1d])) - sum by (campaign) (increase({pay}[1d]))) / 100", "{{campaign}}")], "currencyUSD", w=12),
        panel("Revenue per buyer today", "bargauge", [(f"sum by (buyer) (increase({rev}[1d])) / 100", "{{buyer}}")], "currencyUSD", w=12),
    ], "Revenue, payout and margin (amounts are counted in cents and shown in the network's currency)")


def node(expr: str) -> str:
    """expr with each controller's `node` (cluster.node, from ppcswitch_node_info on the same target)."""
    return f'({expr}) * on (instance) group_left (node) ppcswitch_node_info{{node=~"$node"}}'


def cluster() -> dict:
    offered = node(f"rate(ppcswitch_calls_offered_total{{{C},{P}}}[{RATE}])")
    connected = node(f'rate(ppcswitch_calls_total{{{C},{P},outcome="connected"}}[{RATE}])')
    agi = node(f"rate(ppcswitch_agi_request_seconds_bucket[{RATE}])")
    write = node(f"rate(ppcswitch_db_write_seconds_bucket[{RATE}])")
    decision = node(f"rate(ppcswitch_routing_decision_seconds_bucket[{RATE}])")
    return dashboard("ppcswitch-cluster", "ppcswitch / Cluster", [NODE, CAMPAIGN, PUBLISHER], [
        panel("Nodes reporting", "stat", [("count(ppcswitch_node_info)", "controllers"),
                                          ('count(up{job="asterisk"} == 1)', "Asterisk nodes")], w=6,
              description="Controllers whose /metrics are scraped, and Asterisk nodes answering theirs"),
        panel("Calls per second by node", "timeseries", [(f"sum by (node) ({offered})", "{{node}}")], "reqps", w=18,
              description="The edge's share of calls to each node (round robin: equal while all are up)"),
        panel("Live calls by node", "timeseries", [(f"sum by (node) ({node('ppcswitch_live_calls')})", "{{node}}"),
                                                   ("sum by (instance) (asterisk_channels_count)", "Asterisk {{instance}} channels")], w=12),
        panel("Connected share by node", "timeseries", [(f"sum by (node) ({connected}) / sum by (node) ({offered})", "{{node}}")],
              "percentunit", w=12),
        panel("AMI connected by node", "timeseries", [(f"max by (node) ({node('ppcswitch_ami_connected')})", "{{node}}")], w=8,
              description="0: the node's controller lost its Asterisk; the edge sends it no new calls"),
        panel("Fallback calls by node (1h)", "bargauge",
              [(f"sum by (node) ({node('increase(ppcswitch_fallback_calls_total[1h])')})", "{{node}}")], w=8),
        panel("FastAGI request p99 by node", "timeseries", [(f"histogram_quantile(0.99, sum by (le, node) ({agi}))", "{{node}}")], "s", w=8),
        panel("Database writer by node", "timeseries", [(f"max by (node) ({node('ppcswitch_db_write_queue_depth')})", "{{node}} queue"),
                                                        (f"histogram_quantile(0.95, sum by (le, node) ({write}))", "{{node}} write p95 (s)")],
              w=12, description="Every node writes to the one shared database"),
        panel("Routing decision p99 by node", "timeseries", [(f"histogram_quantile(0.99, sum by (le, node) ({decision}))", "{{node}}")], "s", w=12),
    ], "Several Asterisk nodes behind the edge: traffic and health per node (README: Running several nodes)")


DASHBOARDS = {"noc.json": noc, "cluster.json": cluster, "buyers.json": buyers, "publishers.json": publishers, "finance.json": finance}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print("wrote", OUT / name)
