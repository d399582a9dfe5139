"""Dynamic number insertion in a real browser: a local landing page with the snippet, in headless Debian
Chromium, shows a pool number; a SIPp call to it within the lease is attributed to the visitor's
sub-ID / click ID, and after the lease it is not."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from test_attribution_e2e import POOL_NUMBERS, buyer, by_number, current_dialplan, seed_pool
from test_browser_panel import chromium

LEASE_SECONDS = 10  # the shortest a pool allows


def landing_page(controller_port: int, key: str) -> str:
    return f"""<!doctype html><html><head><title>Cool Air HVAC</title></head><body>
<h1>Call now</h1><a class="ppc-number" href="tel:+18005550100">(800) 555-0100</a>
<script src="http://127.0.0.1:{controller_port}/dni/v1/dni.js" data-key="{key}" async></script>
</body></html>"""


@pytest.fixture
def landing(request):
    """A publisher's landing page on its own loopback port (another origin than ppcswitch)."""
    pages = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path.split("?")[0], "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield pages, f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


def test_landing_page_shows_a_pool_number_and_its_call_is_attributed_during_the_lease(controller, sipp, sandbox,
                                                                                       landing):
    current_dialplan(sandbox)
    a = sipp.buyer("answer")
    controller.seed([buyer("Buyer A", a, revenue="40.00", min_duration=1)])
    key = seed_pool(controller, lease_seconds=LEASE_SECONDS)
    controller.start()
    pages, base = landing
    pages["/hvac"] = landing_page(controller.http_port, key)

    with chromium() as browser:
        page = browser.new_page()
        page.goto(base + "/hvac?sub_id=fb-123&click_id=abc&utm_source=facebook")
        page.wait_for_selector(".ppc-number[data-ppc-number]", timeout=10_000)
        number = page.get_attribute(".ppc-number", "data-ppc-number")
        shown = page.inner_text(".ppc-number")
        href = page.get_attribute(".ppc-number", "href")
        page.close()  # no more renewals: the lease runs out LEASE_SECONDS from now
    left = time.monotonic() + LEASE_SECONDS
    assert number in POOL_NUMBERS and shown == f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    assert href == f"tel:{number}"

    assert sipp.call(number, seconds=1).answered  # within the lease
    time.sleep(max(0.0, left - time.monotonic()) + 1.5)
    assert sipp.call(number, seconds=1).answered  # after it: still routed, not attributed

    first, second = sorted(by_number(controller.wait_calls(2), number), key=lambda c: c["started_at"])
    assert (first["sub_id"], first["click_id"]) == ("fb-123", "abc")
    assert first["attribution"]["source"] == "lease" and first["attribution"]["utm_source"] == "facebook"
    assert (second["sub_id"], second["click_id"], second["attribution"]) == ("", "", {})
    assert first["publisher_id"] == second["publisher_id"] == controller.ids()["publisher:Pub"]
