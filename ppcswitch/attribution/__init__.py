"""Publisher attribution: number pools and leases (DNI), SIP header attribution, postbacks, number providers.

Decisions are plain synchronous modules (pools, clean, ratelimit, postback);
the I/O sits in service.py (HTTP, AGI, reload) and outbox.py (delivery).
"""
