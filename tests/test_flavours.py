"""The onnxruntime flavour that set-up installs: chosen from device facts (a table, no hardware needed), the packages
a switch removes, what an environment has, and the command set-up calls, run against this environment."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.flavours import (FLAVOURS, DeviceFacts, detect, installed_flavour, installed_packages, probe,
                                to_remove)

INTEL, AMD, NVIDIA_PCI = "0x8086", "0x1002", "0x10de"


@pytest.mark.parametrize("machine, devices, vendors, expected", [
    ("x86_64", [], {}, "cpu"),
    ("x86_64", ["/dev/nvidia0", "/dev/nvidiactl"], {}, "cuda"),
    ("x86_64", ["/dev/nvidiactl", "/dev/nvidia-uvm"], {}, "cpu"),  # the driver's nodes, no GPU
    ("aarch64", ["/dev/nvhost-ctrl-gpu", "/dev/nvmap"], {}, "cuda"),  # Jetson
    ("x86_64", ["/dev/dri/renderD128"], {"/dev/dri/renderD128": INTEL}, "openvino"),
    ("x86_64", ["/dev/accel/accel0"], {"/dev/accel/accel0": INTEL}, "openvino"),  # Intel NPU
    ("x86_64", ["/dev/dri/renderD128"], {"/dev/dri/renderD128": AMD}, "cpu"),
    ("x86_64", ["/dev/dri/renderD128"], {}, "cpu"),  # vendor unknown
    ("x86_64", ["/dev/dri/renderD128", "/dev/nvidia0"], {"/dev/dri/renderD128": INTEL}, "cuda"),  # the dGPU wins
    ("aarch64", ["/dev/fastrpc-cdsp"], {}, "qnn"),
    ("x86_64", ["/dev/fastrpc-cdsp"], {}, "cpu"),  # Qualcomm's DSP node on a PC: no QNN wheel for it
    ("aarch64", ["/dev/dri/renderD128"], {"/dev/dri/renderD128": NVIDIA_PCI}, "cpu"),
])
def test_detect(machine, devices, vendors, expected):
    name, why = detect(DeviceFacts(machine, frozenset(devices), vendors))
    assert name == expected and why


def test_probe_reads_device_nodes_and_pci_vendors(tmp_path):
    (tmp_path / "dev" / "dri").mkdir(parents=True)
    (tmp_path / "dev" / "dri" / "renderD128").touch()
    (tmp_path / "dev" / "dri" / "card0").touch()
    (tmp_path / "dev" / "null").touch()
    vendor = tmp_path / "sys" / "class" / "drm" / "renderD128" / "device" / "vendor"
    vendor.parent.mkdir(parents=True)
    vendor.write_text("0x8086\n")
    facts = probe(tmp_path)
    assert facts.devices == {"/dev/dri/renderD128"} and facts.vendors == {"/dev/dri/renderD128": INTEL}
    assert detect(facts)[0] == "openvino"


@pytest.mark.parametrize("flavour, installed, expected", [
    ("cpu", {"onnxruntime": "1.32.0"}, []),
    ("openvino", {"onnxruntime-openvino": "1.24.1"}, []),
    ("openvino", {}, []),
    ("openvino", {"onnxruntime": "1.32.0"}, ["onnxruntime"]),
    ("cpu", {"onnxruntime": "1.32.0", "onnxruntime-openvino": "1.24.1"}, ["onnxruntime-openvino", "onnxruntime"]),
    ("cuda", {"onnxruntime": "1", "onnxruntime-qnn": "2"}, ["onnxruntime", "onnxruntime-qnn"]),
    ("qnn", {"onnxruntime": "1.32.0"}, []),  # the plugin goes on top of plain onnxruntime
    ("cpu", {"onnxruntime": "1.32.0", "onnxruntime-qnn": "2.7.0"}, ["onnxruntime-qnn", "onnxruntime"]),
])
def test_to_remove(flavour, installed, expected):
    assert to_remove(flavour, installed) == expected


@pytest.mark.parametrize("installed, expected", [
    ({"onnxruntime": "1"}, "cpu"),
    ({"onnxruntime-gpu": "1"}, "cuda"),
    ({"onnxruntime": "1", "onnxruntime-qnn": "2"}, "qnn"),
    ({"onnxruntime": "1", "onnxruntime-openvino": "1"}, None),
    ({}, None),
])
def test_installed_flavour(installed, expected):
    assert installed_flavour(installed) == expected


def test_this_environment_has_one_flavour_and_set_up_accepts_it():
    flavour = installed_flavour(installed_packages())
    assert flavour in FLAVOURS, installed_packages()
    run = lambda *a: subprocess.run([sys.executable, "-m", "appliance.flavours", *a], capture_output=True, text=True,
                                    timeout=120)
    ok = run("check", flavour)
    assert ok.returncode == 0, ok.stderr
    assert run("remove", flavour).stdout.strip() == ""
    assert run("installed").stdout.split()[0] == flavour
    other = next(f for f in FLAVOURS if f != flavour and set(FLAVOURS[f].packages) != {"onnxruntime"})
    wrong = run("check", other)
    assert wrong.returncode == 1 and "not" in wrong.stderr
    assert run("detect").stdout.strip() in FLAVOURS
    assert run("frobnicate").returncode == 2
