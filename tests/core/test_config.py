"""Configuration: defaults, file, environment, clear errors, and every setting documented."""

import re
from pathlib import Path

import pytest

from ppcswitch import channel_vars as cv
from ppcswitch.config import ConfigError, all_settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for section, key, _default in all_settings():
        assert f"`{section}.{key}`" in readme, f"{section}.{key} is not in README.md"
        assert f"`PPCSWITCH_{section.upper()}_{key.upper()}`" in readme


def test_no_file_needed_and_env_wins_over_file(tmp_path):
    assert load_settings(env={}).agi.host == "127.0.0.1"
    f = tmp_path / "c.toml"
    f.write_text('[agi]\nport = 5000\n[routing]\nallow_anonymous = true\n')
    s = load_settings(f, env={"PPCSWITCH_AGI_PORT": "6000"})
    assert s.agi.port == 6000 and s.routing.allow_anonymous is True


@pytest.mark.parametrize(
    "text,env,message",
    [
        ("[nope]\nx=1\n", {}, "unknown config section"),
        ("[agi]\nprot=1\n", {}, "unknown setting agi.prot"),
        ('[agi]\nport="x"\n', {}, "agi.port: expected an integer"),
        ("[agi\n", {}, "c.toml"),
        ("", {"PPCSWITCH_ROUTING_ALLOW_ANONYMOUS": "maybe"}, "expected true/false"),
    ],
)
def test_bad_configuration_gives_a_clear_error(tmp_path, text, env, message):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(f, env=env)


def test_channel_variables_agree_with_dialplan_and_manager_conf():
    dialplan = (ROOT / "dialplans/ppcswitch.conf").read_text()
    for name in (cv.ROUTE_STATUS, cv.DEST, cv.DIAL_TIMEOUT, cv.BUYER_ID, cv.ATTEMPT, cv.HANGUP_CAUSE, cv.FALLBACK_DEST, cv.ATTEMPT_EVENT, cv.FALLBACK_EVENT):
        assert name in dialplan, name
    used = set(re.findall(r"\bPPC_[A-Z_]+\b", dialplan))
    known = {v for k, v in vars(cv).items() if isinstance(v, str) and v.startswith("PPC_")} | {"PPC_AGI_URL"}
    assert used <= known, f"dialplan uses names missing from channel_vars.py: {used - known}"
    for name in cv.RESULT_VARS:  # cleared before every AGI
        assert dialplan.count(f"Set({name}=)") >= 2, name
    manager = (ROOT / "asterisk/manager.conf").read_text()
    m = re.search(r"^channelvars\s*=\s*(.+)$", manager, re.M)
    assert m and [v.strip() for v in m.group(1).split(",")] == list(cv.AMI_CHANNELVARS)
