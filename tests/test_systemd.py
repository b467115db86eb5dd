"""The systemd unit passes `systemd-analyze verify` and keeps its hardening; scripts/install is sane.

`systemd-analyze verify` checks that ExecStart= exists and is executable, so the unit is verified as a
temporary copy whose ExecStart points at a stand-in executable (every other line unchanged).
Debian package: systemd (provides systemd-analyze).
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "appliance.service"
EXEC = "/opt/appliance/venv/bin/appliance"
ANALYZE = shutil.which("systemd-analyze")


def analyze() -> str:
    assert ANALYZE, "systemd-analyze is missing: apt-get install systemd (scripts/setup --test installs it)"
    return ANALYZE


def service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]":
            values.setdefault(key, []).append(value)
    return values


def verifiable_copy(tmp_path: Path, text: str | None = None) -> Path:
    stand_in = tmp_path / "appliance"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "appliance.service"
    unit.write_text((text or UNIT.read_text()).replace(EXEC, str(stand_in)))
    return unit


def test_unit_verifies_cleanly(tmp_path):
    unit = verifiable_copy(tmp_path)
    r = subprocess.run([analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if "appliance.service" in ln or "Unknown" in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def test_verify_would_catch_a_broken_unit(tmp_path):
    """The check above can fail: a misspelt directive is reported."""
    unit = verifiable_copy(tmp_path, UNIT.read_text().replace("WatchdogSec=30", "WatchdogSecs=30"))
    r = subprocess.run([analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in r.stderr and "WatchdogSecs" in r.stderr


def test_exposure_is_low(tmp_path):
    unit = verifiable_copy(tmp_path)
    r = subprocess.run([analyze(), "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for appliance\.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 3.0


def test_unit_settings():
    s = service_section()
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify" and one["WatchdogSec"] == "30" and one["Restart"] == "on-failure"
    assert one["User"] == "appliance" and one["SupplementaryGroups"] == "audio"
    assert one["ExecStart"] == f"{EXEC} run --config /etc/appliance/config.json"
    assert one["ProtectSystem"] == "strict" and one["NoNewPrivileges"] == "yes" and one["PrivateTmp"] == "yes"
    assert one["ProtectHome"] == "yes"
    for key in ("ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs"):
        assert one[key] == "yes"
    assert set(one["ReadWritePaths"].split()) == {"/var/lib/appliance", "/etc/appliance"}
    assert one["StateDirectory"] == "appliance" and one["ConfigurationDirectory"] == "appliance"
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert one["LoadCredential"] == "broker-password:/etc/appliance/credentials/broker-password"
    assert "PrivateDevices" not in s  # the microphone lives in /dev/snd
    assert "$CREDENTIALS_DIRECTORY" in UNIT.read_text()


def test_unit_parses_as_ini():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_install_script_syntax_and_dry_run(tmp_path):
    script = ROOT / "scripts" / "install"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    r = subprocess.run([str(script), "--dry-run", "--no-start"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"^\+ usermod -a -G audio appliance$", out, re.M)
    assert "install -d -o appliance -g appliance -m 0750 /etc/appliance /var/lib/appliance" in out
    assert re.search(r"^\+ python3 -m venv /opt/appliance/venv$", out, re.M) or "/opt/appliance/venv/bin/python" in out
    assert "appliance models build" in out and "appliance models verify" in out
    assert f"install -o root -g root -m 0644 {ROOT}/systemd/appliance.service /etc/systemd/system/appliance.service" in out
    assert re.search(r"^\+ systemctl enable appliance\.service$", out, re.M)  # --no-start: enabled, not started
    assert "install -o root -g root -m 0600 /dev/null /etc/appliance/credentials/broker-password" in out \
        or Path("/etc/appliance/credentials/broker-password").exists()
    assert "onnxruntime flavour" in out and "pip uninstall" not in out
    bad = subprocess.run([str(script), "--frobnicate"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown option '--frobnicate'" in bad.stderr
    ov = subprocess.run([str(script), "--dry-run", "--no-start", "--accelerator", "openvino"], capture_output=True,
                        text=True, timeout=60)
    assert ov.returncode == 0 and "installing the appliance into /opt/appliance/venv (onnxruntime flavour openvino)" \
        in ov.stdout, ov.stderr
    gpu = subprocess.run([str(script), "--dry-run", "--accelerator", "gpu"], capture_output=True, text=True, timeout=30)
    assert gpu.returncode == 2 and "choose cpu, openvino, cuda or qnn" in gpu.stderr
