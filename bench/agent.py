#!/usr/bin/env python3
"""Measurement primitives for bench/run, run inside a sandbox's host namespace
(`tests/sandbox/sandbox.sh exec SB python3 bench/agent.py ...`). Stdlib only.
Each subcommand prints one JSON object on stdout.

  goodput P WARMUP WINDOW [IFACE...]
      Opens exactly P TCP connections, one after another, to the server's port 7001
      (it streams zeros until the client closes), reads them all for WARMUP seconds,
      then counts the bytes received over WINDOW seconds. With IFACEs, also the bytes
      each interface received over the window (/sys/class/net/IFACE/statistics).
  web COUNT SIZE CONCURRENCY [IFACE...]
      A web-like workload: COUNT downloads of SIZE bytes each from port 7001, at most
      CONCURRENCY at a time, each on a new connection. Reports total time, goodput and
      per-download times.
  time REPS SETUP_JSON CMD_JSON
      REPS times: run SETUP (untimed, may be null), then CMD, timed with
      time.perf_counter around the child process (fork/exec included).
  reconcile REPS SETUP_JSON
      REPS times: run SETUP (untimed, may be null), then call the daemon's D-Bus method
      net.nmmultiwan.Daemon1.Reconcile over one system-bus connection, timed around the
      call (the bus's round trip included); also records the duration the daemon
      reports for the reconcile itself and how many changes it applied.
  react TRIGGER_JSON AVOID REMAINING_JSON PERIOD TIMEOUT [DISPATCHER_LOG] [MODE]
      Runs TRIGGER (untimed; t=0 is the moment it returns), then opens a new connection
      to the server's echo port 7000 every PERIOD seconds (without waiting for earlier
      ones: a connection into a dead uplink may hang) and records which ISP address the
      server saw. MODE "avoid" (default): done when new connections avoid AVOID and
      strictly alternate over REMAINING; MODE "use": done when AVOID is in use again and
      the round covers REMAINING (which then includes AVOID).
"""
import json
import os
import struct
import resource
import selectors
import socket
import subprocess
import sys
import time

SERVER = "198.51.100.10"
STREAM_PORT = 7001
ECHO_PORT = 7000
BUF = bytearray(1 << 18)


def rx_bytes(ifaces):
    out = {}
    for i in ifaces:
        try:
            with open(f"/sys/class/net/{i}/statistics/rx_bytes") as f:
                out[i] = int(f.read())
        except OSError:
            out[i] = None
    return out


def goodput(p, warmup, window, ifaces):
    socks = []
    t_connect = time.perf_counter()
    for _ in range(p):
        # One after another: the k-th connection takes the k-th slot of the nth round.
        s = socket.create_connection((SERVER, STREAM_PORT), timeout=5)
        s.setblocking(False)
        socks.append(s)
    t_connect = time.perf_counter() - t_connect
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    per_conn = [0] * p
    counting = False
    start = time.perf_counter()
    t_count = start + warmup
    t_end = t_count + window
    rx0 = {}
    while True:
        now = time.perf_counter()
        if not counting and now >= t_count:
            counting = True
            per_conn = [0] * p
            rx0 = rx_bytes(ifaces)
            t_count = now
        if now >= t_end:
            break
        for key, _ in sel.select(timeout=min(0.05, max(0.0, t_end - now))):
            try:
                n = key.fileobj.recv_into(BUF)
            except BlockingIOError:
                continue
            if n == 0:
                sel.unregister(key.fileobj)
                continue
            if counting:
                per_conn[key.data] += n
    elapsed = time.perf_counter() - t_count
    rx1 = rx_bytes(ifaces)
    for s in socks:
        s.close()
    total = sum(per_conn)
    link = {
        i: (rx1[i] - rx0[i]) * 8 / elapsed / 1e6
        for i in ifaces
        if rx0.get(i) is not None and rx1.get(i) is not None
    }
    return {
        "p": p,
        "mbps": total * 8 / elapsed / 1e6,
        "per_conn_mbps": [b * 8 / elapsed / 1e6 for b in per_conn],
        "link_mbps": link,
        "window_s": elapsed,
        "connect_s": t_connect,
    }


def web(count, size, concurrency, ifaces):
    sel = selectors.DefaultSelector()
    started = 0
    active = 0
    times = []
    failures = 0
    rx0 = rx_bytes(ifaces)
    t0 = time.perf_counter()

    def start_one():
        nonlocal started, active
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((SERVER, STREAM_PORT))  # the SYN leaves now, in start order
        sel.register(s, selectors.EVENT_READ, [time.perf_counter(), 0])
        started += 1
        active += 1

    while started < count and active < concurrency:
        start_one()
    deadline = t0 + 120
    while active and time.perf_counter() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s, st = key.fileobj, key.data
            try:
                n = s.recv_into(BUF, min(len(BUF), size - st[1]))
            except BlockingIOError:
                continue
            except OSError:
                n = -1
            if n > 0:
                st[1] += n
            if n <= 0 or st[1] >= size:
                if st[1] >= size:
                    times.append(time.perf_counter() - st[0])
                else:
                    failures += 1
                sel.unregister(s)
                s.close()
                active -= 1
                if started < count:
                    start_one()
    total = time.perf_counter() - t0
    rx1 = rx_bytes(ifaces)
    times.sort()
    return {
        "count": count,
        "size": size,
        "concurrency": concurrency,
        "done": len(times),
        "failures": failures,
        "total_s": total,
        "mbps": len(times) * size * 8 / total / 1e6,
        "median_s": times[len(times) // 2] if times else None,
        "p90_s": times[int(len(times) * 0.9)] if times else None,
        "link_bytes": {
            i: rx1[i] - rx0[i] for i in ifaces if rx0.get(i) is not None and rx1.get(i) is not None
        },
    }


def run_quiet(cmd):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def cpu_children():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def time_cmds(reps, setup, cmd):
    """Wall time of each run, and its CPU time (user + system of the command and every
    process it waited for), which a busy machine disturbs far less."""
    out = []
    cpu = []
    errors = []
    for _ in range(reps):
        if setup:
            r = run_quiet(["sh", "-c", setup] if isinstance(setup, str) else setup)
            if r.returncode != 0:
                errors.append(f"setup failed: {r.stderr.decode(errors='replace')[-400:]}")
        c = cpu_children()
        t = time.perf_counter()
        r = run_quiet(["sh", "-c", cmd] if isinstance(cmd, str) else cmd)
        dt = time.perf_counter() - t
        cpu.append((cpu_children() - c) * 1000)
        if r.returncode != 0:
            errors.append(f"command failed ({r.returncode}): {r.stderr.decode(errors='replace')[-400:]}")
        out.append(dt * 1000)
    return {"ms": out, "cpu_ms": cpu, "errors": errors}


class Poller:
    """Opens a connection to the echo port every `period`, each handled asynchronously."""

    def __init__(self, period, conn_timeout=1.0):
        self.period = period
        self.conn_timeout = conn_timeout
        self.sel = selectors.DefaultSelector()
        self.samples = []  # [t_start, result or None]
        self.pending = {}

    def launch(self, t0):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        t = time.perf_counter() - t0
        s.connect_ex((SERVER, ECHO_PORT))
        sample = [t, None]
        self.samples.append(sample)
        self.pending[s] = (sample, bytearray(), time.perf_counter())
        self.sel.register(s, selectors.EVENT_READ)

    def finish(self, s, result):
        sample, _, _ = self.pending.pop(s)
        sample[1] = result
        self.sel.unregister(s)
        s.close()

    def service(self, until):
        while True:
            now = time.perf_counter()
            for s, (_, _, ts) in list(self.pending.items()):
                if now - ts > self.conn_timeout:
                    self.finish(s, "FAIL timeout")
            wait = until - now
            if wait <= 0:
                return
            for key, _ in self.sel.select(timeout=min(wait, 0.01)):
                s = key.fileobj
                if s not in self.pending:
                    continue
                try:
                    chunk = s.recv(64)
                except BlockingIOError:
                    continue
                except OSError as e:
                    self.finish(s, f"FAIL {e.strerror or e}")
                    continue
                buf = self.pending[s][1]
                buf += chunk
                if not chunk or buf.endswith(b"\n"):
                    text = buf.decode(errors="replace").strip()
                    self.finish(s, text or "FAIL empty reply")

    def drain(self):
        self.service(time.perf_counter() + self.conn_timeout + 0.05)


def alternates(results, remaining):
    """Every window of len(remaining) consecutive results holds each of them once."""
    k = len(remaining)
    if any(r not in remaining for r in results):
        return False
    return all(set(results[i : i + k]) == remaining for i in range(len(results) - k + 1))


def react_metrics(samples, avoid, remaining, need, mode):
    """First time from which every later sample avoids (mode avoid) / the first use of
    `avoid` (mode use), and the first time from which the round strictly alternates."""
    # Up to the oldest connection still in flight: it may yet fail (a dead uplink
    # only shows as a timeout), so nothing after it is settled.
    done = []
    for s in sorted(samples, key=lambda s: s[0]):
        if s[1] is None:
            break
        done.append(s)
    res = [s[1] for s in done]
    first_ok = None
    if mode == "avoid":
        for i in range(len(res)):
            tail = res[i:]
            if len(tail) >= need and all(r in remaining for r in tail):
                first_ok = done[i][0]
                break
    else:
        for i, r in enumerate(res):
            if r == avoid:
                first_ok = done[i][0]
                break
    # The moment the first complete round over `remaining` ended, after which every
    # round is complete: the balance is whole again.
    balanced = None
    k = len(remaining)
    for i in range(len(res)):
        tail = res[i:]
        if len(tail) >= need and alternates(tail, remaining):
            balanced = done[i + k - 1][0]
            break
    return first_ok, balanced


def react(trigger, avoid, remaining, period, timeout, dispatcher_log, mode):
    remaining = set(remaining)
    need = max(8, 4 * len(remaining))
    log_size = os.path.getsize(dispatcher_log) if dispatcher_log and os.path.exists(dispatcher_log) else 0
    t_trigger = time.perf_counter()
    r = run_quiet(trigger)
    t0 = time.perf_counter()
    wall0 = time.time()
    trigger_ms = (t0 - t_trigger) * 1000
    poller = Poller(period)
    dispatcher_at = None
    first_ok = balanced = None
    nxt = t0
    # Keep polling until both metrics are settled with `need` samples after them.
    while time.perf_counter() - t0 < timeout:
        poller.launch(t0)
        nxt += period
        poller.service(nxt)
        if dispatcher_log and dispatcher_at is None and os.path.exists(dispatcher_log):
            st = os.stat(dispatcher_log)
            if st.st_size > log_size:
                # The marker script appends after every other script of the event has
                # finished; the file's mtime says when (negative: before nmcli returned).
                dispatcher_at = st.st_mtime_ns / 1e9 - wall0
        first_ok, balanced = react_metrics(poller.samples, avoid, remaining, need, mode)
        # Done only with nothing in flight: a connection still waiting may yet time out
        # and move both moments later.
        if first_ok is not None and balanced is not None and not poller.pending:
            break
    poller.drain()
    first_ok, balanced = react_metrics(poller.samples, avoid, remaining, need, mode)
    fails = sum(1 for s in poller.samples if s[1] and s[1].startswith("FAIL"))
    return {
        "trigger_rc": r.returncode,
        "trigger_ms": trigger_ms,
        "trigger_err": r.stderr.decode(errors="replace")[-300:],
        "first_ms": None if first_ok is None else first_ok * 1000,
        "balanced_ms": None if balanced is None else balanced * 1000,
        "dispatcher_ms": None if dispatcher_at is None else dispatcher_at * 1000,
        "samples": [[round(t * 1000, 1), res] for t, res in poller.samples],
        "failures": fails,
        "timeout_s": timeout,
    }


class Bus:
    """A minimal D-Bus client (the agent is stdlib only): SASL EXTERNAL, Hello, then
    method calls without arguments, one at a time."""

    def __init__(self, path=None):
        addr = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/dbus/system_bus_socket")
        path = path or addr.split("path=", 1)[1].split(",", 1)[0]
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.s.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        line = self.s.recv(4096)
        if not line.startswith(b"OK"):
            raise RuntimeError(f"D-Bus authentication refused: {line!r}")
        self.s.sendall(b"BEGIN\r\n")
        self.buf = b""
        self.serial = 0
        self.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello")

    def call(self, dest, path, iface, member):
        """Returns the reply's body (bytes); raises on an error reply."""
        self.serial += 1
        fields = b""
        for code, sig, val in ((1, b"o", path), (2, b"s", iface), (3, b"s", member), (6, b"s", dest)):
            fields += b"\0" * (-len(fields) % 8)
            v = val.encode()
            fields += bytes([code, 1]) + sig + b"\0" + struct.pack("<I", len(v)) + v + b"\0"
        msg = b"l\x01\x00\x01" + struct.pack("<III", 0, self.serial, len(fields)) + fields
        msg += b"\0" * (-len(msg) % 8)
        self.s.sendall(msg)
        while True:
            kind, reply_to, body = self._read()
            if kind in (2, 3) and reply_to == self.serial:
                if kind == 3:
                    n = struct.unpack_from("<I", body)[0] if body else 0
                    raise RuntimeError(f"{member}: {body[4:4 + n].decode(errors='replace')}")
                return body

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise RuntimeError("the bus closed the connection")
            self.buf += chunk

    def _read(self):
        self._need(16)
        kind = self.buf[1]
        body_len, _, fields_len = struct.unpack_from("<III", self.buf, 4)
        start = 16 + fields_len + (-(16 + fields_len) % 8)
        self._need(start + body_len)
        reply_to, i = None, 16
        while i < 16 + fields_len:
            i += -i % 8
            code, siglen = self.buf[i], self.buf[i + 1]
            sig = self.buf[i + 2:i + 2 + siglen]
            i += 3 + siglen
            if sig == b"g":
                i += self.buf[i] + 2
                continue
            i += -i % 4
            if sig == b"u":
                if code == 5:
                    reply_to = struct.unpack_from("<I", self.buf, i)[0]
                i += 4
            else:  # s, o
                i += 4 + struct.unpack_from("<I", self.buf, i)[0] + 1
        body = self.buf[start:start + body_len]
        self.buf = self.buf[start + body_len:]
        return kind, reply_to, body


def reconcile_calls(reps, setup):
    bus = Bus()
    ms, daemon_ms, changes, errors = [], [], [], []
    for _ in range(reps):
        if setup:
            r = run_quiet(setup)
            if r.returncode != 0:
                errors.append(f"setup failed: {r.stderr.decode(errors='replace')[-400:]}")
        t = time.perf_counter()
        try:
            body = bus.call("net.nmmultiwan.Daemon1", "/net/nmmultiwan/Daemon1", "net.nmmultiwan.Daemon1",
                            "Reconcile")
        except RuntimeError as e:
            errors.append(str(e))
            continue
        ms.append((time.perf_counter() - t) * 1000)
        micros, applied = struct.unpack_from("<QI", body)
        daemon_ms.append(micros / 1000)
        changes.append(applied)
    return {"ms": ms, "daemon_ms": daemon_ms, "changes": changes, "errors": errors}


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    mode = argv[1]
    if mode == "goodput":
        res = goodput(int(argv[2]), float(argv[3]), float(argv[4]), argv[5:])
    elif mode == "web":
        res = web(int(argv[2]), int(argv[3]), int(argv[4]), argv[5:])
    elif mode == "time":
        res = time_cmds(int(argv[2]), json.loads(argv[3]), json.loads(argv[4]))
    elif mode == "reconcile":
        res = reconcile_calls(int(argv[2]), json.loads(argv[3]))
    elif mode == "react":
        res = react(
            json.loads(argv[2]),
            argv[3],
            json.loads(argv[4]),
            float(argv[5]),
            float(argv[6]),
            argv[7] if len(argv) > 7 and argv[7] else None,
            argv[8] if len(argv) > 8 else "avoid",
        )
    else:
        sys.exit(__doc__)
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv)
