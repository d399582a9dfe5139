"""Helpers for the metrics tests: parse real scrapes, run promtool, reach Asterisk's /metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures_asterisk import require_services

REPO = Path(__file__).resolve().parent.parent
ASTERISK_METRICS_PATH = ":8088/metrics"  # asterisk/http.conf (bindaddr: the sandbox instance's address) + prometheus.conf


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of a Prometheus text scrape."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(scrape: dict, name: str, **labels) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return scrape.get((name, frozenset(labels.items())), 0.0)


def exposed_names(text: str) -> set[str]:
    """Every metric name a PromQL query could use against this scrape, read verbatim
    (Prometheus stores names as written; prometheus_client's parser would add `_total`):
    sample names, and for families declared without samples yet, the names their TYPE implies."""
    names = set()
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            names.update(name + suffix for suffix in suffixes.get(kind.strip(), ("",)))
        elif line and not line.startswith("#"):
            names.add(_PROMQL_WORD.match(line).group(0))
    return names


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        reason = "promtool missing (Debian package prometheus; scripts/setup.sh installs it)"
        if require_services():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd)


def asterisk_metrics(sandbox) -> str:
    """Asterisk's own scrape. A sandbox started before asterisk/http.conf and prometheus.conf
    existed gets them now (the same files a fresh start installs), without a restart that
    would cut other sessions' calls."""
    if "Prometheus Metrics URI" not in sandbox.cli("http show status"):
        etc = sandbox.etc_dir
        for name in ("http.conf", "prometheus.conf"):
            shutil.copyfile(REPO / "asterisk" / name, etc / name)
            (etc / name).chmod(0o644)
        sandbox.cli("module reload http")
        sandbox.cli("module load res_prometheus.so")
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://{sandbox.ip}{ASTERISK_METRICS_PATH}", timeout=2) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def real_metric_names(controller, sandbox) -> set[str]:
    """Names exposed by a real controller (one buyer configured) and the sandbox Asterisk."""
    controller.seed([{"name": "Buyer A", "destination": "sip:+15550001111@127.0.0.1:5071"}])
    controller.start()
    return exposed_names(controller.metrics()) | exposed_names(asterisk_metrics(sandbox))


_PROMQL_WORD = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_PROMQL_NOT_METRICS = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring|group_left|group_right|offset|bool)\s*\([^)]*\)')


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers, strings, ranges, grouping
    clauses, functions and keywords removed); Grafana's $variables are ignored."""
    # Grafana's label_values(metric, label): the label is no metric.
    expr = re.sub(r"label_values\(([^,()]+),\s*\w+\s*\)", r"\1", expr)
    text = _PROMQL_NOT_METRICS.sub(" ", expr)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    text = re.sub(r"\b\d[\d.]*(?:e[+-]?\d+)?(?:ms|[smhdwy])?\b", " ", text)  # numbers and durations
    names = set()
    for m in _PROMQL_WORD.finditer(text):
        word, rest = m.group(0), text[m.end():].lstrip()
        if rest.startswith("(") or word in _PROMQL_KEYWORDS:
            continue  # a function call or an operator keyword
        names.add(word)
    return names


_PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                    "offset", "bool", "inf", "nan", "e"}
