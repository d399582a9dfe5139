"""A finished call as the tracker hands it to qualification and storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


class Outcome:
    CONNECTED = "connected"  # a buyer answered
    NOT_CONNECTED = "not_connected"  # buyers tried, none answered
    NO_BUYER = "no_buyer"  # no eligible buyer
    REJECTED = "rejected"  # refused before routing (unknown number, anonymous caller, ...)
    FALLBACK = "fallback"  # controller unreachable, dialplan fallback used
    ABANDONED = "abandoned"  # caller hung up before any outcome


@dataclass
class Attempt:
    seq: int  # 1-based, in dial order
    buyer_id: int | None
    dial_status: str = ""  # ANSWER, BUSY, NOANSWER, CHANUNAVAIL, CONGESTION, CANCEL
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass
class CallRecord:
    linkedid: str
    tracking_number: str  # E.164, or the raw dialled value when it is not a number
    caller: str  # E.164, "anonymous", or the raw value (truncated) when not a number
    caller_valid: bool
    started_at: datetime
    ended_at: datetime
    outcome: str
    publisher_id: int | None = None
    campaign_id: int | None = None
    buyer_id: int | None = None  # the buyer that answered
    answered_at: datetime | None = None
    connected_ms: int = 0
    hangup_cause: int | None = None
    hangup_cause_text: str = ""
    reject_reason: str = ""
    # The billing decision, set once, when the call is settled (billing.ledger.settle_sync); until then
    # a finished call is not billable and has no money: nothing provisional is ever counted.
    billable: bool = False  # the buyer side (revenue)
    billing_reasons: list[str] = field(default_factory=list)  # why not billable
    revenue_cents: int = 0
    payout_cents: int = 0
    payout_billable: bool = False  # the publisher side
    attempts: list[Attempt] = field(default_factory=list)
    # Facts for billing (ppcswitch.billing); None means unknown / not given.
    quality_score: int | None = None  # fraud/quality score 0-100, higher is worse (a later issue scores)
    geo_match: bool | None = None  # caller in the answering buyer's service area (routing knows)
    revenue_override_cents: int | None = None  # per-call revenue, e.g. a winning RTB bid's amount
    min_duration_override: int | None = None  # per-call minimum duration, e.g. from an RTB bid
    # Attribution (ppcswitch.attribution): the traffic source inside the publisher.
    sub_id: str = ""
    click_id: str = ""
    attribution: dict = field(default_factory=dict)  # source (lease/sip/ivr), utm_*, keyword, pool
    # The caller's state (routing's: a ZIP keyed in, else the area code), set when the call is settled
    # (ppcswitch.pipeline); '' unknown, None not looked up.
    caller_state: str | None = None

    @property
    def connected_seconds(self) -> int:
        return self.connected_ms // 1000
