#!/usr/bin/env python3
"""Test client for the nm-multiwan sandbox. Runs inside the host namespace.

  client.py which COUNT [HOST [PORT]]
      COUNT sequential connections; each prints the address the server saw
      (i.e. which ISP carried it) or "FAIL <reason>".
  client.py hold COUNT SECONDS [HOST [PORT]]
      COUNT long-lived connections to an echo server that first sends the peer
      address; each is exercised every 0.2 s for SECONDS. Prints one JSON list:
      [{"isp": "...", "ok": true|false, "failed_at": seconds|null}, ...].
  client.py download COUNT SECONDS TIMEOUT [HOST [PORT]]
      COUNT endless downloads (the server on 7003 sends the address it sees, then
      zeros), read at about 1 MB/s each, for SECONDS. A download that fails (an error,
      the end of the stream, or TIMEOUT seconds without data) connects again at once,
      as a client that retries on error does. Prints one JSON list, one entry per
      download: the list of its connections, [{"isp": ADDRESS THE SERVER SAW, "start":
      T, "first_byte": T|null, "end": T|null, "error": "..."|null, "bytes": N}, ...],
      times in Unix seconds.
"""
import json
import socket
import sys
import threading
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
        conns.append({"sock": s, "isp": isp.decode().strip(), "ok": True, "failed_at": None})
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        for c in conns:
            if not c["ok"]:
                continue
            try:
                c["sock"].sendall(b"ping\n")
                got = b""
                while not got.endswith(b"\n"):
                    chunk = c["sock"].recv(16)
                    if not chunk:
                        raise OSError("closed")
                    got += chunk
                if got != b"ping\n":
                    raise OSError(f"unexpected {got!r}")
            except OSError:
                c["ok"] = False
                c["failed_at"] = round(time.monotonic() - start, 2)
        time.sleep(0.2)
    print(json.dumps([{k: c[k] for k in ("isp", "ok", "failed_at")} for c in conns]), flush=True)


def download_one(host, port, seconds, timeout, conns):
    deadline = time.time() + seconds
    while time.time() < deadline:
        c = {"isp": None, "start": time.time(), "first_byte": None, "end": None, "error": None,
             "bytes": 0}
        conns.append(c)
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.settimeout(timeout)
                isp = b""
                while not isp.endswith(b"\n"):
                    chunk = s.recv(1)
                    if not chunk:
                        raise OSError("closed before the address")
                    isp += chunk
                c["isp"] = isp.decode().strip()
                while time.time() < deadline:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise OSError("end of stream")
                    if c["first_byte"] is None:
                        c["first_byte"] = time.time()
                    c["bytes"] += len(chunk)
                    # About 1 MB/s: flow control slows the server down to it.
                    time.sleep(0.05)
        except OSError as e:
            c["error"] = str(e) or type(e).__name__
            c["end"] = time.time()
            time.sleep(0.01)


def download(count, seconds, timeout, host, port):
    results = [[] for _ in range(count)]
    threads = [threading.Thread(target=download_one, args=(host, port, seconds, timeout, r))
               for r in results]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    print(json.dumps(results), flush=True)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    mode = argv[1]
    if mode == "which":
        host = argv[3] if len(argv) > 3 else SERVER
        port = int(argv[4]) if len(argv) > 4 else 7000
        which(int(argv[2]), host, port)
    elif mode == "download":
        host = argv[5] if len(argv) > 5 else SERVER
        port = int(argv[6]) if len(argv) > 6 else 7003
        download(int(argv[2]), float(argv[3]), float(argv[4]), host, port)
    elif mode == "hold":
        host = argv[4] if len(argv) > 4 else SERVER
        port = int(argv[5]) if len(argv) > 5 else 7002
        hold(int(argv[2]), float(argv[3]), host, port)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
