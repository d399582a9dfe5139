"""Configuration: one TOML file plus PPCSWITCH_<SECTION>_<KEY> environment variables.

Every setting has a default, so no file is needed to start. Precedence:
defaults < TOML file (--config or PPCSWITCH_CONFIG) < environment.
Every setting must be documented in README.md (tests/core/test_config.py checks).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    """A setting is unknown or has a value of the wrong type."""


@dataclass
class DatabaseSettings:
    # Embedded SQLite by default; postgresql+asyncpg://user@host/db for PostgreSQL.
    url: str = "sqlite+aiosqlite:////var/lib/ppcswitch/ppcswitch.db"
    # Run migrations automatically on start (always safe for SQLite).
    auto_migrate: bool = True
    # Most writes waiting for the writer before callers are slowed down.
    write_queue_max: int = 10000


@dataclass
class AgiSettings:
    host: str = "127.0.0.1"
    port: int = 4573
    # A client must send its whole AGI header within this many seconds.
    header_timeout: float = 2.0
    # Largest AGI header block accepted, in bytes.
    max_header_bytes: int = 16384
    # Asterisk must answer each AGI command within this many seconds.
    command_timeout: float = 5.0
    # Addresses/networks (comma-separated) allowed to connect; empty = loopback only.
    allowed_peers: str = ""


@dataclass
class AmiSettings:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "ppcswitch"
    secret: str = ""
    # Seconds between pings, and how long a pong may take before the link is declared dead.
    ping_interval: float = 5.0
    pong_timeout: float = 3.0
    # Reconnect back-off bounds, in seconds (doubles from min up to max).
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0


@dataclass
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Mark panel cookies Secure (send them over HTTPS only); set when a TLS proxy is in front.
    secure_cookies: bool = False
    # Hours a panel login lasts before the user must log in again.
    session_hours: float = 12.0
    # Hours a partner's invitation link stays valid (it works once).
    invite_hours: float = 72.0
    # Let partners point their own postbacks at this host or a private network (tests, closed networks).
    partner_private_urls: bool = False
    # HTTP Basic credentials for /metrics (empty password: no credentials asked).
    metrics_username: str = "prometheus"
    metrics_password: str = ""


@dataclass
class RoutingSettings:
    # Region used to read national numbers (DNIS and caller ID) as E.164.
    default_region: str = "US"
    # Calls with a withheld or anonymous caller ID are refused when false.
    allow_anonymous: bool = False
    # How often, in seconds, the controller checks for configuration changes.
    reload_interval: float = 2.0
    # Name of the buyer dialled by the dialplan when the controller is unreachable
    # (empty: play a message and hang up with cause 34 so the carrier fails over).
    fallback_buyer: str = ""
    # Endpoint used to dial buyers whose destination is a SIP URI.
    buyer_endpoint: str = "ppcswitch-buyer"
    # Most real-time-bidding pings per publisher per minute (0: no cap).
    rtb_max_pings_per_minute: int = 0


@dataclass
class BillingSettings:
    # The network's one currency (ISO 4217); every amount is integer minor units of it.
    currency: str = "USD"
    # Days after a call during which its buyer may dispute it.
    dispute_window_days: int = 30
    # Time zone of report periods when none is given.
    report_timezone: str = "UTC"


@dataclass
class SandboxSettings:
    # Where `ppcswitch sandbox` keeps its Debian root with Asterisk and SIPp.
    root: str = "/var/lib/ppcswitch/sandbox/root"
    # Debian suite and mirror used to build it.
    suite: str = "sid"
    mirror: str = ""


@dataclass
class RecoverySettings:
    # Asterisk's own CDR file (cdr_csv, usegmtime): calls the controller missed are recovered from it; '' = off.
    cdr_file: str = "/var/log/asterisk/cdr-csv/Master.csv"
    # Seconds between passes that rebuild live calls from Asterisk and recover missed calls.
    interval: float = 30.0
    # CDR rows older than this many hours are never recovered.
    max_age_hours: float = 24.0


@dataclass
class AttributionSettings:
    # Leases per second per client address on the public lease endpoint (and the burst allowed).
    lease_rate_per_client: float = 1.0
    lease_burst_per_client: float = 10.0
    # Leases per second per publisher key (and the burst allowed).
    lease_rate_per_publisher: float = 500.0
    lease_burst_per_publisher: float = 2000.0
    # SIP headers read from inbound calls, as Header=field pairs (fields: sub_id, click_id, utm_*, keyword).
    sip_headers: str = "X-Sub-Id=sub_id,X-Click-Id=click_id"
    # Postback retries: first delay and longest delay in seconds (doubling), and attempts before giving up.
    postback_retry_min: float = 5.0
    postback_retry_max: float = 3600.0
    postback_max_attempts: int = 20
    # Seconds a postback receiver may take to answer.
    postback_timeout: float = 10.0
    # Telnyx number API (ppcswitch provider ...): API key (empty: off), base URL, SIP connection for new numbers.
    provider_api_key: str = ""
    provider_url: str = "https://api.telnyx.com/v2"
    provider_connection_id: str = ""
    # Sound(s) asking the caller for a publisher code at numbers that ask for one ('&' joins several).
    code_prompt: str = "beep"


@dataclass
class FraudSettings:
    # Hours within which the same caller on another publisher is a repeat caller.
    repeat_window_hours: float = 24.0
    # Minutes of the caller velocity window.
    velocity_window_minutes: float = 10.0
    # Calls from one caller within the velocity window (this one included) that flag it.
    velocity_calls: int = 3
    # Seconds above the billable minimum that count as "near the threshold".
    threshold_margin_seconds: int = 5
    # A publisher's share of connected calls near the threshold that flags its calls.
    clustering_share: float = 0.5
    # Connected calls a publisher needs before its threshold share counts.
    clustering_min_calls: int = 10
    # Connected seconds before a silent call can be called "no conversation".
    no_conversation_seconds: int = 5
    # A call scoring at or above this counts as flagged (metrics, quality view, alerts).
    flag_score: int = 40
    # Minutes of the alert window.
    alert_window_minutes: float = 60.0
    # Calls a publisher or buyer needs in the window before its rate counts.
    alert_min_calls: int = 10
    # Flagged share of a publisher's calls that raises an alert (0: off).
    alert_flagged_rate: float = 0.5
    # Unanswered share of a buyer's attempts that raises an alert (0: off).
    alert_unanswered_rate: float = 0.8
    # Pause the alerted publisher (or buyer) automatically, with an audit entry.
    auto_pause: bool = False
    # URL that receives each alert as a JSON POST ('' = none).
    alert_webhook: str = ""
    # External transcript/AI scorer: URL receiving each finished call as JSON, answering {"points", "detail"} ('' = off).
    scorer_url: str = ""
    # Seconds to wait for the external scorer before storing the call without its points.
    scorer_timeout: float = 2.0


@dataclass
class RecordingSettings:
    # Directory for call recordings as Asterisk sees it (MixMonitor writes there).
    directory: str = "/var/spool/asterisk/monitor/ppcswitch"
    # The same directory as the controller sees it ('' = same path; differs when Asterisk runs in a chroot/container).
    local_directory: str = ""
    # Days recordings are kept before the clean-up deletes them (0: forever).
    retention_days: int = 90


@dataclass
class IntelligenceSettings:
    # Speech-to-text engine for recorded calls: "pocketsphinx" (embedded, the default), "package.module:Class", '' = off.
    engine: str = "pocketsphinx"
    # Worker processes transcribing (each takes about one core while busy).
    workers: int = 1
    # CPU priority given up by the workers (nice), so Asterisk and the controller come first.
    nice: int = 10
    # Calls waiting for transcription before new recordings are skipped (counted), never slowing calls.
    queue_max: int = 10000
    # Tries per call (missing file, engine failure) before it is marked failed; the first retry waits retry_seconds, doubling.
    max_attempts: int = 5
    retry_seconds: float = 5.0
    # Digit runs at least this long (card numbers, SSNs, spoken or not) are redacted from transcripts (0: off).
    redact_min_digits: int = 6
    # Also mute the redacted digit runs in the stored recordings (the controller needs write access to them).
    redact_audio: bool = False
    # Days transcripts are kept before the clean-up deletes them (0: forever).
    retention_days: int = 90
    # AI score below which the QC view counts a call as flagged.
    low_score: int = 40
    # Share of a publisher's transcribed calls below low_score that raises an alert (fraud.alert_* window,
    # webhook and auto-pause; 0: off).
    alert_low_score_rate: float = 0.0


@dataclass
class ClusterSettings:
    # This controller's node name when several Asterisk nodes share one database ('' = a single box):
    # keys its recovery state and is the `node` label of ppcswitch_node_info on /metrics.
    node: str = ""
    # Where caps, budgets and concurrency are reserved: "memory" (this controller's calls only) or
    # "postgresql" (every controller on the database: caps hold across the cluster; PostgreSQL only).
    reservations: str = "memory"
    # Seconds a controller's reservations outlive it when it dies (it renews them every third of this).
    lease_seconds: float = 30.0


@dataclass
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    agi: AgiSettings = field(default_factory=AgiSettings)
    ami: AmiSettings = field(default_factory=AmiSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    billing: BillingSettings = field(default_factory=BillingSettings)
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    fraud: FraudSettings = field(default_factory=FraudSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    intelligence: IntelligenceSettings = field(default_factory=IntelligenceSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)


ENV_PREFIX = "PPCSWITCH_"


def _coerce(name: str, typ: Any, value: Any) -> Any:
    typ = {"str": str, "int": int, "float": float, "bool": bool}.get(typ, typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


def all_settings() -> list[tuple[str, str, Any]]:
    """(section, key, default) for every setting, for docs and checks."""
    out = []
    for sec in dataclasses.fields(Settings):
        for f in dataclasses.fields(sec.default_factory()):  # type: ignore[misc]
            out.append((sec.name, f.name, getattr(sec.default_factory(), f.name)))  # type: ignore[misc]
    return out


def load_settings(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    settings = Settings()
    path = path or env.get(ENV_PREFIX + "CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    sections = {f.name: f for f in dataclasses.fields(Settings)}
    for sec_name, values in data.items():
        if sec_name not in sections or not isinstance(values, dict):
            raise ConfigError(f"unknown config section [{sec_name}]")
        section = getattr(settings, sec_name)
        fields = {f.name: f for f in dataclasses.fields(section)}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(f"unknown setting {sec_name}.{key}")
            setattr(section, key, _coerce(f"{sec_name}.{key}", fields[key].type, value))
    for sec_name in sections:
        section = getattr(settings, sec_name)
        for f in dataclasses.fields(section):
            var = f"{ENV_PREFIX}{sec_name.upper()}_{f.name.upper()}"
            if var in env:
                setattr(section, f.name, _coerce(var, f.type, env[var]))
    engine = settings.intelligence.engine.strip()
    if engine not in ("", "pocketsphinx") and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", engine):
        raise ConfigError(f"intelligence.engine: expected 'pocketsphinx', 'package.module:Class' or empty (off), "
                          f"got {engine!r}")
    if settings.cluster.reservations not in ("memory", "postgresql"):
        raise ConfigError(f"cluster.reservations: expected memory or postgresql, got {settings.cluster.reservations!r}")
    if settings.cluster.reservations == "postgresql" and not settings.database.url.startswith("postgresql"):
        raise ConfigError("cluster.reservations = postgresql needs database.url on PostgreSQL")
    if settings.cluster.lease_seconds < 3:
        raise ConfigError(f"cluster.lease_seconds: at least 3, got {settings.cluster.lease_seconds!r}")
    if not sound_names_ok(settings.attribution.code_prompt):
        raise ConfigError(f"attribution.code_prompt: expected Asterisk sound names joined by '&' "
                          f"(letters, digits, / _ -), got {settings.attribution.code_prompt!r}")
    return settings


def sound_names_ok(value: str) -> bool:
    """Sound names the dialplan may play: nothing in them can reach the dialplan as syntax."""
    return len(value) <= 200 and all(
        p and all(ch.isascii() and (ch.isalnum() or ch in "/_-") for ch in p) and ".." not in p
        and not p.startswith("/") for p in value.split("&")) if value else True
