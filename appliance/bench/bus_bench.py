"""Scale benchmark of the caption bus (scripts/bench-bus): mosquitto on loopback, N display subscribers spread
over several processes, the real Publisher sending finals at a fixed rate; prints delivery latency p50/p95/p99
and the finals each subscriber lost or got twice. Target: p95 <= 50 ms, 0 lost, 0 duplicated.

Latency is publish() call -> subscriber callback, on CLOCK_MONOTONIC (shared by all processes of one machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

TARGET_P95_MS = 50.0


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


# ---- worker process: K subscribers on one thread (select over their sockets) ------------------------------------
def worker(port: int, count: int, topic: str, index: int) -> int:
    """One thread drives all K clients (paho's loop_read / loop_write / loop_misc over select), so the load
    generator measures the broker, not Python thread switching."""
    import select

    import paho.mqtt.client as mqtt

    from appliance.bus.schema import no_delay

    seqs: list[list[int]] = [[] for _ in range(count)]
    lat: list[float] = []
    subscribed = [0]
    clients = []

    def make(i: int):
        def on_message(c, u, m):
            now = time.monotonic()
            try:
                d = json.loads(m.payload)
            except ValueError:
                return
            if d.get("final"):
                seqs[i].append(d["seq"])
                lat.append(now - d["bench_t"])

        def on_subscribe(*_):
            subscribed[0] += 1

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{index}-{i}-{os.getpid()}")
        c.on_message = on_message
        c.on_connect = lambda c, *_: (no_delay(c), c.subscribe(topic, qos=1))
        c.on_subscribe = on_subscribe
        c.connect("127.0.0.1", port, keepalive=120)
        return c

    clients = [make(i) for i in range(count)]
    expected: list = []
    got_expected = threading.Event()

    def read_stdin():
        expected.extend(json.loads(sys.stdin.readline()))
        got_expected.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    by_sock = {c.socket(): c for c in clients}
    ready_sent, misc_at, finish_at = False, 0.0, None
    while True:
        writers = [c.socket() for c in clients if c.want_write()]
        readable, writable, _ = select.select(list(by_sock), writers, [], 0.05)
        for s in readable:
            by_sock[s].loop_read()
        for s in writable:
            by_sock[s].loop_write()
        now = time.monotonic()
        if now - misc_at > 1.0:
            for c in clients:
                c.loop_misc()
            misc_at = now
        if not ready_sent and subscribed[0] >= count:
            print("ready", flush=True)
            ready_sent = True
        if got_expected.is_set():
            want = set(expected)
            if finish_at is None:
                finish_at = now + 10
            if all(want <= set(s) for s in seqs) or now > finish_at:
                finish_at = min(finish_at, now + 0.5)  # a little longer, for late duplicates
                if now >= finish_at - 0.01 or now > finish_at:
                    break
    lost = sum(len(want - set(s)) for s in seqs)
    dup = sum(len(s) - len(set(s)) for s in seqs)
    order = sum(1 for s in seqs if s != sorted(s))
    print(json.dumps({"lost": lost, "duplicated": dup, "out_of_order": order, "latency": lat}), flush=True)
    for c in clients:
        c.disconnect()
    return 0


# ---- driver ---------------------------------------------------------------------------------------------------
def _subs_mosquitto_sub(port: int, n: int, topic: str, out_dir: Path) -> list[subprocess.Popen]:
    exe = shutil.which("mosquitto_sub")
    if exe is None:
        raise RuntimeError("mosquitto_sub is not installed: apt install mosquitto-clients (scripts/setup --test)")
    procs = []
    for i in range(n):
        with open(out_dir / f"sub-{i}.txt", "wb") as fh:
            procs.append(subprocess.Popen([exe, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic, "-i",
                                           f"bench-sub-{i}", "-F", "%U %p", "-k", "120"], stdout=fh,
                                          stderr=subprocess.DEVNULL))
    return procs


def _wait_subscriptions(port: int, n: int, timeout: float = 60.0) -> None:
    """Wait until the broker reports at least n subscriptions ($SYS, refreshed every second)."""
    import paho.mqtt.client as mqtt

    count = [0]
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_connect = lambda c, *_: c.subscribe("$SYS/broker/subscriptions/count")
    c.on_message = lambda c, u, m: count.__setitem__(0, int(m.payload or 0))
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.monotonic() + timeout
    try:
        while count[0] < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {count[0]} of {n} subscribers subscribed within {timeout:.0f} s")
            time.sleep(0.2)
    finally:
        c.disconnect()
        c.loop_stop()


def _read_mosquitto_sub(out_dir: Path, n: int, expected: list[int]) -> list[dict]:
    want, results = set(expected), []
    for i in range(n):
        seqs, lat = [], []
        for line in (out_dir / f"sub-{i}.txt").read_text(encoding="utf-8", errors="replace").splitlines():
            t, _, payload = line.partition(" ")
            try:
                d = json.loads(payload)
            except ValueError:
                continue
            if d.get("final"):
                seqs.append(d["seq"])
                lat.append(float(t) - d["bench_w"])
        results.append({"lost": len(want - set(seqs)), "duplicated": len(seqs) - len(set(seqs)),
                        "out_of_order": int(seqs != sorted(seqs)), "latency": lat})
    return results


def _publish_finals(pub, rate: float, duration: float, partials: bool) -> list[int]:
    """`rate` finals a second for `duration` seconds (each after a partial when `partials`); their seq numbers."""
    seqs = []
    start = time.monotonic()
    for i in range(int(rate * duration)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        text = f"caption number {i} of the benchmark, about two lines of text at most"
        if partials:
            pub.publish({"id": f"u{i}", "rev": 0, "final": False, "lang": "pt", "text": text[:20],
                         "bench_t": time.monotonic(), "bench_w": time.time()})
        seqs.append(pub.publish({"id": f"u{i}", "rev": 1, "final": True, "lang": "pt", "text": text,
                                 "bench_t": time.monotonic(), "bench_w": time.time()}))
    return seqs


def run(subscribers: int, processes: int, rate: float, duration: float, partials: bool, client: str = "mosquitto_sub") -> dict:
    from appliance.bus.broker import EmbeddedBroker
    from appliance.bus.publisher import Publisher
    from appliance.bus.schema import Topics
    from appliance.config import BrokerConfig

    processes = max(1, min(processes, subscribers))
    with tempfile.TemporaryDirectory(prefix="bench-bus-") as tmp:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        broker = EmbeddedBroker(port=port, ws_port=None, state_dir=Path(tmp) / "broker", persistence=False,
                                extra_conf="max_connections -1\nmax_inflight_messages 100\nsys_interval 1\n")
        broker.start()
        workers = []
        try:
            topic = Topics("appliance", "bench").captions("pt")
            per = [subscribers // processes + (1 if i < subscribers % processes else 0) for i in range(processes)]
            t0 = time.monotonic()
            for i, k in (enumerate(per) if client == "paho" else ()):
                workers.append(subprocess.Popen([sys.executable, "-m", "appliance.bench.bus_bench", "--worker", str(port), str(k),
                                                 topic, str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            for w in workers:
                line = w.stdout.readline().strip()
                if line != "ready":
                    raise RuntimeError(f"a subscriber process failed: {line or 'exited'}")
            if client != "paho":
                workers = _subs_mosquitto_sub(port, subscribers, topic, Path(tmp))
                _wait_subscriptions(port, subscribers)
            connect_s = time.monotonic() - t0
            pub = Publisher(BrokerConfig(port=port), room="bench", state_dir=tmp)
            pub.start()
            deadline = time.monotonic() + 10
            while not pub.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            seqs = _publish_finals(pub, rate, duration, partials)
            results = []
            if client != "paho":
                time.sleep(2.0)  # the last deliveries
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(10)
                results = _read_mosquitto_sub(Path(tmp), subscribers, seqs)
                workers = []
            for w in workers:
                w.stdin.write(json.dumps(seqs) + "\n")
                w.stdin.flush()
            for w in workers:
                results.append(json.loads(w.stdout.readline()))
                w.wait(30)
            pub.stop()
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
            broker.stop()
    lat = sorted(x for r in results for x in r["latency"])
    return {
        "subscribers": subscribers, "client": client, "processes": processes if client == "paho" else subscribers, "rate_per_s": rate, "duration_s": duration,
        "finals_published": len(seqs), "deliveries": len(lat), "expected_deliveries": len(seqs) * subscribers,
        "connect_s": round(connect_s, 2),
        "latency_ms": {q: round(_percentile(lat, float(q[1:])) * 1000, 2) for q in ("p50", "p95", "p99")}
        | {"max": round(lat[-1] * 1000, 2) if lat else None},
        "lost": sum(r["lost"] for r in results), "duplicated": sum(r["duplicated"] for r in results),
        "out_of_order_subscribers": sum(r["out_of_order"] for r in results),
    }


def report(r: dict) -> str:
    ok = r["latency_ms"]["p95"] <= TARGET_P95_MS and r["lost"] == 0 and r["duplicated"] == 0
    lm = r["latency_ms"]
    return "\n".join([
        f"bus benchmark: {r['subscribers']} subscribers ({r['client']}) in {r['processes']} processes, {r['finals_published']} finals "
        f"at {r['rate_per_s']:g}/s for {r['duration_s']:g} s (mosquitto on loopback, QoS 1)",
        f"subscribers connected in {r['connect_s']} s; delivered {r['deliveries']} of {r['expected_deliveries']}",
        f"latency p50 {lm['p50']} ms, p95 {lm['p95']} ms, p99 {lm['p99']} ms, max {lm['max']} ms",
        f"lost finals {r['lost']}, duplicated finals {r['duplicated']}, subscribers out of order {r['out_of_order_subscribers']}",
        f"target p95 <= {TARGET_P95_MS:g} ms, 0 lost, 0 duplicated: {'PASS' if ok else 'FAIL'}",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        return worker(int(argv[1]), int(argv[2]), argv[3], int(argv[4]))
    p = argparse.ArgumentParser(prog="bench-bus", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--subscribers", type=int, default=500)
    p.add_argument("-p", "--processes", type=int, default=max(2, min(20, (os.cpu_count() or 2) * 2)))
    p.add_argument("--rate", type=float, default=10.0, help="finals per second (default 10)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of publishing (default 60)")
    p.add_argument("--partials", action="store_true", help="also publish one partial (QoS 0) before each final")
    p.add_argument("--client", choices=["mosquitto_sub", "paho"], default="mosquitto_sub",
                   help="subscriber: one mosquitto_sub process each (default; models independent display devices) "
                        "or paho clients in --processes Python processes (measures the Python client on this machine)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    r = run(a.subscribers, a.processes, a.rate, a.duration, a.partials, a.client)
    print(json.dumps(r) if a.json else report(r))
    ok = r["latency_ms"]["p95"] <= TARGET_P95_MS and r["lost"] == 0 and r["duplicated"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
