"""Bulk actions on tracking numbers: tick numbers on the list, choose "assign to campaign /
publisher", "pause", "resume" or "release", see a preview of every change, then apply all of them
in one transaction (all or none, one audit entry). No JavaScript needed.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from ppcswitch import keys
from ppcswitch.storage import repo
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import base
from ppcswitch.web import store
from ppcswitch.web.base import need

MAX_NUMBERS = 1000
ACTIONS = ("assign", "pause", "resume", "release")
DONE = {"assign": "reassigned", "pause": "paused", "resume": "resumed", "release": "released"}


async def bulk_numbers(request: web.Request) -> web.Response:
    need(request, "write")
    form = await request.post()
    numbers = sorted({str(n) for n in form.getall("numbers", [])})[:MAX_NUMBERS + 1]
    action = str(form.get("action", ""))
    campaign, publisher = str(form.get("campaign", "")).strip(), str(form.get("publisher", "")).strip()
    back = "/numbers?" + urlencode({k: str(form.get(k, "")) for k in ("q_filter", "campaign_filter", "publisher_filter")
                                    if form.get(k)}).replace("_filter", "")
    async with request.app[keys.SESSIONS]() as s:
        names = {"campaign": await store.names(s, "campaign"), "publisher": await store.names(s, "publisher")}
        rows = []
        error = ""
        try:
            if not numbers:
                raise ValidationError("numbers", "tick at least one number")
            if len(numbers) > MAX_NUMBERS:
                raise ValidationError("numbers", f"at most {MAX_NUMBERS} numbers at once")
            if action not in ACTIONS:
                raise ValidationError("action", "choose assign, pause, resume or release")
            new_campaign = base._int_arg(campaign, "campaign") if campaign else None
            new_publisher = base._int_arg(publisher, "publisher") if publisher else None
            if action == "assign" and new_campaign is None and new_publisher is None:
                raise ValidationError("campaign", "choose the campaign and/or publisher to assign them to")
            for n in numbers:
                row = await store.get_number(s, n)
                rows.append({"number": row.number, "paused": row.paused,
                             "campaign": names["campaign"].get(row.campaign_id, ""),
                             "publisher": names["publisher"].get(row.publisher_id, ""),
                             "new_campaign": names["campaign"].get(new_campaign, "") if new_campaign else "",
                             "new_publisher": names["publisher"].get(new_publisher, "") if new_publisher else ""})
        except ValidationError as exc:
            error = str(exc)
    if error:
        return base.render(request, "numbers_bulk.html", status=400, error=error, rows=rows, action=action,
                            numbers=numbers, campaign=campaign, publisher=publisher, back=back)
    if form.get("step") != "apply":
        return base.render(request, "numbers_bulk.html", error="", rows=rows, action=action, numbers=numbers,
                            campaign=campaign, publisher=publisher, back=back)
    region = request.app[keys.SETTINGS].routing.default_region

    async def job(s):
        if action in ("pause", "resume"):
            return await store.set_numbers_paused(s, numbers, action == "pause")
        for n in numbers:
            if action == "release":
                await repo.remove_tracking_number(s, n, region=region)
            else:
                await store.update_number(s, n, new_campaign, new_publisher)
        return len(numbers)

    try:
        done = await base._write(request, f"number.bulk_{action}", f"{len(numbers)} numbers",
                                  {"numbers": numbers, "campaign": campaign, "publisher": publisher}, job)
    except ValidationError as exc:
        return base.render(request, "numbers_bulk.html", status=400, error=str(exc), rows=rows, action=action,
                            numbers=numbers, campaign=campaign, publisher=publisher, back=back)
    raise web.HTTPFound("/numbers?" + urlencode({"done": f"{done} {'number' if done == 1 else 'numbers'} "
                                                          f"{DONE[action]}."}))

