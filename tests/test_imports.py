"""The package's import structure: the LAN-facing display server loads no admin-panel code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import appliance

ROOT = Path(appliance.__file__).resolve().parents[1]  # the tree under test, also for the subprocess


def test_display_server_loads_no_panel_code():
    """Strangers on the room LAN reach the display server: the admin panel (Flask app, password store) stays out."""
    code = ("import sys, appliance.display.server\n"
            "print(sorted(m for m in sys.modules if m == 'appliance.panel' or m.startswith('appliance.panel.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"the display server loads panel modules: {proc.stdout.strip()}"
