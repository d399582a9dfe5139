"""Plain-language reasons for the codes routing, billing and fraud scoring record.

The codes stay what machines read ("state_not_allowed:CA", "duration_below_minimum:47<60"); these
functions turn them into sentences for the panel. A code without a sentence here (a rule added later)
is shown as itself, made readable ("campaign_cap_daily:20" -> "Campaign cap daily: 20").
"""

from __future__ import annotations

import re

from ppcswitch.money import format_cents


def _money(cents: str) -> str:
    try:
        return "$" + f"{int(cents) / 100:,.2f}" if cents not in ("", "None") else "its budget"
    except ValueError:
        return cents


_CAP_PERIOD = {"hourly": "per hour", "daily": "per day", "monthly": "per month", "total": "in total"}


def _fallback(code: str) -> str:
    head, _, arg = code.partition(":")
    text = head.replace("_", " ").strip().capitalize()
    return f"{text}: {arg}" if arg else text


def _cap(level: str, period: str, arg: str) -> str:
    whose = {"": "the buyer's", "campaign": "the campaign's", "publisher": "the publisher's",
             "link": "this campaign link's"}.get(level, f"the {level}'s")
    return f"Reached {whose} cap of {arg} connected calls {_CAP_PERIOD.get(period, period)}"


def _budget(level: str, period: str, arg: str) -> str:
    whose = {"": "the buyer's", "campaign": "the campaign's", "publisher": "the publisher's",
             "link": "this campaign link's"}.get(level, f"the {level}'s")
    return f"The call would go over {whose} {'daily' if period == 'daily' else 'monthly'} budget of {_money(arg)}"


def routing(code: str) -> str:
    """Why routing passed over a buyer."""
    head, _, arg = code.partition(":")
    fixed = {
        "buyer_missing": "The buyer no longer exists",
        "paused": "The buyer is paused",
        "paused_on_campaign": "The buyer is paused on this campaign",
        "state_unknown": "The caller's state is not known, and the buyer accepts only some states",
        "area_code_unknown": "The caller has no area code, and the buyer accepts only some area codes",
        "closed": "Closed: " + {"date": "a closed date of the buyer", "schedule":
                                "outside the buyer's open hours"}.get(arg, arg),
    }
    if head in fixed:
        return fixed[head]
    if head == "state_not_allowed":
        return f"Caller's state {arg} is not in the buyer's allowed states"
    if head == "state_denied":
        return f"Caller's state {arg} is in the buyer's refused states"
    if head == "area_code_not_allowed":
        return f"Caller's area code {arg} is not in the buyer's allowed area codes"
    if head == "area_code_denied":
        return f"Caller's area code {arg} is in the buyer's refused area codes"
    if head == "concurrency_cap":
        return f"Already at its concurrency cap ({arg} live calls)"
    if head == "min_gap":
        return f"Less than {arg.rstrip('s')} seconds since its last call (least gap between calls)"
    if head == "duplicate":
        return f"This caller already reached the buyer in the last {arg.rstrip('d')} days (repeat callers refused)"
    m = re.fullmatch(r"(?:(campaign|publisher|link)_)?cap_(hourly|daily|monthly|total)", head)
    if m:
        return _cap(m.group(1) or "", m.group(2), arg)
    m = re.fullmatch(r"(?:(campaign|publisher|link)_)?budget_(daily|monthly)", head)
    if m:
        return _budget(m.group(1) or "", m.group(2), arg)
    return _fallback(code)


def billing(code: str) -> str:
    """Why a call was not billed to the buyer (or, with "payout:", not paid to the publisher)."""
    if code.startswith("payout:"):
        return "Publisher not paid: " + _lower_first(billing(code[len("payout:"):]))
    head, _, arg = code.partition(":")
    if head == "duration_below_minimum":
        got, _, need = arg.partition("<")
        return f"Connected {got} s, under the {need} s minimum"
    if head == "duplicate_caller":
        return f"Repeat caller: already counted on {arg} (unique-caller window)"
    if head == "quality_flagged":
        score, _, limit = arg.partition(">=")
        return f"Fraud score {score} is at or above the quality threshold {limit}"
    if head == "rejected":
        return "Refused before routing: " + _lower_first(reject(arg))
    fixed = {"not_connected": "No buyer answered", "buyer_not_billable": "The buyer did not pay for it",
             "geo_unknown": "The caller's location is not known (the rule needs a match)",
             "geo_mismatch": "The caller is outside the buyer's area (the rule needs a match)",
             "disputed": "The buyer disputed the call"}
    return fixed.get(head, _fallback(code))


def reject(code: str) -> str:
    fixed = {"unknown_tracking_number": "The number called is not a tracking number",
             "campaign_paused": "The campaign is paused", "publisher_paused": "The publisher is paused",
             "number_paused": "The tracking number is paused",
             "no_buyer": "No buyer could take the call", "anonymous_caller": "Anonymous callers are refused",
             "challenge_failed": "The caller did not pass the press-1 challenge",
             "blocked_caller": "The caller is on the block list"}
    return fixed.get(code.partition(":")[0], _fallback(code))


SIGNALS = {
    "repeat_caller_publishers": "The same caller came through other publishers recently",
    "caller_velocity": "The same caller called many times within minutes",
    "near_threshold_duration": "Connected just over the billable minimum",
    "publisher_threshold_clustering": "Many of this publisher's calls end just over the minimum",
    "caller_anonymous": "The caller's number is withheld",
    "caller_invalid": "The caller's number is not a valid number",
    "caller_cannot_call": "The caller's number is of a kind that does not place calls (toll-free, premium, "
                          "unassigned)",
    "area_code_state_mismatch": "The area code's state differs from the state of the ZIP keyed in",
    "attestation_b": "STIR/SHAKEN attestation B (the carrier knows the customer, not the number)",
    "attestation_c": "STIR/SHAKEN attestation C (the carrier vouches for nothing)",
    "attestation_none": "No STIR/SHAKEN attestation",
    "no_conversation": "Nobody spoke (or the caller never did)",
    "challenge_failed": "Did not pass the press-1 challenge",
    "blocked_caller": "The caller is on the block list",
    "external_scorer": "The external fraud scorer's points",
}


def signal(code: str) -> str:
    return SIGNALS.get(code, _fallback(code))


def bid(entry: dict) -> str:
    """One real-time-bidding ping, in words."""
    outcome, detail = entry.get("outcome", ""), entry.get("detail", "")
    amount = entry.get("amount_cents")
    text = {"bid": f"Bid ${format_cents(amount)}" if amount is not None else "Bid",
            "no_bid": "Did not bid", "below_floor": "Bid under the floor", "timeout": "Did not answer in time",
            "error": "Ping failed", "malformed": "Answered with an unreadable bid", "redirect": "Answered with a redirect",
            "too_large": "Answered with too large a body", "budget": "Not pinged: the campaign's bidding time ran out"
            }.get(outcome, _fallback(outcome))
    if detail and outcome not in ("bid",):
        text += f" ({detail})"
    if entry.get("ms") is not None and outcome != "budget":
        text += f", {entry['ms']} ms"
    return text


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


DIAL = {"ANSWER": "answered", "BUSY": "busy", "NOANSWER": "did not answer in time", "CHANUNAVAIL": "unreachable",
        "CONGESTION": "congested (refused the call)", "CANCEL": "the caller hung up while it rang",
        "DONTCALL": "refused", "TORTURE": "refused", "INVALIDARGS": "could not be dialled"}


def dial_status(status: str) -> str:
    return DIAL.get(status, status.lower() or "no result")


def routing_table(trace: dict | None, attempts, names: dict[int, str]) -> list[dict]:
    """The buyers routing looked at, in order: the ones it lined up (dialled, chosen, failed over or not
    reached) and then the ones it passed over, each with its reason in words."""
    if not trace:
        return []
    dials: dict[int, list] = {}
    for a in attempts or ():
        if a.buyer_id is not None:
            dials.setdefault(a.buyer_id, []).append(a)
    bids = {e.get("buyer_id"): e for e in trace.get("bids") or () if isinstance(e, dict)}
    winner, rows = trace.get("winner"), []
    for order, bid_ in enumerate(trace.get("candidates") or (), 1):
        tried = dials.get(bid_, [])
        if bid_ == winner:
            outcome, why = "chosen", "Answered and took the call"
        elif tried:
            outcome = "failed over"
            why = "Dialled: " + ", ".join(dial_status(a.dial_status) for a in tried) + "; the next buyer was tried"
        else:
            outcome, why = "not reached", "Lined up, but the call was taken or ended before its turn"
        if bid_ == trace.get("sticky_buyer"):
            why += " (the caller's earlier buyer, tried first)"
        rows.append({"order": order, "buyer_id": bid_, "name": names.get(bid_, f"buyer #{bid_}"), "outcome": outcome,
                     "why": why, "code": "", "bid": bid(bids[bid_]) if bid_ in bids else ""})
    for item in trace.get("skipped") or ():
        try:
            bid_, code = item[0], str(item[1])
        except (TypeError, IndexError, KeyError):
            continue
        rows.append({"order": None, "buyer_id": bid_, "name": names.get(bid_, f"buyer #{bid_}"), "outcome": "skipped",
                     "why": routing(code), "code": code, "bid": bid(bids[bid_]) if bid_ in bids else ""})
    return rows
