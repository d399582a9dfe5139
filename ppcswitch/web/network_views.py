"""Network settings that were CLI-only, in the panel: fraud prevention (block/allow lists, each
campaign's press-1 challenge, recording and block score: `ppcswitch fraud ...`, `campaign fraud`),
postback and webhook targets (`ppcswitch postback set`) and number pools (`ppcswitch pool add|add-number`).
The stores the CLI calls do the checking, in one transaction with the audit entry.
"""

from __future__ import annotations



from aiohttp import web
from sqlalchemy import select

from ppcswitch import keys
from ppcswitch.attribution import store as attribution_store
from ppcswitch.fraud import store as fraud_store
from ppcswitch.storage import models_attribution as ma
from ppcswitch.storage import models_fraud as mf
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import base
from ppcswitch.web import attribution_views, store
from ppcswitch.web.base import need


async def _names(request) -> dict:
    async with request.app[keys.SESSIONS]() as s:
        return {k: sorted((await store.names(s, k)).items(), key=lambda x: x[1].lower())
                for k in ("campaign", "publisher", "buyer")}


# --- fraud ---------------------------------------------------------------------------

async def fraud_page(request: web.Request, errors=None, values=None, status=200) -> web.Response:
    need(request, "read")
    async with request.app[keys.SESSIONS]() as s:
        entries = list(await s.scalars(select(mf.FraudListEntry).order_by(mf.FraudListEntry.kind,
                                                                          mf.FraudListEntry.pattern)))
        settings = {r.campaign_id: r for r in await s.scalars(select(mf.CampaignFraud))}
    names = await _names(request)
    return base.render(request, "fraud_settings.html", status=status, entries=entries, settings=settings,
                        names=names, campaigns=dict(names["campaign"]), errors=errors or {}, values=values or {})


async def fraud_list_add(request: web.Request) -> web.Response:
    need(request, "write")
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in ("kind", "pattern", "campaign", "note")}
    try:
        if values["kind"] not in ("block", "allow"):
            raise ValidationError("kind", "choose block or allow")
        campaign = base._int_arg(values["campaign"], "campaign") if values["campaign"] else None
        await base._write(request, f"fraud.{values['kind']}", values["pattern"][:40], values,
                           lambda s: fraud_store.add_entry(s, values["kind"], values["pattern"], campaign,
                                                           values["note"]))
    except ValidationError as exc:
        return await fraud_page(request, {"list": str(exc)}, values, status=400)
    raise web.HTTPFound("/fraud?saved=1#lists")


async def fraud_list_remove(request: web.Request) -> web.Response:
    need(request, "write")
    form = await request.post()
    kind, pattern, campaign = (str(form.get(k, "")) for k in ("kind", "pattern", "campaign"))

    async def job(s):
        n = await fraud_store.remove_entry(s, kind, pattern, int(campaign) if campaign.isdigit() else None)
        if not n:
            raise ValidationError("pattern", f"{pattern} is not on the {kind} list")
        return n

    try:
        await base._write(request, "fraud.unlist", f"{kind} {pattern}"[:60], {"campaign": campaign}, job)
    except ValidationError as exc:
        return await fraud_page(request, {"list": str(exc)}, status=400)
    raise web.HTTPFound("/fraud?saved=1#lists")


async def fraud_campaign_save(request: web.Request) -> web.Response:
    need(request, "write")
    form = await request.post()
    raw_score = str(form.get("block_score", "")).strip()
    values = {"challenge": "1" if form.get("challenge") else "", "record": "1" if form.get("record") else "",
              "block_score": raw_score}
    try:
        campaign_id = base._int_arg(request.match_info["id"], "campaign")
        text = raw_score.lower()
        try:
            score = None if text in ("", "none", "off") else int(text)
        except ValueError:
            raise ValidationError("block_score", f"a whole number from 1 to 100, or empty for none; got {raw_score!r}") \
                from None
        await base._write(request, "campaign.fraud", f"campaign {campaign_id}", values,
                           lambda s: fraud_store.set_campaign(s, campaign_id, challenge=bool(values["challenge"]),
                                                              record=bool(values["record"]), block_score=score))
    except ValidationError as exc:
        return await fraud_page(request, {f"campaign-{request.match_info['id']}": exc.message},
                                {f"campaign-{request.match_info['id']}": values}, status=400)
    raise web.HTTPFound("/fraud?saved=1#campaigns")


# --- postbacks and webhooks -----------------------------------------------------------------

async def postbacks_page(request: web.Request, errors=None, values=None, status=200) -> web.Response:
    need(request, "read")
    async with request.app[keys.SESSIONS]() as s:
        targets = list(await s.scalars(select(ma.PostbackTarget).order_by(ma.PostbackTarget.kind,
                                                                          ma.PostbackTarget.owner_id)))
        owners = {"publisher": await store.names(s, "publisher"), "buyer": await store.names(s, "buyer")}
    return base.render(request, "postback_targets.html", status=status, targets=targets, owners=owners,
                        names=await _names(request), errors=errors or {}, values=values or {})


async def postback_save(request: web.Request) -> web.Response:
    need(request, "write")
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in ("owner", "url", "secret")}
    kind, _, ident = values["owner"].partition(":")  # "publisher:3" or "buyer:7"
    values["kind"] = kind
    try:
        if kind not in ("publisher", "buyer") or not ident:
            raise ValidationError("owner", "choose the publisher or buyer")
        owner = base._int_arg(ident, "owner")
        await base._write(request, "postback.set", f"{values['kind']} {owner}",
                           {k: v for k, v in values.items() if k != "secret"},
                           lambda s: attribution_store.set_target(s, values["kind"], owner, values["url"],
                                                                  values["secret"]))
    except ValidationError as exc:
        return await postbacks_page(request, {exc.field if exc.field in values else "_": exc.message}, values,
                                    status=400)
    raise web.HTTPFound("/postbacks?saved=1")


# --- pools ---------------------------------------------------------------------------------

async def pool_add(request: web.Request) -> web.Response:
    need(request, "write")
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in ("name", "campaign", "publisher", "lease_seconds")}
    try:
        campaign = base._int_arg(values["campaign"] or "0", "campaign")
        publisher = base._int_arg(values["publisher"] or "0", "publisher")
        lease = base._int_arg(values["lease_seconds"] or "0", "lease_seconds", 10, 86400)
        await base._write(request, "pool.create", values["name"][:100], values,
                           lambda s: attribution_store.create_pool(s, values["name"], campaign, publisher, lease))
    except ValidationError as exc:
        return await pools_page(request, {"pool": str(exc)}, values, status=400)
    raise web.HTTPFound("/pools?saved=1")


async def pool_number_add(request: web.Request) -> web.Response:
    need(request, "write")
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in ("pool", "number")}
    region = request.app[keys.SETTINGS].routing.default_region
    try:
        await base._write(request, "pool.add_number", values["pool"][:100], values,
                           lambda s: attribution_store.add_pool_number(s, values["pool"], values["number"],
                                                                       region=region))
    except ValidationError as exc:
        return await pools_page(request, {"number": str(exc)}, values, status=400)
    raise web.HTTPFound("/pools?saved=1")


async def pools_page(request: web.Request, errors=None, values=None, status=200) -> web.Response:
    need(request, "read")
    return base.render(request, "pools.html", status=status, pools=await attribution_views.pools_overview(request.app),
                        names=await _names(request), errors=errors or {}, values=values or {})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/pools", pools_page)  # number pools with their add-pool / add-number forms
    r.add_get("/fraud", fraud_page)
    r.add_post("/fraud/lists", fraud_list_add)
    r.add_post("/fraud/lists/remove", fraud_list_remove)
    r.add_post("/fraud/campaigns/{id}", fraud_campaign_save)
    r.add_get("/postbacks", postbacks_page)
    r.add_post("/postbacks", postback_save)
    r.add_post("/pools", pool_add)
    r.add_post("/pools/numbers", pool_number_add)


