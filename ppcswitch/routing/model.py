"""The routing configuration as plain, immutable values.

The storage layer loads these from the database; the routing engine works on
them in memory, so no database access happens on a call's path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ppcswitch.routing.rules import NO_RULES, Rules


@dataclass(frozen=True, slots=True)
class Buyer:
    id: int
    name: str
    # Dial() target built from the database, always "PJSIP/...".
    dial_target: str
    ring_timeout: int = 30  # seconds
    concurrency_cap: int | None = None  # None: no cap
    paused: bool = False
    min_duration: int = 60  # connected seconds for a billable call
    revenue_cents: int = 0  # what the buyer pays per billable call
    rules: Rules = NO_RULES  # schedule, geography, caps, budget, duplicates (routing.rules)
    rtb: "RtbBuyer | None" = None  # set when the buyer is reached by real-time bidding


@dataclass(frozen=True)
class RtbBuyer:
    """How to ask a buyer for a bid (ping) and tell it the outcome (post)."""

    ping_url: str
    post_url: str = ""
    timeout: float = 0.3  # seconds this buyer may take to bid
    floor_cents: int = 0  # bids below are ignored
    share_caller: bool = False  # the full caller number is sent only when true


@dataclass(frozen=True)
class Publisher:
    id: int
    name: str
    payout_cents: int = 0  # what the publisher earns per billable call
    paused: bool = False


@dataclass(frozen=True, slots=True)
class CampaignBuyer:
    buyer_id: int
    priority: int = 1  # lower is tried first
    rules: Rules = NO_RULES  # the buyer's rules with this link's overrides on top
    # Caps and budgets set on this link itself: they count this buyer's calls on this campaign only
    # (routing.limits.Limits; None: none). The buyer's own caps count all its calls.
    limits: object = None


@dataclass(frozen=True)
class Campaign:
    id: int
    name: str
    paused: bool = False
    buyers: tuple[CampaignBuyer, ...] = ()
    zip_prompt: bool = False  # ask the caller for a ZIP code; geography uses its state
    repeat_caller: bool = False  # a caller delivered before goes back to that buyer first
    whisper: str = ""  # played to the buyer on answer ('' = none), e.g. "call from HVAC"
    rtb_budget: float = 1.0  # seconds the whole auction may take
    links: dict[int, CampaignBuyer] = field(default_factory=dict, compare=False)  # by buyer id, derived

    def __post_init__(self) -> None:
        # Kept in dial order once, so routing never sorts on a call's path.
        object.__setattr__(self, "buyers", tuple(sorted(self.buyers, key=lambda b: (b.priority, b.buyer_id))))
        object.__setattr__(self, "links", {b.buyer_id: b for b in self.buyers})


@dataclass(frozen=True)
class TrackingNumber:
    number: str  # E.164
    campaign_id: int
    publisher_id: int  # the default publisher (a shared number's, when no code names another)
    ask_code: bool = False  # ask the caller for a publisher code (IVR) before routing
    paused: bool = False  # calls to it are refused (number_paused) until it is resumed


MAX_CODE_DIGITS = 8  # a publisher code is 1 to 8 digits


@dataclass(frozen=True)
class PublisherCode:
    """Digits a caller keys at a number that asks for a publisher code: the call is that publisher's."""

    code: str
    publisher_id: int
    sub_id: str = ""  # '' : a publisher code; else a sub-ID code of that publisher


@dataclass(frozen=True)
class Network:
    """Everything routing needs, loaded at once and swapped atomically."""

    buyers: dict[int, Buyer] = field(default_factory=dict)
    publishers: dict[int, Publisher] = field(default_factory=dict)
    campaigns: dict[int, Campaign] = field(default_factory=dict)
    numbers: dict[str, TrackingNumber] = field(default_factory=dict)
    publisher_codes: dict[str, PublisherCode] = field(default_factory=dict)  # by code
    code_digits: int = MAX_CODE_DIGITS  # digits the IVR reads at most: the longest publisher code
    fallback_buyer_id: int | None = None
    version: int = 0
    # Caps and budgets of whole campaigns and publishers (routing.limits.Limits), by id.
    campaign_limits: dict[int, object] = field(default_factory=dict)
    publisher_limits: dict[int, object] = field(default_factory=dict)
    # Billing rule overrides, (side, campaign id or 0, buyer/publisher id or 0) -> {field: value}, so
    # routing knows the most a call can cost before it is dialled (routing.limits.max_revenue).
    billing_rules: dict[tuple, dict] = field(default_factory=dict)
