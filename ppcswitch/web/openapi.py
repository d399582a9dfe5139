"""The OpenAPI 3.0 document of /api/v1, kept next to the handlers (api.py) it describes.

tests/web/test_api_schema.py runs schemathesis against it: every documented
operation is called with generated data and each answer must match this.
"""

from __future__ import annotations

from functools import lru_cache

from ppcswitch.web.openapi_schema import ERROR, ID, NTIME, TIME, _errors, _json, _obj, _param, _ref

MONEY_IN = {"type": "string", "description": "decimal amount, e.g. 40.00", "example": "40.00"}
ASK_CODE = {"type": "boolean", "description": "callers key in a publisher code (IVR) before routing"}


SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "object", "required": ["status", "code", "message", "field"], "properties": {
            "status": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"},
            "field": {"type": "string", "nullable": True}}},
        "rows": {"type": "integer"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/RowError"}}}},
    "RowError": _obj({"line": {"type": "integer"}, "field": {"type": "string"}, "message": {"type": "string"}}),
    "Buyer": _obj({"id": ID, "name": {"type": "string"}, "destination": {"type": "string"},
                   "revenue": {"type": "string"}, "revenue_cents": {"type": "integer"},
                   "ring_timeout": {"type": "integer"}, "concurrency_cap": {"type": "integer", "nullable": True},
                   "min_duration": {"type": "integer"}, "paused": {"type": "boolean"}, "created_at": TIME}),
    "BuyerInput": _obj({"name": {"type": "string", "example": "Cool Air"},
                        "destination": {"type": "string", "example": "sip:+15550001111@203.0.113.10:5060"},
                        "revenue": MONEY_IN, "ring_timeout": {"type": "integer", "minimum": 1, "maximum": 300},
                        "concurrency_cap": {"type": "integer", "minimum": 1, "maximum": 10000, "nullable": True},
                        "min_duration": {"type": "integer", "minimum": 0, "maximum": 86400},
                        "paused": {"type": "boolean"}}, required=[]),
    "Publisher": _obj({"id": ID, "name": {"type": "string"}, "payout": {"type": "string"},
                       "payout_cents": {"type": "integer"}, "paused": {"type": "boolean"}, "created_at": TIME}),
    "PublisherInput": _obj({"name": {"type": "string"}, "payout": MONEY_IN, "paused": {"type": "boolean"}},
                           required=[]),
    "Campaign": _obj({"id": ID, "name": {"type": "string"}, "paused": {"type": "boolean"}, "created_at": TIME}),
    "CampaignInput": _obj({"name": {"type": "string"}, "paused": {"type": "boolean"}}, required=[]),
    "CampaignBuyer": _obj({"buyer_id": ID, "priority": {"type": "integer"}}),
    "Number": _obj({"number": {"type": "string"}, "campaign_id": ID, "publisher_id": ID,
                    "ask_publisher_code": {"type": "boolean"}, "created_at": TIME}),
    "NumberInput": _obj({"number": {"type": "string", "example": "+18005550199",
                                    "description": "any format; stored in E.164"},
                         "campaign_id": ID, "publisher_id": ID,
                         "campaign": {"type": "string", "description": "the campaign's name (instead of campaign_id, "
                                      "as in the CSV import)", "example": "HVAC"},
                         "publisher": {"type": "string", "description": "the publisher's name (instead of "
                                       "publisher_id)", "example": "Acme"},
                         "ask_publisher_code": ASK_CODE},
                        required=["number"]),
    "NumberAssign": _obj({"campaign_id": ID, "publisher_id": ID, "campaign": {"type": "string"},
                          "publisher": {"type": "string"}, "ask_publisher_code": ASK_CODE}, required=[]),
    "PublisherCode": _obj({"code": {"type": "string"}, "publisher_id": ID, "publisher": {"type": "string"},
                           "sub_id": {"type": "string", "description": "'' for a publisher code"}}),
    "PublisherCodeInput": _obj({"publisher_id": ID,
                                "sub_id": {"type": "string", "maxLength": 64, "example": "radio-1",
                                           "description": "calls with this code are attributed to this sub-ID"}},
                               required=["publisher_id"]),
    "ImportInput": _obj({"csv": {"type": "string", "example": "number,campaign,publisher\n+18005550199,HVAC,Acme\n"},
                         "dry_run": {"type": "boolean"}}, required=["csv"]),
    "ImportResult": _obj({"imported": {"type": "integer"}, "valid_rows": {"type": "integer"},
                          "dry_run": {"type": "boolean"}}),
    "Attempt": _obj({"seq": {"type": "integer"}, "buyer_id": {"type": "integer", "nullable": True},
                     "dial_status": {"type": "string"}, "started_at": NTIME, "answered_at": NTIME,
                     "ended_at": NTIME}),
    "Call": _obj({"id": {"type": "integer"}, "linkedid": {"type": "string"}, "tracking_number": {"type": "string"},
                  "caller": {"type": "string"}, "caller_valid": {"type": "boolean"}, "started_at": TIME,
                  "answered_at": NTIME, "ended_at": TIME, "outcome": {"type": "string"},
                  "campaign_id": {"type": "integer", "nullable": True},
                  "publisher_id": {"type": "integer", "nullable": True},
                  "buyer_id": {"type": "integer", "nullable": True}, "connected_ms": {"type": "integer"},
                  "hangup_cause": {"type": "integer", "nullable": True}, "hangup_cause_text": {"type": "string"},
                  "reject_reason": {"type": "string"}, "billable": {"type": "boolean"},
                  "billing_reasons": {"type": "array", "items": {"type": "string"}},
                  "revenue_cents": {"type": "integer"}, "payout_cents": {"type": "integer"},
                  "attempts": {"type": "array", "items": {"$ref": "#/components/schemas/Attempt"}}},
                 required=["id", "linkedid", "started_at", "outcome", "billable", "billing_reasons"]),
    "LiveCall": _obj({"linkedid": {"type": "string"}, "started_at": TIME, "dialled": {"type": "string"},
                      "caller": {"type": "string"}, "attempts": {"type": "integer"}, "answered": {"type": "boolean"},
                      "campaign": {"type": "string"}, "publisher": {"type": "string"},
                      "buyer": {"type": "string", "description": "the buyer connected, else the one being dialled"},
                      "state": {"type": "string", "description": "the caller's US state, '' when not known"},
                      "elapsed_s": {"type": "integer", "description": "seconds since the call came in"},
                      "talking_s": {"type": "integer", "description": "seconds since a buyer answered (0: none yet)"}}),
    "CapUse": _obj({"name": {"type": "string"}, "live": {"type": "integer"},
                    "cap": {"type": "integer", "nullable": True}, "paused": {"type": "boolean"}}),
    "Rules": {"type": "object", "description": "a buyer's routing rules (ppcswitch.routing.rules), or its "
              "overrides on one campaign; a rule not given does not apply (PUT) or stays as it is (PATCH, where "
              "null or \"\" removes it). Rules added to the routing module later are accepted too.",
              "properties": {
                  "timezone": {"type": "string", "description": "IANA zone of hours, closed dates and cap periods "
                               "(any case; default UTC)", "example": "America/New_York"},
                  "hours": {"type": "string", "description": "weekly schedule", "example": "mon-fri 09:00-17:00"},
                  "closed_dates": {"type": "array", "items": {"type": "string", "format": "date"}},
                  "states_allowed": {"type": "array", "items": {"type": "string"}, "example": ["CA", "TX"]},
                  "states_denied": {"type": "array", "items": {"type": "string"}},
                  "area_codes_allowed": {"type": "array", "items": {"type": "string"}, "example": ["212"]},
                  "area_codes_denied": {"type": "array", "items": {"type": "string"}},
                  **{k: {"type": "integer", "minimum": 0, "description": d} for k, d in (
                      ("cap_hourly", "connected calls per local hour"), ("cap_daily", "connected calls per local day"),
                      ("cap_monthly", "connected calls per local month"), ("cap_total", "connected calls in all"),
                      ("duplicate_days", "refuse a caller who reached this buyer within N days (0: off)"),
                      ("min_gap_seconds", "least seconds between two calls to this buyer"))},
                  "budget_daily": {"description": "revenue per local day: a decimal amount (\"500.00\"; stored as "
                                   "sent)", "example": "500.00"},
                  "budget_monthly": {"description": "revenue per local month, as budget_daily"},
                  "weight": {"type": "integer", "minimum": 1, "description": "share among buyers of equal priority"},
                  "priority": {"type": "integer", "minimum": 0, "maximum": 1000},
                  "paused": {"type": "boolean"}},
              "example": {"timezone": "America/New_York", "hours": "mon-fri 09:00-17:00", "cap_daily": 25}},
    "Rtb": _obj({"ping_url": {"type": "string", "example": "https://rtb.example/ping"},
                 "post_url": {"type": "string"}, "timeout_ms": {"type": "integer", "minimum": 10, "maximum": 10000},
                 "floor": {"type": "string", "example": "20.00"}, "share_caller": {"type": "boolean"}}),
    "RtbInput": _obj({"ping_url": {"type": "string", "example": "https://rtb.example/ping"},
                      "post_url": {"type": "string"}, "timeout_ms": {"type": "integer", "minimum": 10, "maximum": 10000},
                      "floor": MONEY_IN, "share_caller": {"type": "boolean"}}, required=[]),
    "CampaignRouting": _obj({"zip_prompt": {"type": "boolean"}, "repeat_caller": {"type": "boolean"},
                             "whisper": {"type": "string"},
                             "rtb_budget_ms": {"type": "integer", "minimum": 50, "maximum": 10000}}),
    "CampaignRoutingInput": _obj({"zip_prompt": {"type": "boolean"}, "repeat_caller": {"type": "boolean"},
                                  "whisper": {"type": "string", "example": "custom/hvac-whisper"},
                                  "rtb_budget_ms": {"type": "integer", "minimum": 50, "maximum": 10000}},
                                 required=[]),
    "ReportLine": _obj({"id": {"type": "integer"}, "name": {"type": "string"}, "calls": {"type": "integer"},
                        "connected": {"type": "integer"}, "billable": {"type": "integer"}, "paid": {"type": "integer"},
                        "billable_rate": {"type": "number"}, "receivable_cents": {"type": "integer"},
                        "payable_cents": {"type": "integer"}, "margin_cents": {"type": "integer"}}),
    "Report": _obj({"period": {"type": "string"}, "start": TIME, "end": TIME, "currency": {"type": "string"},
                    "total": {"$ref": "#/components/schemas/ReportLine"},
                    "by_campaign": {"type": "array", "items": {"$ref": "#/components/schemas/ReportLine"}},
                    "by_buyer": {"type": "array", "items": {"$ref": "#/components/schemas/ReportLine"}},
                    "by_publisher": {"type": "array", "items": {"$ref": "#/components/schemas/ReportLine"}}}),
    # Attribution (ppcswitch.web.attribution_views): delivery log, pools, sub-ID report.
    "PostbackAttempt": _obj({"at": TIME, "status_code": {"type": "integer", "nullable": True},
                             "error": {"type": "string"}, "ms": {"type": "integer"}}),
    "Postback": _obj({"id": {"type": "integer"}, "event": {"type": "string", "enum": ["billed", "reversed"]},
                      "kind": {"type": "string", "enum": ["publisher", "buyer"]}, "owner_id": {"type": "integer"},
                      "owner": {"type": "string"},
                      "url": {"type": "string", "description": "query values hidden"},
                      "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                      "created_at": TIME, "delivered_at": NTIME,
                      "next_attempt_at": {**NTIME, "description": "when a pending notification is tried next"},
                      "last_error": {"type": "string"},
                      "attempts": {"type": "array", "items": {"$ref": "#/components/schemas/PostbackAttempt"}}}),
    "Pool": _obj({"id": {"type": "integer"}, "name": {"type": "string"}, "campaign_id": {"type": "integer"},
                  "campaign": {"type": "string"}, "publisher_id": {"type": "integer"}, "publisher": {"type": "string"},
                  "key": {"type": "string"}, "lease_seconds": {"type": "integer"},
                  "numbers": {"type": "array", "items": {"type": "string"}},
                  "leased_now": {"type": "integer", "nullable": True,
                                 "description": "numbers held by a live lease (null: the controller is not running)"},
                  "shortages": {"type": "integer",
                                "description": "leases that reused a live one because the pool was exhausted"}}),
    "SubIdLine": _obj({"publisher_id": {"type": "integer", "nullable": True}, "publisher": {"type": "string"},
                       "sub_id": {"type": "string"}, "calls": {"type": "integer"}, "billable": {"type": "integer"},
                       "conversion_rate": {"type": "number", "description": "billable calls / calls"},
                       "payout": {"type": "string"}, "payout_cents": {"type": "integer"},
                       "disputed": {"type": "integer"}}),
    "SubIdReport": _obj({"period": {"type": "string"}, "start": TIME, "end": TIME,
                         "items": {"type": "array", "items": {"$ref": "#/components/schemas/SubIdLine"}}}),
    "Summary": _obj({"day": {"type": "string", "format": "date"}, "calls": {"type": "integer"},
                     "billable": {"type": "integer"}, "billable_rate": {"type": "number"},
                     "revenue_cents": {"type": "integer"}, "payout_cents": {"type": "integer"},
                     "margin_cents": {"type": "integer"},
                     "per_hour": {"type": "array", "items": {"type": "integer"}, "minItems": 23, "maxItems": 25,
                                  "description": "calls per local hour (23 or 25 on a daylight-saving change)"},
                     "hour_labels": {"type": "array", "items": {"type": "string"}, "minItems": 23, "maxItems": 25,
                                     "description": "the local hour (00-23) of each per_hour entry"},
                     "timezone": {"type": "string", "example": "America/New_York"},
                     "start": TIME, "end": TIME, "live_calls": {"type": "integer"}}),
}


def _page(item: str) -> dict:
    return _obj({"items": {"type": "array", "items": _ref(item)}, "total": {"type": "integer"},
                 "limit": {"type": "integer"}, "offset": {"type": "integer"}})


LIMIT = _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000})
OFFSET = _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 1000000000})
Q = _param("q", "query", {"type": "string", "maxLength": 100}, description="name contains")
PATH_ID = _param("id", "path", ID)
BUYER_ID = _param("buyer_id", "path", ID)
NUMBER = _param("number", "path", {"type": "string", "example": "+18005550100"})
TZ = _param("tz", "query", {"type": "string", "maxLength": 64, "example": "America/New_York"},
            description="IANA time zone of the days, any case (default: the token owner's, else the account's)")


def _body(name: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _objects(kind: str, title: str) -> dict:
    return {
        f"/{kind}s": {
            "get": {"summary": f"List {kind}s", "operationId": f"list_{kind}s", "parameters": [LIMIT, OFFSET, Q],
                    "responses": {"200": _json(_page(title)), **_errors()}},
            "post": {"summary": f"Create a {kind}", "operationId": f"create_{kind}", "requestBody": _body(f"{title}Input"),
                     "responses": {"201": _json(_ref(title), "Created"), **_errors()}},
        },
        f"/{kind}s/{{id}}": {
            "parameters": [PATH_ID],
            "get": {"summary": f"One {kind}", "operationId": f"get_{kind}",
                    "responses": {"200": _json(_ref(title)), **_errors()}},
            "patch": {"summary": f"Change a {kind} (only the fields sent)", "operationId": f"update_{kind}",
                      "requestBody": _body(f"{title}Input"), "responses": {"200": _json(_ref(title)), **_errors()}},
        },
    }


DESCRIPTIONS = {
    "list_buyers": "Buyers by name, `limit`/`offset` paged, `q` filters by name (any case). Any role.",
    "create_buyer": "A new buyer: `name` and `destination` (sip:user@host[:port] or pjsip:ENDPOINT) are required; "
                    "money is a decimal string. 409 when the name is taken. Admin.",
    "get_buyer": "One buyer by id. Any role.",
    "update_buyer": "Only the fields sent change (`paused: true` pauses it: no new calls). Admin.",
    "list_publishers": "Publishers by name, paged. Any role.",
    "create_publisher": "A new publisher with its payout per billable call. 409 when the name is taken. Admin.",
    "get_publisher": "One publisher by id. Any role.",
    "update_publisher": "Only the fields sent change. Admin.",
    "list_campaigns": "Campaigns by name, paged. Any role.",
    "create_campaign": "A new campaign (add buyers with PUT /campaigns/{id}/buyers/{buyer_id}). 409 when the "
                       "name is taken. Admin.",
    "get_campaign": "One campaign by id. Any role.",
    "update_campaign": "Only the fields sent change. Admin.",
    "get_buyer_rules": "The buyer's own routing rules as stored (keys not set do not apply). Any role.",
    "set_buyer_rules": "Replaces all of the buyer's rules with the object sent: a rule left out is removed. Use "
                       "PATCH to change some. Admin.",
    "patch_buyer_rules": "Changes only the rules sent; null or \"\" removes one. Checked as the CLI checks them "
                         "(`ppcswitch buyer rules`). Admin.",
    "get_buyer_rtb": "How the buyer is pinged for real-time bids. Any role.",
    "set_buyer_rtb": "Sets real-time bidding; an empty `ping_url` turns it off. Admin.",
    "get_campaign_routing": "ZIP prompt, repeat-caller routing, whisper and RTB time budget. Any role.",
    "set_campaign_routing": "Only the options sent change. Admin.",
    "report": "Calls, billable rate, receivable, payable and margin per campaign, buyer and publisher over local "
              "days `from`..`to` in `tz`, from the billing rollups (they agree with the ledger). Finance, admin.",
    "list_campaign_buyers": "The campaign's buyers with their priority (1 is tried first). Any role.",
    "set_campaign_buyer": "Adds the buyer to the campaign, or changes its priority. Admin.",
    "remove_campaign_buyer": "Takes the buyer off the campaign. Admin.",
    "get_link_rules": "The rules of this buyer on this campaign only (its overrides). Any role.",
    "set_link_rules": "Replaces the buyer's overrides on this campaign (caps, budgets, weight, hours...). Admin.",
    "patch_link_rules": "Changes only the overrides sent; null removes one. Admin.",
    "list_numbers": "Tracking numbers, paged; `q` finds numbers containing the digits typed, in any format "
                    "(`(415) 555-01`). Any role.",
    "create_number": "Adds a tracking number to a campaign and publisher, by id or by name (as in the CSV). 409 "
                     "when the number is taken. Admin.",
    "import_numbers": "CSV `number,campaign,publisher` with a header: every row is checked and all are imported "
                      "or none (422 lists each bad row); `dry_run` only checks. Admin.",
    "get_number": "One tracking number. Any role.",
    "assign_number": "Moves the number to another campaign and/or publisher (ids or names). Admin.",
    "release_number": "Releases the number: calls to it are no longer routed (its calls are kept). Admin.",
    "list_publisher_codes": "IVR publisher codes and the publisher / sub-ID each stands for. Any role.",
    "set_publisher_code": "Adds or moves a publisher code. Admin.",
    "remove_publisher_code": "Removes a publisher code. Admin.",
    "list_calls": "Finished calls, newest first, in keyset pages (`next_cursor`); days are local days of `tz` "
                  "(default: the token owner's zone). Any role.",
    "get_call": "One call by its linkedid, with its dial attempts. Any role.",
    "list_live_calls": "Calls in progress now (caller, number, campaign, publisher, buyer, state, elapsed "
                       "seconds) and each buyer's live calls against its concurrency cap. Any role.",
    "hangup_call": "Asks Asterisk to hang up a call in progress (503 when Asterisk is not connected). Admin.",
    "summary": "Today's (or `day`'s) totals in the time zone `tz` (default: the token owner's) and calls per "
               "local hour. Any role.",
    "list_call_postbacks": "Every postback/webhook of the call and each delivery attempt. Any role.",
    "resend_postback": "Queues a notification to be sent again. Finance, admin.",
    "list_pools": "Number pools with their numbers, live leases and shortages. Any role.",
    "sub_id_report": "Payout and conversion rate per publisher and sub-ID of calls started in the period. "
                     "Finance, admin.",
}


def query_parameters(path: str, method: str) -> set[str] | None:
    """The query parameters the document lists for an operation (None: the operation is not documented)."""
    item = document()["paths"].get(path)
    if item is None or method.lower() not in item:
        return None
    params = list(item.get("parameters", [])) + list(item[method.lower()].get("parameters", []))
    return {p["name"] for p in params if p.get("in") == "query"}


@lru_cache(maxsize=1)
def document() -> dict:
    date = {"type": "string", "format": "date"}
    paths = {**_objects("buyer", "Buyer"), **_objects("publisher", "Publisher"), **_objects("campaign", "Campaign")}
    paths["/buyers/{id}/rules"] = {
        "parameters": [PATH_ID],
        "get": {"summary": "A buyer's rules: schedule, caps, budgets, geography", "operationId": "get_buyer_rules",
                "responses": {"200": _json(_ref("Rules")), **_errors()}},
        "put": {"summary": "Replace a buyer's rules", "operationId": "set_buyer_rules", "requestBody": _body("Rules"),
                "responses": {"200": _json(_ref("Rules")), **_errors()}},
        "patch": {"summary": "Change some of a buyer's rules", "operationId": "patch_buyer_rules",
                  "requestBody": _body("Rules"), "responses": {"200": _json(_ref("Rules")), **_errors()}},
    }
    paths["/campaigns/{id}/buyers/{buyer_id}/rules"] = {
        "parameters": [PATH_ID, BUYER_ID],
        "get": {"summary": "The buyer's rules on this campaign only", "operationId": "get_link_rules",
                "responses": {"200": _json(_ref("Rules")), **_errors()}},
        "put": {"summary": "Replace the buyer's rules on this campaign", "operationId": "set_link_rules",
                "requestBody": _body("Rules"), "responses": {"200": _json(_ref("Rules")), **_errors()}},
        "patch": {"summary": "Change some of the buyer's rules on this campaign", "operationId": "patch_link_rules",
                  "requestBody": _body("Rules"), "responses": {"200": _json(_ref("Rules")), **_errors()}},
    }
    paths["/buyers/{id}/rtb"] = {
        "parameters": [PATH_ID],
        "get": {"summary": "How the buyer is reached by real-time bidding", "operationId": "get_buyer_rtb",
                "responses": {"200": _json(_ref("Rtb")), **_errors()}},
        "put": {"summary": "Set real-time bidding (an empty ping_url turns it off)", "operationId": "set_buyer_rtb",
                "requestBody": _body("RtbInput"), "responses": {"200": _json(_ref("Rtb")), **_errors()}},
    }
    paths["/campaigns/{id}/routing"] = {
        "parameters": [PATH_ID],
        "get": {"summary": "The campaign's call flow options", "operationId": "get_campaign_routing",
                "responses": {"200": _json(_ref("CampaignRouting")), **_errors()}},
        "patch": {"summary": "Change call flow options (only the fields sent)", "operationId": "set_campaign_routing",
                  "requestBody": _body("CampaignRoutingInput"),
                  "responses": {"200": _json(_ref("CampaignRouting")), **_errors()}},
    }
    paths["/reports"] = {"get": {
        "summary": "Billing report of a period (finance and admin)", "operationId": "report",
        "parameters": [_param("from", "query", date), _param("to", "query", date),
                       TZ],
        "responses": {"200": _json(_ref("Report")), **_errors()}}}
    paths["/campaigns/{id}/buyers"] = {"get": {
        "summary": "The campaign's buyers and priorities", "operationId": "list_campaign_buyers",
        "parameters": [PATH_ID],
        "responses": {"200": _json(_obj({"items": {"type": "array", "items": _ref("CampaignBuyer")}})),
                      **_errors()}}}
    paths["/campaigns/{id}/buyers/{buyer_id}"] = {
        "parameters": [PATH_ID, BUYER_ID],
        "put": {"summary": "Add a buyer to the campaign, or set its priority (lower is tried first)",
                "operationId": "set_campaign_buyer",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _obj(
                    {"priority": {"type": "integer", "minimum": 1, "maximum": 1000}}, required=[])}}},
                "responses": {"200": _json(_ref("CampaignBuyer")), **_errors()}},
        "delete": {"summary": "Take a buyer off the campaign", "operationId": "remove_campaign_buyer",
                   "responses": {"204": {"description": "Removed"}, **_errors()}},
    }
    paths["/numbers"] = {
        "get": {"summary": "List tracking numbers", "operationId": "list_numbers",
                "parameters": [LIMIT, OFFSET, _param("q", "query", {"type": "string", "maxLength": 32}),
                               _param("campaign_id", "query", ID), _param("publisher_id", "query", ID)],
                "responses": {"200": _json(_page("Number")), **_errors()}},
        "post": {"summary": "Add a tracking number", "operationId": "create_number", "requestBody": _body("NumberInput"),
                 "responses": {"201": _json(_ref("Number"), "Created"), **_errors()}},
    }
    paths["/numbers/import"] = {"post": {
        "summary": "Bulk import from CSV (number,campaign,publisher): every row or none",
        "operationId": "import_numbers", "requestBody": _body("ImportInput"),
        "responses": {"200": _json(_ref("ImportResult")), **_errors(422)}}}
    paths["/numbers/{number}"] = {
        "parameters": [NUMBER],
        "get": {"summary": "One tracking number", "operationId": "get_number",
                "responses": {"200": _json(_ref("Number")), **_errors()}},
        "patch": {"summary": "Assign to another campaign and/or publisher", "operationId": "assign_number",
                  "requestBody": _body("NumberAssign"), "responses": {"200": _json(_ref("Number")), **_errors()}},
        "delete": {"summary": "Release the number (calls to it are no longer routed)",
                   "operationId": "release_number", "responses": {"204": {"description": "Released"}, **_errors()}},
    }
    paths["/publisher-codes"] = {"get": {
        "summary": "IVR publisher codes (callers key them in at numbers that ask for one)",
        "operationId": "list_publisher_codes",
        "responses": {"200": _json(_obj({"items": {"type": "array", "items": _ref("PublisherCode")}})), **_errors()}}}
    paths["/publisher-codes/{code}"] = {
        "parameters": [_param("code", "path", {"type": "string", "example": "4711"}, description="1 to 8 digits")],
        "put": {"summary": "Add a publisher code (with sub_id: a sub-ID code), or point it elsewhere",
                "operationId": "set_publisher_code", "requestBody": _body("PublisherCodeInput"),
                "responses": {"200": _json(_ref("PublisherCode")), **_errors()}},
        "delete": {"summary": "Remove a publisher code", "operationId": "remove_publisher_code",
                   "responses": {"204": {"description": "Removed"}, **_errors()}},
    }
    paths["/calls"] = {"get": {
        "summary": "Call log, newest first", "operationId": "list_calls",
        "parameters": [LIMIT, _param("cursor", "query", {"type": "string"}, description="next_cursor of the previous page"),
                       _param("date_from", "query", date), _param("date_to", "query", date),
                       _param("campaign", "query", ID), _param("publisher", "query", ID), _param("buyer", "query", ID),
                       _param("billable", "query", {"type": "string", "enum": ["yes", "no"]}),
                       _param("caller", "query", {"type": "string", "maxLength": 64}, description="caller starts with"),
                       _param("outcome", "query", {"type": "string", "maxLength": 32}), TZ,
                       _param("state", "query", {"type": "string", "maxLength": 7},
                              description="the caller's state, two letters (e.g. TX), or unknown"),
                       _param("sub_id", "query", {"type": "string", "maxLength": 64},
                              description="the calls of this sub-ID; (none) for calls without one"),
                       _param("hour", "query", {"type": "integer", "minimum": 0, "maximum": 23},
                              description="one local hour of date_from (a drill-down from a chart)")],
        "responses": {"200": _json(_obj({"items": {"type": "array", "items": _ref("Call")},
                                         "next_cursor": {"type": "string", "nullable": True}})), **_errors()}}}
    paths["/calls/{linkedid}"] = {"get": {
        "summary": "One call with its attempts", "operationId": "get_call",
        "parameters": [_param("linkedid", "path", {"type": "string"})],
        "responses": {"200": _json(_ref("Call")), **_errors()}}}
    paths["/live-calls"] = {"get": {
        "summary": "Calls in progress and buyer cap use", "operationId": "list_live_calls",
        "responses": {"200": _json(_obj({"items": {"type": "array", "items": _ref("LiveCall")},
                                         "caps": {"type": "array", "items": _ref("CapUse")}})), **_errors()}}}
    paths["/live-calls/{linkedid}/hangup"] = {"post": {
        "summary": "Hang up a call in progress", "operationId": "hangup_call",
        "parameters": [_param("linkedid", "path", {"type": "string"})],
        "responses": {"200": _json(_obj({"result": {"type": "string"}})), **_errors(503)}}}
    paths["/summary"] = {"get": {
        "summary": "One local day: calls, billable rate, revenue, payout, margin, calls per hour",
        "operationId": "summary", "parameters": [_param("day", "query", date), TZ],
        "responses": {"200": _json(_ref("Summary")), **_errors()}}}
    paths["/calls/{linkedid}/postbacks"] = {"get": {
        "summary": "The call's postback/webhook delivery log: every notification and attempt",
        "operationId": "list_call_postbacks", "parameters": [_param("linkedid", "path", {"type": "string"})],
        "responses": {"200": _json(_obj({"items": {"type": "array", "items": _ref("Postback")}})), **_errors()}}}
    paths["/postbacks/{id}/resend"] = {"post": {
        "summary": "Queue a postback or webhook to be sent again (finance and admin)",
        "operationId": "resend_postback",
        "parameters": [_param("id", "path", {"type": "integer", "minimum": 1, "maximum": 9223372036854775807})],
        "responses": {"200": _json(_ref("Postback")), **_errors()}}}
    paths["/pools"] = {"get": {
        "summary": "Number pools: numbers, leased now, shortages", "operationId": "list_pools",
        "responses": {"200": _json(_obj({"items": {"type": "array", "items": _ref("Pool")}})), **_errors()}}}
    paths["/reports/sub-ids"] = {"get": {
        "summary": "Payout and conversion rate per publisher and sub-ID, calls started in the period "
                   "(finance and admin)", "operationId": "sub_id_report",
        "parameters": [_param("from", "query", date), _param("to", "query", date),
                       _param("tz", "query", {"type": "string", "example": "America/New_York"}),
                       _param("publisher_id", "query", ID)],
        "responses": {"200": _json(_ref("SubIdReport")), **_errors()}}}
    from ppcswitch.web import portal_api  # the partner portals' operations (partner tokens)

    paths.update(portal_api.paths())
    for item in paths.values():
        for method, op in item.items():
            if method == "parameters":
                continue
            op.setdefault("description", DESCRIPTIONS.get(op["operationId"], op["summary"] + "."))
            if method in ("post", "put", "patch"):
                op["responses"].setdefault("409", _json(ERROR, "Conflict: the name or number is taken already"))
    return {
        "openapi": "3.0.3",
        "info": {"title": "ppcswitch API", "version": "1",
                 "description": "Bearer token auth (create tokens in the panel or with `ppcswitch user token`). "
                                "Errors: {\"error\": {status, code, message, field}}."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": {**SCHEMAS, **portal_api.schemas()},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
