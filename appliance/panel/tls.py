"""The panel's self-signed certificate: made once (openssl) in the state folder, key 0600, reused afterwards."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

from appliance.webserver import TlsFiles

log = logging.getLogger(__name__)

__all__ = ["ensure_certificate", "fingerprint"]

VALID_DAYS = 3650  # a device certificate nobody renews; browsers pin it by the fingerprint shown in the log


class TlsError(RuntimeError):
    """The certificate could not be made; the message says why and what to do."""


def fingerprint(cert_file: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert_file.read_text(encoding="ascii"))
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def ensure_certificate(folder: Path, names: list[str] | None = None) -> TlsFiles:
    """folder/panel.crt + folder/panel.key (0600): made at first start, kept afterwards."""
    cert, key = folder / "panel.crt", folder / "panel.key"
    if not (cert.is_file() and key.is_file()):
        _make(folder, cert, key, names or [socket.gethostname()])
    return TlsFiles(cert, key, fingerprint(cert))


def _make(folder: Path, cert: Path, key: Path, names: list[str]) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise TlsError("openssl is not installed: `apt install openssl` (scripts/setup does it); the panel needs "
                       "it once to make its HTTPS certificate")
    folder.mkdir(parents=True, exist_ok=True)
    sans = ",".join([f"DNS:{n}" for n in dict.fromkeys(names + ["localhost"])] + ["IP:127.0.0.1", "IP:::1"])
    tmp_key, tmp_cert = folder / ".panel.key.tmp", folder / ".panel.crt.tmp"
    os.close(os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # 0600 before the key is in it
    done = subprocess.run([exe, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                           "-nodes", "-keyout", str(tmp_key), "-out", str(tmp_cert), "-days", str(VALID_DAYS),
                           "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={sans}"],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        tmp_key.unlink(missing_ok=True)
        tmp_cert.unlink(missing_ok=True)
        raise TlsError(f"openssl could not make the panel certificate: {done.stderr.strip()[-300:]}")
    os.chmod(tmp_key, 0o600)
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)
    log.info("made the panel's self-signed certificate %s", cert)
