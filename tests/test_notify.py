"""sd_notify against a real unix datagram socket bound by the test (path and abstract '@' addresses)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest

from appliance import notify


@pytest.fixture
def path_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def abstract_socket(monkeypatch):
    name = f"appliance-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def recv(sock) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_watchdog_stopping_arrive_as_datagrams(path_socket):
    assert notify.ready("captioning room hall")
    assert recv(path_socket) == ["READY=1", "STATUS=captioning room hall"]
    assert notify.status("RTF 0.31,\n 12 finals")  # a newline would start a new assignment
    assert recv(path_socket) == ["STATUS=RTF 0.31, 12 finals"]
    assert notify.watchdog()
    assert recv(path_socket) == ["WATCHDOG=1"]
    assert notify.stopping()
    assert recv(path_socket) == ["STOPPING=1"]
    assert notify.extend_timeout(2.5)
    assert recv(path_socket) == ["EXTEND_TIMEOUT_USEC=2500000"]
    assert notify.reloading()
    lines = recv(path_socket)
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0


def test_abstract_socket_address(abstract_socket):
    assert notify.ready()
    assert recv(abstract_socket) == ["READY=1"]


def test_from_a_child_process_like_systemd_starts_it(path_socket):
    env = dict(os.environ, NOTIFY_SOCKET=os.environ["NOTIFY_SOCKET"])
    subprocess.run([sys.executable, "-c", "from appliance import notify; notify.ready('up'); notify.watchdog()"],
                   env=env, check=True, timeout=60)
    assert recv(path_socket) == ["READY=1", "STATUS=up"]
    assert recv(path_socket) == ["WATCHDOG=1"]


def test_no_socket_is_a_quiet_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready("x") is False
    assert notify.watchdog() is False


def test_unreachable_socket_does_not_raise(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify.watchdog() is False
    assert "sd_notify" in caplog.text
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")  # not supported here: off, with a warning
    assert notify.status("x") is False


@pytest.mark.parametrize("usec,pid,expected", [
    ("30000000", None, 15.0),
    ("30000000", "self", 15.0),
    ("30000000", "1", None),  # the watchdog belongs to another process (we are a child)
    ("0", None, None),
    ("soon", None, None),
    (None, None, None),
])
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert notify.watchdog_interval() == expected
