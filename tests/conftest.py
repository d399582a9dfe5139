"""Shared fixtures, as plugins: databases (fixtures_db.py), the sandbox Asterisk and SIPp
(fixtures_asterisk.py), a controller against them (fixtures_controller.py).

Every test that uses the sandbox, directly or through another fixture, carries the `asterisk`
marker (added here from the fixtures it uses), so `-m "not asterisk"` runs no telephony test.
"""

import pytest

pytest_plugins = ["fixtures_db", "fixtures_asterisk", "fixtures_controller"]

TELEPHONY_FIXTURES = {"sandbox", "sandbox_ami", "sipp", "sipp_buyer", "sipp_call"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TELEPHONY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.asterisk)
