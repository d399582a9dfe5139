"""schemathesis against /api/v1/openapi.json: generated calls to every documented operation on a
live server; no 5xx, and every answer's status, content type and body match the document."""

from __future__ import annotations

import asyncio
import threading

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from ppcswitch.web import openapi
from web_helpers import start, token_for

schema = schemathesis.openapi.from_dict(openapi.document())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def live_api(tmp_path_factory):
    """The API on a real port (schemathesis calls it with requests, from this thread)."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('api-schema')}/ppcswitch.db"
    loop = asyncio.new_event_loop()
    state: dict = {}
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)

        async def main():
            try:
                # Generated queries can be longer than aiohttp's 8 KiB request line, which its HTTP parser
                # answers in plain text before the app sees them: let the API itself answer them.
                client = await start(url, max_line_size=1 << 20, max_field_size=1 << 20)
                state["client"], state["token"] = client, await token_for(client, "admin")
                state["partners"] = await _partner_tokens(client)
            except BaseException as exc:  # surfaced in the test thread
                state["error"] = exc
            ready.set()

        loop.run_until_complete(main())
        loop.run_forever()

    thread = threading.Thread(target=run, name="api-schema-server", daemon=True)
    thread.start()
    assert ready.wait(60), "the API server did not start"
    if "error" in state:
        raise state["error"]
    client = state["client"]
    yield f"http://127.0.0.1:{client.server.port}/api/v1", state["token"], state["partners"]
    asyncio.run_coroutine_threadsafe(client.close(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_matches_its_openapi_document(case, live_api):
    base_url, token, _ = live_api
    case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)


async def _partner_tokens(client) -> dict[str, str]:
    """A publisher user's and a buyer user's own tokens (the portal's operations answer them)."""
    from ppcswitch import app as core
    from ppcswitch.storage import repo
    from ppcswitch.web import portal_store, security, store

    async def job(s):
        buyer = await repo.create_buyer(s, "Portal Buyer", "sip:pb@127.0.0.1:5071", revenue="40.00")
        publisher = await repo.get_publisher(s, "Acme")
        out = {}
        for kind, ident in (("publisher", publisher.id), ("buyer", buyer.id)):
            user, _link = await portal_store.invite(s, username=f"{kind}-user", kind=kind, party_id=ident,
                                                    by="admin", hours=1)
            user.password_hash = security.hash_password("correct horse battery")
            out[kind] = (await store.create_token(s, user, f"{kind}-token"))[1]
        return out

    return await client.server.app[core.WRITER].run(job)


portal_schema = schema.include(path_regex="^/portal/")


@pytest.mark.parametrize("role", ["publisher", "buyer"])
@portal_schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_portal_operations_match_the_document_with_partner_tokens(case, live_api, role):
    base_url, _, partners = live_api
    case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {partners[role]}"}, checks=CHECKS)
