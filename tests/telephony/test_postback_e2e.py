"""Postbacks through the durable outbox, with real processes: a real call through the sandbox Asterisk
is billed; the publisher's postback server fails twice, then succeeds; ppcswitch is restarted after
each failure. The postback arrives exactly once, signed, and the delivery log shows all three tries;
a dispute then sends the "reversed" postback."""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qs, urlparse

from ppcswitch.attribution import postback, store
from ppcswitch.storage import db
from test_attribution_e2e import buyer, current_dialplan, header_call

SECRET = "s3cret-for-tests"


class FlakyReceiver:
    """Answers 500 to the first `failures` requests, then 200; keeps every request."""

    def __init__(self, failures: int = 2):
        self.failures, self.requests, self.lock = failures, [], threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append((self.path, dict(self.headers), body))
                    status = 500 if len(receiver.requests) <= receiver.failures else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {n} postbacks arrived"
            time.sleep(0.05)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def set_postback(controller, url: str) -> None:
    async def go():
        engine = db.make_engine(controller.db_url)
        try:
            async with db.make_sessionmaker(engine)() as s, s.begin():
                await store.set_target(s, "publisher", "Pub", url, SECRET)
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_postback_is_delivered_exactly_once_across_restarts_with_a_valid_signature(controller, sipp, sandbox):
    current_dialplan(sandbox)
    receiver = FlakyReceiver(failures=2)
    try:
        a = sipp.buyer("answer")
        controller.seed([buyer("Buyer A", a, revenue="40.00", min_duration=1)], publisher_payout="12.50")
        set_postback(controller, f"http://127.0.0.1:{receiver.port}/pb?click={{click_id}}&sub={{sub_id}}"
                                 f"&payout={{payout}}&call={{call_id}}")
        controller.env["PPCSWITCH_ATTRIBUTION_POSTBACK_RETRY_MIN"] = "1"
        controller.start()
        assert header_call(sipp, "+18005550100", "fb-123", "abc", seconds=2).answered
        [call] = controller.wait_calls(1)
        assert call["billable"] and call["payout_cents"] == 1250

        receiver.wait(1)  # first try: 500
        controller.stop()
        controller.start()
        receiver.wait(2)  # second try, after a restart: 500
        controller.stop()
        controller.start()
        receiver.wait(3)  # third try: 200
        time.sleep(3)  # well past the retry delay: nothing more may come
        controller.stop()
        controller.start()
        time.sleep(2)
        assert len(receiver.requests) == 3

        ids = {h["X-Ppcswitch-Delivery"] for _, h, _ in receiver.requests}
        assert len(ids) == 1  # one notification, tried three times (receivers dedupe on it)
        path, headers, body = receiver.requests[-1]
        assert postback.verify(SECRET, headers["X-Ppcswitch-Timestamp"], body, headers["X-Ppcswitch-Signature"])
        assert not postback.verify("wrong", headers["X-Ppcswitch-Timestamp"], body, headers["X-Ppcswitch-Signature"])
        q = parse_qs(urlparse(path).query)
        assert (q["click"], q["sub"], q["payout"], q["call"]) == (["abc"], ["fb-123"], ["12.50"], [call["linkedid"]])
        sent = json.loads(body)
        assert sent["event"] == "billed" and sent["sub_id"] == "fb-123" and sent["payout"] == "12.50"

        out = subprocess.run([sys.executable, "-m", "ppcswitch", "postback", "log", call["linkedid"], "--json"],
                             env=controller.env, capture_output=True, text=True, timeout=60)
        [row] = json.loads(out.stdout)
        assert row["status"] == "delivered" and [x["status_code"] for x in row["attempts"]] == [500, 500, 200]

        # The buyer disputes the call (revshare: the payout goes too): the running controller sends "reversed".
        out = subprocess.run([sys.executable, "-m", "ppcswitch", "ledger", "dispute", call["linkedid"], "--user",
                              "alice", "--reason", "robocall"], env=controller.env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        receiver.wait(4)
        path, headers, body = receiver.requests[-1]
        assert headers["X-Ppcswitch-Delivery"] not in ids
        assert postback.verify(SECRET, headers["X-Ppcswitch-Timestamp"], body, headers["X-Ppcswitch-Signature"])
        sent = json.loads(body)
        assert (sent["event"], sent["billable"], sent["payout"], sent["call_id"]) == (
            "reversed", False, "-12.50", call["linkedid"])
        assert parse_qs(urlparse(path).query)["payout"] == ["-12.50"]
    finally:
        receiver.close()
