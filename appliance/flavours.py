"""onnxruntime flavours: which registry package gives the appliance its `onnxruntime` for which accelerator, and a
pure choice of the flavour from the device facts that set-up reads (device nodes, PCI vendors, CPU architecture).

Each flavour is an extra in setup.cfg (`.[cpu]`, `.[openvino]`, `.[cuda]`, `.[qnn]`) and a line of requirements.lock
(scripts/lock-subset SUBSET FLAVOUR). The packages `onnxruntime`, `onnxruntime-openvino` and `onnxruntime-gpu` all
install the same module, so set-up removes the other flavours' packages before it installs one. `onnxruntime-qnn` is
a plugin execution provider that sits on plain `onnxruntime`.

Standard library only: scripts/setup runs `python -m appliance.flavours detect` before any package is installed.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

INTEL = "0x8086"


@dataclass(frozen=True)
class Flavour:
    name: str
    packages: tuple[str, ...]  # what the flavour installs on top of the appliance's other packages
    provider: str  # the execution provider it brings (CPU is always there too)
    hardware: str  # for people: what it accelerates


FLAVOURS: dict[str, Flavour] = {f.name: f for f in (
    Flavour("cpu", ("onnxruntime",), "CPUExecutionProvider", "the CPU (every machine)"),
    Flavour("openvino", ("onnxruntime-openvino",), "OpenVINOExecutionProvider",
            "Intel integrated GPUs and NPUs (and x86 CPUs) through OpenVINO"),
    Flavour("cuda", ("onnxruntime-gpu",), "CUDAExecutionProvider",
            "NVIDIA GPUs (CUDA 13 and cuDNN 9 come as registry packages; the NVIDIA driver must be installed)"),
    Flavour("qnn", ("onnxruntime", "onnxruntime-qnn"), "QNNExecutionProvider",
            "Qualcomm NPUs (Snapdragon, QCS boards) through a plugin on onnxruntime"),
)}
# every package of any flavour: set-up removes those the chosen flavour does not install
RUNTIME_PACKAGES = ("onnxruntime", "onnxruntime-openvino", "onnxruntime-gpu", "onnxruntime-qnn")


@dataclass(frozen=True)
class DeviceFacts:
    """What set-up can see of the hardware: device nodes under /dev and the PCI vendor of GPU/NPU nodes."""

    machine: str = "x86_64"  # platform.machine()
    devices: frozenset[str] = frozenset()  # "/dev/nvidia0", "/dev/dri/renderD128", "/dev/accel/accel0", ...
    vendors: Mapping[str, str] = field(default_factory=dict)  # device node -> PCI vendor id ("0x8086")


def detect(facts: DeviceFacts) -> tuple[str, str]:
    """The flavour for this hardware and why: NVIDIA GPU -> cuda, Qualcomm NPU (Arm) -> qnn, Intel GPU/NPU -> openvino,
    anything else -> cpu. An accelerator that set-up cannot see is chosen with `scripts/setup --accelerator X`."""
    devs = facts.devices
    nvidia = sorted(d for d in devs if d.startswith("/dev/nvidia") and d[len("/dev/nvidia"):].isdigit())
    if nvidia:
        return "cuda", f"NVIDIA GPU {nvidia[0]}"
    if "/dev/nvhost-ctrl-gpu" in devs or "/dev/nvgpu/igpu0/ctrl" in devs:
        return "cuda", "NVIDIA Jetson GPU"
    arm = facts.machine.lower() in ("aarch64", "arm64")
    qualcomm = sorted(d for d in devs if d.startswith(("/dev/fastrpc-cdsp", "/dev/adsprpc-smd", "/dev/qcom-hexagon")))
    if arm and qualcomm:
        return "qnn", f"Qualcomm Hexagon NPU {qualcomm[0]}"
    intel = sorted(d for d in devs if d.startswith(("/dev/dri/renderD", "/dev/accel/accel"))
                   and facts.vendors.get(d, "").lower() == INTEL)
    if intel:
        kind = "NPU" if intel[0].startswith("/dev/accel/") else "GPU"
        return "openvino", f"Intel {kind} {intel[0]}"
    return "cpu", "no GPU or NPU that a flavour accelerates"


def probe(root: Path = Path("/")) -> DeviceFacts:
    """Read the facts from this machine (`root` lets a test point at a folder laid out like one)."""
    dev = root / "dev"
    devices: set[str] = set()
    for pattern in ("nvidia*", "nvhost-ctrl-gpu", "nvgpu/igpu0/ctrl", "fastrpc-*", "adsprpc-smd*", "qcom-hexagon*",
                    "dri/renderD*", "accel/accel*"):
        devices.update("/dev/" + str(p.relative_to(dev)) for p in dev.glob(pattern))
    vendors = {}
    for d in devices:
        name = d.rsplit("/", 1)[1]
        cls = "drm" if d.startswith("/dev/dri/") else "accel" if d.startswith("/dev/accel/") else None
        vendor = root / "sys" / "class" / str(cls) / name / "device" / "vendor"
        if cls and vendor.is_file():
            vendors[d] = vendor.read_text().strip()
    return DeviceFacts(platform.machine(), frozenset(devices), vendors)


def to_remove(flavour: str, installed: Mapping[str, str]) -> list[str]:
    """The installed runtime packages that are not the flavour's. When there are any, set-up removes the flavour's
    own as well and installs it afresh: the packages share the module's files, so removing one damages the other."""
    wanted = FLAVOURS[flavour].packages
    others = [p for p in RUNTIME_PACKAGES if p in installed and p not in wanted]
    return others + [p for p in wanted if p in installed] if others else []


def installed_versions(names) -> dict[str, str]:
    """{package: version} of those of `names` installed in this environment."""
    found = {}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def installed_packages() -> dict[str, str]:
    """{package: version} of the runtime packages in this environment."""
    return installed_versions(RUNTIME_PACKAGES)


def installed_flavour(installed: Mapping[str, str]) -> str | None:
    """The flavour whose packages are exactly the runtime packages installed; None for none or a mixture."""
    return next((f.name for f in FLAVOURS.values() if set(f.packages) == set(installed)), None)


def check(flavour: str) -> str | None:
    """What is wrong with this environment for `flavour` (None: its packages alone are installed and onnxruntime
    offers its provider). Imports onnxruntime: set-up calls it after installing."""
    found = installed_packages()
    if installed_flavour(found) != flavour:
        return f"the installed runtime packages are {sorted(found) or 'none'}, not {list(FLAVOURS[flavour].packages)}"
    import onnxruntime as ort

    from appliance.providers import available_providers

    provider = FLAVOURS[flavour].provider
    if provider not in available_providers():
        return f"onnxruntime {ort.__version__} does not offer {provider} (it offers {ort.get_available_providers()})"
    return None


def main(argv: list[str]) -> int:
    """detect: the flavour for this machine (reason on stderr); remove FLAVOUR: packages to uninstall first;
    installed: the flavour and packages in this environment; check FLAVOUR: exit 1 when it is not usable."""
    cmd = argv[0] if argv else ""
    if cmd == "check" and len(argv) == 2 and argv[1] in FLAVOURS:
        problem = check(argv[1])
        print(problem or f"{argv[1]}: {FLAVOURS[argv[1]].provider} available", file=sys.stderr)
        return 1 if problem else 0
    if cmd == "detect":
        name, why = detect(probe())
        print(name)
        print(f"detected: {why}", file=sys.stderr)
        return 0
    if cmd == "remove" and len(argv) == 2 and argv[1] in FLAVOURS:
        print(" ".join(to_remove(argv[1], installed_packages())))
        return 0
    if cmd == "installed":
        found = installed_packages()
        print(installed_flavour(found) or "none", *(f"{p}=={v}" for p, v in found.items()))
        return 0
    names = "|".join(FLAVOURS)
    print(f"usage: python -m appliance.flavours detect | installed | remove {names} | check {names}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
