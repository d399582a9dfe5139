"""Pools, leases, exhaustion, cleaning and the rate limiter (plain unit tests)."""

from ppcswitch.attribution.clean import clean, values_from
from ppcswitch.attribution.pools import Pool, Pools
from ppcswitch.attribution.ratelimit import RateLimiter

NUMS = ("+18005550150", "+18005550151")


def pools(lease_seconds=60):
    p = Pools()
    p.replace([Pool(1, "fb", 1, 1, "k1", lease_seconds, NUMS)])
    return p


def test_lease_gives_free_numbers_then_reuses_the_oldest_and_counts_the_shortage():
    p = pools()
    a, short_a = p.lease(1, {"sub_id": "a"}, now=0)
    b, short_b = p.lease(1, {"sub_id": "b"}, now=1)
    assert {a.number, b.number} == set(NUMS) and not short_a and not short_b
    c, short_c = p.lease(1, {"sub_id": "c"}, now=2)
    assert short_c and c.number == a.number and p.shortages(1) == 1
    assert p.attribution(a.number, 3).values == {"sub_id": "c"}
    # The visitor whose lease was taken gets a new one, not the reused number's.
    d, _ = p.lease(1, {"sub_id": "a"}, now=3, token=a.token)
    assert d.token != a.token and d.number == b.number


def test_lease_expires_unless_renewed():
    p = pools(lease_seconds=10)
    a, _ = p.lease(1, {"sub_id": "fb-123"}, now=0)
    assert p.attribution(a.number, 9.9).values["sub_id"] == "fb-123"
    assert p.attribution(a.number, 10) is None
    b, _ = p.lease(1, {"sub_id": "x"}, now=20)  # both free: never-used first... any free one, no shortage
    assert p.shortages(1) == 0
    p2 = pools(lease_seconds=10)
    a, _ = p2.lease(1, {"sub_id": "fb-123"}, now=0)
    renewed, short = p2.lease(1, {}, now=8, token=a.token)
    assert renewed is a and not short and p2.attribution(a.number, 17).values["sub_id"] == "fb-123"
    # Renewed, the number went to the back: the other one is leased next.
    assert p2.lease(1, {}, now=9)[0].number != a.number


def test_reload_keeps_live_leases_and_drops_removed_numbers():
    p = pools()
    a, _ = p.lease(1, {"sub_id": "a"}, now=0)
    p.replace([Pool(1, "fb", 1, 1, "k2", 60, NUMS + ("+18005550152",))])
    assert p.attribution(a.number, 1).values == {"sub_id": "a"}
    assert p.pool_for_key("k1") is None and p.pool_for_key("k2").id == 1
    p.replace([Pool(1, "fb", 1, 1, "k2", 60, ("+18005550152",))])
    assert p.attribution(a.number, 1) is None and not p.is_pool_number(a.number)


def test_clean_cuts_and_removes_metacharacters():
    assert clean("fb-123") == "fb-123"
    assert clean("${SHELL(rm -rf /)},x;y|z\r\n") == "SHELLrm-rfxyz"
    assert len(clean("a" * 5000)) == 64
    assert values_from({"sub_id": "fb-123", "click_id": "abc", "utm_source": "", "evil": "x"}) == \
        {"sub_id": "fb-123", "click_id": "abc"}


def test_rate_limiter_allows_burst_then_rate():
    r = RateLimiter(rate=2, burst=3)
    assert [r.allow("ip", 0) for _ in range(4)] == [True, True, True, False]
    assert r.allow("other", 0)
    assert not r.allow("ip", 0.4) and r.allow("ip", 0.5)
