"""The package builds without setuptools warnings and ships what the appliance serves (templates, static files,
the display page and its vendored mqtt.js with its licence), and nothing from node_modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "models", "node_modules", "build", "dist", "*.egg-info", "__pycache__",
                              "test-artifacts", ".pytest_cache")


def test_wheel_builds_without_warnings_and_ships_the_web_files(tmp_path):
    vendor = ROOT / "appliance" / "display" / "web" / "vendor" / "mqtt.min.js"
    assert vendor.is_file(), "mqtt.js is not vendored: run scripts/web-assets (scripts/setup does it)"
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    # node_modules as npm leaves it: it must not be mistaken for packages, nor shipped
    (src / "appliance" / "display" / "web" / "node_modules" / "mqtt" / "dist").mkdir(parents=True)
    (src / "appliance" / "display" / "web" / "node_modules" / "mqtt" / "dist" / "mqtt.min.js").write_text("x")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                        "-w", str(tmp_path / "out"), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert "BuildBackendWarning" not in log and "is absent from the `packages`" not in log, \
        [l for l in log.splitlines() if "absent" in l or "Warning" in l]
    names = zipfile.ZipFile(next((tmp_path / "out").glob("appliance-*.whl"))).namelist()
    for needed in ("appliance/display/web/index.html", "appliance/display/web/display.js",
                   "appliance/display/web/vendor/mqtt.min.js", "appliance/display/web/vendor/mqtt.LICENSE.md",
                   "appliance/panel/templates/setup.html", "appliance/panel/static/panel.js",
                   "appliance/data/sample-en.flac", "appliance/display/server.py", "appliance/webserver.py"):
        assert needed in names, needed
    assert not [n for n in names if "node_modules" in n or "__pycache__" in n]
