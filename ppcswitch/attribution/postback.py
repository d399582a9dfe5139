"""Postbacks and webhooks: what is sent, how it is signed, when it is retried (no I/O here)."""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from ppcswitch.money import format_cents

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
SIGNATURE_HEADER = "X-Ppcswitch-Signature"  # sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>
TIMESTAMP_HEADER = "X-Ppcswitch-Timestamp"
DELIVERY_HEADER = "X-Ppcswitch-Delivery"  # the outbox id: the same on every retry, so receivers can dedupe


def payload(record, event: str, kind: str) -> dict:
    """The notification body; also the values for the URL template ({click_id}, {payout}, ...)."""
    attribution = record.attribution or {}
    return {
        "event": event,  # billed | reversed
        "call_id": record.linkedid,
        "sub_id": record.sub_id,
        "click_id": record.click_id,
        "utm_source": attribution.get("utm_source", ""),
        "keyword": attribution.get("keyword", ""),
        "caller": record.caller,
        "tracking_number": record.tracking_number,
        "publisher_id": record.publisher_id,
        "buyer_id": record.buyer_id,
        "campaign_id": record.campaign_id,
        "billable": bool(record.billable),
        "duration": record.connected_ms // 1000,
        # The publisher learns its payout; the buyer its revenue (what it pays).
        "payout": format_cents(record.payout_cents) if kind == "publisher" else "",
        "revenue": format_cents(record.revenue_cents) if kind == "buyer" else "",
        "started_at": record.started_at.isoformat() if record.started_at else "",
    }


def render_url(template: str, values: dict) -> str:
    """Fill {name} placeholders with URL-encoded values; unknown names are left as they are."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            return m.group(0)
        value = values[m.group(1)]
        return quote("" if value is None else str(value).lower() if isinstance(value, bool) else str(value), safe="")
    return _PLACEHOLDER.sub(sub, template)


def shown_url(url: str) -> str:
    """A postback URL fit to show: no user:password, no fragment, query values hidden (names kept).

    Publishers put API keys in their postback URLs' queries; the values sent for a call are on its page.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    query = "&".join(f"{k}=…" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def backoff(attempts: int, minimum: float, maximum: float) -> float:
    """Seconds before the next try after `attempts` failures: doubling from minimum, capped."""
    return min(maximum, minimum * (2 ** max(0, attempts - 1)))
