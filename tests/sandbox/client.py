#!/usr/bin/env python3
"""Test client for the nm-multiwan sandbox. Runs inside the host namespace.

  client.py which COUNT [HOST [PORT]]
      COUNT sequential connections; each prints the address the server saw
      (i.e. which ISP carried it) or "FAIL <reason>".
  client.py hold COUNT SECONDS [HOST [PORT]]
      COUNT long-lived connections to an echo server that first sends the peer
      address; each is exercised every 0.2 s for SECONDS. Prints one JSON list:
      [{"isp": "...", "ok": true|false, "failed_at": seconds|null,
        "max_wait": seconds}, ...]  (max_wait: the longest an echo took to come back).
"""
import json
import socket
import sys
import time

SERVER = "198.51.100.10"


def which(count, host, port, timeout=3.0):
    for _ in range(count):
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.settimeout(timeout)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    data += chunk
                print(data.decode().strip() or "FAIL empty reply", flush=True)
        except OSError as e:
            print(f"FAIL {e}", flush=True)


def hold(count, seconds, host, port):
    conns = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=3.0)
        s.settimeout(1.0)
        isp = b""
        while not isp.endswith(b"\n"):
            isp += s.recv(1)
        conns.append({"sock": s, "isp": isp.decode().strip(), "ok": True, "failed_at": None,
                      "max_wait": 0.0})
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        for c in conns:
            if not c["ok"]:
                continue
            try:
                sent = time.monotonic()
                c["sock"].sendall(b"ping\n")
                got = b""
                while not got.endswith(b"\n"):
                    chunk = c["sock"].recv(16)
                    if not chunk:
                        raise OSError("closed")
                    got += chunk
                if got != b"ping\n":
                    raise OSError(f"unexpected {got!r}")
                c["max_wait"] = max(c["max_wait"], round(time.monotonic() - sent, 3))
            except OSError:
                c["ok"] = False
                c["failed_at"] = round(time.monotonic() - start, 2)
        time.sleep(0.2)
    print(json.dumps([{k: c[k] for k in ("isp", "ok", "failed_at", "max_wait")} for c in conns]),
          flush=True)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    mode = argv[1]
    if mode == "which":
        host = argv[3] if len(argv) > 3 else SERVER
        port = int(argv[4]) if len(argv) > 4 else 7000
        which(int(argv[2]), host, port)
    elif mode == "hold":
        host = argv[4] if len(argv) > 4 else SERVER
        port = int(argv[5]) if len(argv) > 5 else 7002
        hold(int(argv[2]), float(argv[3]), host, port)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
