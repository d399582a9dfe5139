"""Number provisioning through a carrier's number API: search by area code, order, release.

`NumberProvider` is the interface; `TelnyxProvider` implements it for Telnyx's
v2 REST API as documented publicly (Bearer API key; GET /available_phone_numbers
with filter[...] parameters, POST /number_orders, GET /phone_numbers?filter[phone_number]=
then DELETE /phone_numbers/{id}). It is tested against a local server that
follows that documentation, not against the live carrier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp

from ppcswitch.money import parse_cents


class ProviderError(Exception):
    """The carrier refused or failed; the message says why, in the carrier's words."""


@dataclass(frozen=True)
class AvailableNumber:
    number: str  # E.164
    monthly_cents: int | None
    upfront_cents: int | None
    region: str  # e.g. "NY" / rate center, as the carrier names it


@dataclass(frozen=True)
class Order:
    id: str
    status: str  # the carrier's word: pending, success, failure
    numbers: tuple[str, ...]


class NumberProvider(Protocol):
    async def search(self, area_code: str, limit: int = 10) -> list[AvailableNumber]: ...
    async def order(self, numbers: list[str]) -> Order: ...
    async def release(self, number: str) -> None: ...


def _cents(value) -> int | None:
    try:
        return parse_cents(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


class TelnyxProvider:
    def __init__(self, api_key: str, base_url: str = "https://api.telnyx.com/v2", timeout: float = 15.0,
                 connection_id: str = "") -> None:
        if not api_key:
            raise ProviderError("no API key: set attribution.provider_api_key")
        self.base_url, self.connection_id = base_url.rstrip("/"), connection_id
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(self, method: str, path: str, *, params=None, json=None) -> dict:
        async with aiohttp.ClientSession(timeout=self._timeout, headers=self._headers) as http:
            try:
                async with http.request(method, self.base_url + path, params=params, json=json) as resp:
                    body = await resp.json(content_type=None) if resp.content_length != 0 else {}
                    if resp.status >= 400:
                        errors = (body or {}).get("errors") or [{}]
                        e = errors[0]
                        raise ProviderError(f"Telnyx {resp.status}: {e.get('title', '')} {e.get('detail', '')}".strip())
                    return body or {}
            except (aiohttp.ClientError, ValueError) as exc:
                raise ProviderError(f"Telnyx unreachable or answered nonsense: {exc}") from None

    async def search(self, area_code: str, limit: int = 10) -> list[AvailableNumber]:
        if not (area_code.isdigit() and len(area_code) == 3):
            raise ProviderError("an area code is 3 digits")
        body = await self._call("GET", "/available_phone_numbers", params={
            "filter[country_code]": "US", "filter[national_destination_code]": area_code,
            "filter[features][]": "voice", "filter[limit]": str(max(1, min(int(limit), 100)))})
        out = []
        for item in body.get("data", []):
            cost = item.get("cost_information") or {}
            regions = item.get("region_information") or [{}]
            out.append(AvailableNumber(item["phone_number"], _cents(cost.get("monthly_cost")),
                                       _cents(cost.get("upfront_cost")), str(regions[0].get("region_name", ""))))
        return out

    async def order(self, numbers: list[str]) -> Order:
        payload: dict = {"phone_numbers": [{"phone_number": n} for n in numbers]}
        if self.connection_id:  # the SIP connection the numbers are pointed at
            payload["connection_id"] = self.connection_id
        data = (await self._call("POST", "/number_orders", json=payload)).get("data", {})
        return Order(str(data.get("id", "")), str(data.get("status", "")),
                     tuple(p["phone_number"] for p in data.get("phone_numbers", [])))

    async def release(self, number: str) -> None:
        found = (await self._call("GET", "/phone_numbers", params={"filter[phone_number]": number})).get("data", [])
        if not found:
            raise ProviderError(f"{number} is not a number of this Telnyx account")
        await self._call("DELETE", f"/phone_numbers/{found[0]['id']}")
