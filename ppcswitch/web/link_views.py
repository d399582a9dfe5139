"""A buyer's link to one campaign: its priority and the rules that apply on that campaign only
(caps, budgets, weight, hours, geography...: `ppcswitch buyer rules NAME --campaign C`).

The fields are the routing rules' own keys (ppcswitch.routing.rules.KEYS), so a rule added there shows
up here; values are checked by the same code the CLI uses (repo_routing.set_buyer_rules), in one
transaction with the priority: a refused value saves nothing and is shown next to its field.
"""

from __future__ import annotations

from aiohttp import web

from ppcswitch import keys
from ppcswitch import timezones
from ppcswitch.routing import rules as routing_rules
from ppcswitch.storage import repo, repo_routing
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import base
from ppcswitch.web import store, zones
from ppcswitch.web.base import need

LABELS = {f: (label, help) for f, label, help in base.RULE_FIELDS}
LIST_KEYS = set(base._LIST_RULES)
SKIP = {"priority", "paused"}  # the link's priority field and the paused checkbox below


def link_fields() -> list[tuple[str, str, str]]:
    """(key, label, help) of every rule a campaign link may override, in the rules module's order."""
    out = []
    for key in routing_rules.KEYS:
        if key in SKIP:
            continue
        label, help_ = LABELS.get(key, (key.replace("_", " ").capitalize(), ""))
        out.append((key, label, help_))
    return out


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


async def _load(request: web.Request):
    try:
        campaign_id = base._int_arg(request.match_info["id"], "id")
        buyer_id = base._int_arg(request.match_info["buyer_id"], "buyer")
    except ValidationError:
        raise web.HTTPNotFound() from None
    async with request.app[keys.SESSIONS]() as s:
        try:
            campaign = await repo.get_campaign(s, campaign_id)
            buyer = await repo.get_buyer(s, buyer_id)
        except ValidationError:
            raise web.HTTPNotFound() from None
        links = {b.id: link for link, b in await store.campaign_buyers(s, campaign.id)}
        if buyer.id not in links:
            raise web.HTTPNotFound()
        overrides = await repo_routing.get_buyer_rules(s, buyer.id, campaign.id)
        buyer_rules = await repo_routing.get_buyer_rules(s, buyer.id)
    return campaign, buyer, links[buyer.id], overrides, buyer_rules


async def link_page(request: web.Request, values=None, errors=None, status=200) -> web.Response:
    need(request, "read")
    campaign, buyer, link, overrides, buyer_rules = await _load(request)
    if values is None:
        values = {k: _text(v) for k, v in overrides.items() if k not in SKIP}
        values["priority"] = str(overrides.get("priority", link.priority))
        values["paused"] = "1" if overrides.get("paused") else ""
    return base.render(request, "link_form.html", status=status, campaign=campaign, buyer=buyer, link=link,
                        fields=link_fields(), values=values, errors=errors or {},
                        base={k: _text(v) for k, v in buyer_rules.items()}, zone_names=timezones.names())


async def link_save(request: web.Request) -> web.Response:
    need(request, "write")
    campaign, buyer, _link, _overrides, _base = await _load(request)
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k, _, _ in link_fields()}
    values["priority"] = str(form.get("priority", "")).strip()
    values["paused"] = "1" if form.get("paused") else ""
    changes: dict = {}
    for key, _, _ in link_fields():
        raw = values[key]
        changes[key] = [x.strip() for x in raw.replace(";", ",").split(",") if x.strip()] if key in LIST_KEYS else raw
    if values["paused"]:  # unchecked: no override (replace=True drops an old one)
        changes["paused"] = True

    async def save(s):
        await repo.set_campaign_buyer_priority(s, campaign.id, buyer.id, values["priority"] or "1")
        return await repo_routing.set_buyer_rules(s, buyer.id, zones.canonical_rules(changes), campaign.id,
                                                  replace=True)

    try:
        await base._write(request, "campaign.link", f"campaign {campaign.id} buyer {buyer.id}", values, save)
    except ValidationError as exc:
        field = exc.field if exc.field in values else "_"
        return await link_page(request, values, {field: exc.message if field != "_" else str(exc)}, status=400)
    raise web.HTTPFound(f"/campaigns/{campaign.id}/buyers/{buyer.id}?saved=1")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/campaigns/{id}/buyers/{buyer_id}", link_page)
    app.router.add_post("/campaigns/{id}/buyers/{buyer_id}", link_save)
