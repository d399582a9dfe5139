"""agi://.../zip: the caller keyed in a ZIP code; decide again with its state."""

from __future__ import annotations

from ppcswitch.agi.server import AgiRequest
from ppcswitch.routing.service import Router
from ppcswitch.routing.shared import confirm  # the cluster's shared reservations admit the buyer


def make_handler(router: Router):
    async def zip_code(request: AgiRequest) -> None:
        linkedid = (request.args[0] if request.args else "") or request.headers.get("agi_uniqueid", "")
        digits = request.args[1] if len(request.args) > 1 else ""
        for name, value in (await confirm(router, linkedid, await router.with_zip_async(linkedid, digits))).items():
            await request.set_variable(name, value)

    return zip_code
