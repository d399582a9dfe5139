"""Shared fixtures, as plugins: databases (fixtures_db.py), the sandbox Asterisk and SIPp
(fixtures_asterisk.py), a controller against them (fixtures_controller.py).

Every test that uses the sandbox, directly or through another fixture, carries the `asterisk`
marker (added here from the fixtures it uses), so `-m "not asterisk"` runs no telephony test.
"""

import sys
from pathlib import Path

import pytest

# The folders mirror the package (tests/routing/, tests/billing/, ...), with the telephony tests in
# tests/telephony/ and the Chromium ones in tests/browser/. Modules are imported by name (no
# __init__.py), and a few import another folder's helpers (e.g. test_tracker's fake AMI events):
# every folder is on the path from the start, whatever order pytest collects them in.
for folder in sorted(Path(__file__).parent.iterdir()):
    if folder.is_dir() and any(folder.glob("test_*.py")) and str(folder) not in sys.path:
        sys.path.append(str(folder))

pytest_plugins = ["fixtures_db", "fixtures_asterisk", "fixtures_controller"]

TELEPHONY_FIXTURES = {"sandbox", "sandbox_ami", "sipp", "sipp_buyer", "sipp_call", "cluster"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TELEPHONY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.asterisk)
