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


def _requirements(cfg_text: str) -> dict[str, list[str]]:
    """setup.cfg's install_requires and each extra: {"install_requires": ["numpy", ...], "build": [...], ...}."""
    import configparser
    import re

    cfg = configparser.ConfigParser()
    cfg.read_string(cfg_text)
    groups = {"install_requires": cfg["options"]["install_requires"], **dict(cfg["options.extras_require"])}
    return {g: [re.split(r"[<>=!~ ;\[]", line.strip())[0].lower().replace("_", "-") for line in text.splitlines()
                if line.strip()] for g, text in groups.items()}


def _lock() -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """requirements.lock: {normalised name: [its requirement lines]}, and its header's subsets {runtime: {...}}."""
    import re

    entries: dict[str, list[str]] = {}
    subsets: dict[str, set[str]] = {}
    name = None
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if m := re.match(r"# subset (\w+): (.*)", line):
            subsets[m[1]] = set(m[2].split())
        elif re.match(r"[A-Za-z0-9]", line):
            name = re.sub(r"[-_.]+", "-", line.split("==")[0].lower())
            entries.setdefault(name, []).append(line)
        elif name and line.startswith("    --hash=sha256:"):
            entries[name].append(line)
    return entries, subsets


def test_lock_pins_every_dependency_with_hashes_and_no_torch():
    """Every package setup.cfg names is in requirements.lock at one exact version per Python, with sha256 hashes; the
    runtime and build subsets hold what the appliance and its model build need; nothing pulls torch or CUDA."""
    wanted = _requirements((ROOT / "setup.cfg").read_text())
    entries, subsets = _lock()
    for group, names in wanted.items():
        missing = [n for n in names if n not in entries]
        assert not missing, f"{group}: {missing} not in requirements.lock: run scripts/lock"
    for name, lines in entries.items():
        assert all("==" in line for line in lines if not line.startswith(" ")), lines[0]
        assert any(line.startswith("    --hash=sha256:") for line in lines), f"{name} has no hash"
    assert set(wanted["install_requires"]) <= subsets["runtime"] <= subsets["build"] <= set(entries)
    assert set(wanted["build"]) <= subsets["build"]
    assert not [n for n in entries if n == "torch" or n.startswith(("nvidia-", "triton"))]


def test_lock_subset_prints_installable_parts_of_the_lock():
    out = {s: subprocess.run([str(ROOT / "scripts" / "lock-subset"), s], capture_output=True, text=True, check=True)
           .stdout for s in ("runtime", "build", "all")}
    entries, subsets = _lock()
    for subset in ("runtime", "build"):
        named = {l.split("==")[0].lower().replace("_", "-") for l in out[subset].splitlines() if l[:1].isalnum()}
        assert named == subsets[subset]
        assert out[subset].count("--hash=sha256:") >= len(named)
    assert len(out["runtime"]) < len(out["build"]) < len(out["all"])
    bad = subprocess.run([str(ROOT / "scripts" / "lock-subset"), "tests"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
