"""Shared fixtures: databases (fixtures_db.py) and the sandbox Asterisk (fixtures_asterisk.py)."""

from fixtures_db import *  # noqa: F401,F403
from fixtures_asterisk import *  # noqa: F401,F403
from fixtures_controller import *  # noqa: F401,F403
