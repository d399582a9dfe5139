"""docker-compose.yml, its Dockerfiles and the systemd unit, checked without a Docker
engine: services, build contexts and images, volumes, health checks, and every
documented port against the configuration that really opens it."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ppcswitch.config import Settings
from metrics_scrape import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def conf_value(path: str, key: str) -> str:
    """First `key = value` of an Asterisk .conf file."""
    for line in (REPO / path).read_text().splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() == key:
            return v.split(";")[0].strip()
    raise AssertionError(f"{key} not in {path}")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_four_services_build_from_the_repo_or_pinned_images():
    assert set(SERVICES) == {"asterisk", "ppcswitch", "prometheus", "grafana"}
    for name, svc in SERVICES.items():
        if "build" in svc:
            context = REPO / svc["build"]["context"]
            dockerfile = context / svc["build"]["dockerfile"]
            assert context.is_dir() and dockerfile.is_file(), name
            for instr, args in dockerfile_instructions(dockerfile):
                if instr == "COPY":
                    *sources, _dest = args.split()
                    for src in sources:
                        assert list(context.glob(src)), f"{name}: COPY {src} matches nothing in the build context"
        else:
            image, _, tag = svc["image"].rpartition(":")
            assert image and tag and tag != "latest", f"{name}: pin the image version"
    asterisk = dockerfile_instructions(REPO / SERVICES["asterisk"]["build"]["dockerfile"])
    assert any(i == "FROM" and a.startswith("debian:") for i, a in asterisk)
    assert any(i == "RUN" and "apt-get install" in a and " asterisk " in a for i, a in asterisk)
    entrypoint = REPO / "docker/asterisk-entrypoint.sh"
    assert entrypoint.stat().st_mode & 0o111 and subprocess.run(["sh", "-n", str(entrypoint)]).returncode == 0


def test_every_service_has_a_health_check_and_restarts():
    for name, svc in SERVICES.items():
        check = svc.get("healthcheck", {})
        assert check.get("test", [None])[0] == "CMD" and len(check["test"]) > 1, name
        assert check.get("interval") and check.get("retries"), name
        assert svc.get("restart") == "unless-stopped", name
    assert "8080/healthz" in " ".join(SERVICES["ppcswitch"]["healthcheck"]["test"])
    assert SERVICES["ppcswitch"]["depends_on"]["asterisk"]["condition"] == "service_healthy"


def test_volumes_keep_database_recordings_and_history():
    declared = set(COMPOSE["volumes"])
    mounts = {}
    for name, svc in SERVICES.items():
        for spec in svc.get("volumes", []):
            src, dest = spec.split(":")[:2]
            if src.startswith("."):
                assert (REPO / src).exists(), f"{name}: bind mount {src} is not in the repo"
            else:
                assert src in declared, f"{name}: volume {src} is not declared"
            mounts[(name, dest)] = src
    db_dir = str(Path(Settings().database.url.split("///", 1)[1]).parent)
    assert mounts[("ppcswitch", db_dir)] == "ppcswitch-data"
    assert mounts[("asterisk", "/var/spool/asterisk/monitor")] == "recordings"
    assert mounts[("prometheus", "/etc/prometheus")] == "./prometheus"
    assert mounts[("prometheus", "/prometheus")] == "prometheus-data"
    assert mounts[("grafana", "/etc/grafana/provisioning")] == "./grafana/provisioning"
    dash = yaml.safe_load((REPO / "grafana/provisioning/dashboards/ppcswitch.yml").read_text())["providers"][0]["options"]["path"]
    assert mounts[("grafana", dash)] == "./grafana/dashboards"
    assert mounts[("grafana", "/var/lib/grafana")] == "grafana-data"


def test_documented_ports_are_the_ports_the_configuration_opens():
    ports = COMPOSE["x-ports"]
    # Host networking: published ports would be ignored, so none are declared.
    assert all(svc.get("network_mode") == "host" and "ports" not in svc for svc in SERVICES.values())
    sip_port = conf_value("asterisk/pjsip.conf", "bind").rpartition(":")[2]
    assert ports["sip"] == f"{sip_port}/udp"
    rtp = f'{conf_value("asterisk/rtp.conf", "rtpstart")}-{conf_value("asterisk/rtp.conf", "rtpend")}'
    assert ports["rtp"] == f"{rtp}/udp"
    expose = [a for i, a in dockerfile_instructions(REPO / "docker/asterisk.Dockerfile") if i == "EXPOSE"]
    assert expose == [f"{ports['sip']} {ports['rtp']}"]
    assert ports["ami"] == f'{conf_value("asterisk/manager.conf", "bindaddr")}:{conf_value("asterisk/manager.conf", "port")}/tcp'
    assert ports["asterisk_metrics"] == f'{conf_value("asterisk/http.conf", "bindaddr")}:{conf_value("asterisk/http.conf", "bindport")}/tcp'
    agi = conf_value("asterisk/extensions.conf", "PPC_AGI_URL").removeprefix("agi://")
    assert ports["fastagi"] == f"{agi}/tcp" == f"{Settings().agi.host}:{Settings().agi.port}/tcp"
    env = SERVICES["ppcswitch"]["environment"]
    assert ports["ppcswitch_http"] == f'{env["PPCSWITCH_HTTP_HOST"]}:{env["PPCSWITCH_HTTP_PORT"]}/tcp'
    assert "--web.listen-address=" + ports["prometheus"].removesuffix("/tcp") in SERVICES["prometheus"]["command"]
    genv = SERVICES["grafana"]["environment"]
    assert ports["grafana"] == f'{genv["GF_SERVER_HTTP_ADDR"]}:{genv["GF_SERVER_HTTP_PORT"]}/tcp'
    # Only SIP and RTP leave the host; everything else is loopback.
    assert all(v.startswith("127.0.0.1:") for k, v in ports.items() if k not in ("sip", "rtp"))
    # Prometheus scrapes what is documented, Grafana reads that Prometheus.
    prom = yaml.safe_load((REPO / "prometheus/prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"][0] for j in prom["scrape_configs"]}
    assert targets == {"ppcswitch": ports["ppcswitch_http"].removesuffix("/tcp"),
                       "asterisk": ports["asterisk_metrics"].removesuffix("/tcp")}
    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert ds["url"] == "http://" + ports["prometheus"].removesuffix("/tcp")


def test_secrets_have_no_defaults_and_env_example_lists_every_variable():
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    for secret in ("PPCSWITCH_AMI_SECRET", "GRAFANA_ADMIN_PASSWORD"):
        assert re.search(r"\$\{%s:\?" % secret, text) and not re.search(r"\$\{%s:-" % secret, text)
    example = {line.split("=")[0] for line in (REPO / "deploy/env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used == example


def test_systemd_unit_runs_the_controller(tmp_path):
    path = REPO / "deploy/systemd/ppcswitch.service"
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(path)
    service = unit["Service"]
    assert service["ExecStart"].split()[1:] == ["serve"]
    assert service["User"] == "ppcswitch" and service["Restart"] == "always"
    assert service["StateDirectory"] == "ppcswitch"  # /var/lib/ppcswitch, the default database's directory
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    analyze, exe = shutil.which("systemd-analyze"), shutil.which("ppcswitch")
    if analyze is None or exe is None:
        pytest.skip("systemd-analyze or the ppcswitch command is not installed")
    copy = tmp_path / "ppcswitch.service"
    copy.write_text(path.read_text().replace("/usr/local/bin/ppcswitch", exe))
    out = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "ppcswitch.service" not in out.stderr, out.stderr
