"""Asterisk's own metrics (res_prometheus) from the sandbox, served on loopback only."""

from __future__ import annotations

import time

from metrics_scrape import asterisk_metrics, promtool, samples, value
from ppcswitch.sandbox import ASTERISK_DIR


def test_sandbox_asterisk_serves_its_metrics_on_loopback(sandbox):
    deadline = time.monotonic() + 5
    while True:  # uptime counts whole seconds: 0 right after the sandbox started
        text = asterisk_metrics(sandbox)
        scrape = samples(text)  # parses as Prometheus text
        uptime = value(scrape, "asterisk_core_uptime_seconds_total", eid=_eid(scrape))  # the parser adds _total
        if uptime > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert uptime > 0
    assert {name for name, _ in scrape} >= {"asterisk_channels_count", "asterisk_endpoints_count",
                                             "asterisk_calls_count", "asterisk_bridges_count"}
    status = sandbox.cli("http show status")
    # Loopback only: as shipped (asterisk/http.conf) and as this sandbox instance runs it (its own
    # loopback address, beside a `ppcswitch dev` on 127.0.0.1).
    assert "bindaddr = 127.0.0.1" in (ASTERISK_DIR / "http.conf").read_text()
    assert f"Bound to {sandbox.ip}:8088" in status and sandbox.ip.startswith("127."), status
    # promtool reads it; its naming-lint complaints (exit 3) are Asterisk's names, not format errors.
    check = promtool("check", "metrics", stdin=text)
    assert check.returncode in (0, 3), check.stdout + check.stderr
    assert "error" not in (check.stdout + check.stderr).lower()


def _eid(scrape) -> str:
    return next(dict(labels)["eid"] for name, labels in scrape if name == "asterisk_core_uptime_seconds_total")


def test_exposed_names_are_read_as_prometheus_stores_them(sandbox):
    from metrics_scrape import exposed_names

    names = exposed_names(asterisk_metrics(sandbox))
    assert "asterisk_core_uptime_seconds" in names and "asterisk_core_uptime_seconds_total" not in names
