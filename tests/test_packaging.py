"""The package builds without setuptools warnings and ships what the appliance serves (templates, static files,
the display page and its vendored mqtt.js with its licence), and nothing from node_modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", ".venv-*", "models", "node_modules", "build", "dist", "*.egg-info",
                              "__pycache__", "test-artifacts", ".pytest_cache")


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
    """requirements.lock: {normalised name: [its requirement lines]}, and its header's subsets {runtime: {...}} and
    flavours {"flavour cpu": {...}}."""
    import re

    entries: dict[str, list[str]] = {}
    subsets: dict[str, set[str]] = {}
    name = None
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if m := re.match(r"# subset (\w+): (.*)", line):
            subsets[m[1]] = set(m[2].split())
        elif m := re.match(r"# flavour (\w+): (.*)", line):
            subsets[f"flavour {m[1]}"] = set(m[2].split())
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
    assert set(wanted["install_requires"]) <= subsets["runtime"] <= subsets["build"] <= subsets["all"] <= set(entries)
    assert set(wanted["build"]) <= subsets["build"] <= subsets["check"] and "pytest" in subsets["check"]
    assert "torch" not in entries and not [n for n in entries if n.startswith("triton")]
    # CUDA's libraries come with the cuda flavour only, never with the CPU set-up or the tests
    cuda_only = [n for n in entries if n.startswith("nvidia-")]
    assert cuda_only and set(cuda_only) <= subsets["flavour cuda"]
    assert not [n for s, names in subsets.items() if s != "flavour cuda" for n in names if n in cuda_only]


def test_each_flavour_installs_exactly_one_onnxruntime():
    """setup.cfg's flavour extras, the lock's flavour lines and appliance/flavours.py agree: each flavour has one
    package that provides the module `onnxruntime` (qnn: plain onnxruntime and its plugin), and no subset has any."""
    from appliance.flavours import FLAVOURS, RUNTIME_PACKAGES

    wanted = _requirements((ROOT / "setup.cfg").read_text())
    entries, subsets = _lock()
    modules = {"onnxruntime", "onnxruntime-openvino", "onnxruntime-gpu"}  # each installs onnxruntime/ itself
    for name, flavour in FLAVOURS.items():
        assert wanted[name] == list(flavour.packages), name
        own = subsets[f"flavour {name}"]
        assert set(flavour.packages) <= own and set(flavour.packages) <= set(entries)
        assert len(own & modules) == 1, (name, own & modules)
        assert own & set(RUNTIME_PACKAGES) == set(flavour.packages), name
    for subset in ("runtime", "build", "check", "all"):
        assert not subsets[subset] & set(RUNTIME_PACKAGES), subset


def _subset(*args: str) -> str:
    return subprocess.run([str(ROOT / "scripts" / "lock-subset"), *args], capture_output=True, text=True,
                          check=True).stdout


def _named(text: str) -> set[str]:
    return {l.split("==")[0].lower().replace("_", "-") for l in text.splitlines() if l[:1].isalnum()}


def test_lock_subset_prints_installable_parts_of_the_lock():
    """A subset comes with the cpu flavour unless another is named, and with that flavour's packages alone."""
    out = {s: _subset(s) for s in ("runtime", "build", "check", "all")}
    entries, subsets = _lock()
    for subset in out:
        named = _named(out[subset])
        assert named == subsets[subset] | subsets["flavour cpu"]
        assert out[subset].count("--hash=sha256:") >= len(named)
        assert _subset(subset, "cpu") == out[subset]
    assert len(out["runtime"]) < len(out["build"]) < len(out["check"]) < len(out["all"])
    assert _named(out["all"]) | {"onnxruntime-openvino", "onnxruntime-gpu", "onnxruntime-qnn"} >= set(entries) - \
        subsets["flavour cuda"] - subsets["flavour openvino"] - subsets["flavour qnn"]
    for flavour in ("openvino", "cuda", "qnn"):
        named = _named(_subset("build", flavour))
        assert named == subsets["build"] | subsets[f"flavour {flavour}"]
    for args in (["tests"], ["build", "gpu"]):
        bad = subprocess.run([str(ROOT / "scripts" / "lock-subset"), *args], capture_output=True, text=True)
        assert bad.returncode == 2 and "usage" in bad.stderr
