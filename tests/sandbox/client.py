#!/usr/bin/env python3
"""Test client for the nm-multiwan sandbox. Runs inside the host namespace.

  client.py which COUNT [HOST [PORT]]
      COUNT sequential connections; each prints the address the server saw
      (i.e. which ISP carried it) or "FAIL <reason>".
  client.py which COUNT HOST PORT --bind ADDR | --device IFACE
      the same from a socket bound to a source address or to a device first.
  client.py udp COUNT HOST PORT [PACKETS]
      COUNT UDP flows, each from a new socket sending PACKETS datagrams (default 3,
      like a QUIC handshake); prints the address the server saw, or "FAIL <reason>".
  client.py dns COUNT SERVER NAME [TYPE]
      COUNT look-ups of NAME (TYPE A or AAAA) at SERVER, each from a new socket as a
      stub resolver does; prints the first address answered, "EMPTY", or "FAIL ...".
  client.py mix ROUNDS RESOLVER HOST [QUIC]
      a browser-like mix: per round an A and an AAAA look-up at RESOLVER, a QUIC-like
      UDP flow to HOST:443 (QUIC=0: none) and a TCP connection to HOST:7000, with two
      long downloads
      from HOST:7001 running all along; prints one JSON object:
      {"tcp": [...], "udp": [...], "dns": [...], "downloads": [bytes, ...]}.
  client.py hold COUNT SECONDS [HOST [PORT]]
      COUNT long-lived connections to an echo server that first sends the peer
      address; each is exercised every 0.2 s for SECONDS. Prints one JSON list:
      [{"isp": "...", "ok": true|false, "failed_at": seconds|null,
        "max_wait": seconds}, ...]  (max_wait: the longest an echo took to come back).
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
import random
import socket
import struct
import sys
import threading
import time

SERVER = "198.51.100.10"


def connect(host, port, timeout, bind=None, device=None):
    # getaddrinfo, not the bare tuple: it turns "fe80::1%eth0" into an address with
    # its scope id (connect() would refuse a link-local address without one).
    family, _, _, _, addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if device:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    if bind:
        s.bind((bind, 0))
    try:
        s.connect(addr)
    except OSError:
        s.close()
        raise
    return s


def which(count, host, port, timeout=3.0, bind=None, device=None):
    for _ in range(count):
        try:
            with connect(host, port, timeout, bind, device) as s:
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


def udp_flow(host, port, packets=3, timeout=2.0):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        seen = None
        for _ in range(packets):
            s.sendto(b"quic-like", (host, port))
            try:
                data, _ = s.recvfrom(256)
                seen = data.decode().strip()
            except OSError:
                pass
        return seen or "FAIL no answer"


def dns_query(server, name, qtype="A", timeout=2.0):
    """One look-up from a new socket; the first address answered."""
    qid = random.randrange(65536)
    codes = {"A": 1, "AAAA": 28}
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", codes[qtype], 1)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(q, (server, 53))
            data, _ = s.recvfrom(2048)
        except OSError as e:
            return f"FAIL {e}"
    rid, flags, _, ancount = struct.unpack(">HHHH", data[:8])
    if rid != qid:
        return "FAIL wrong id"
    # Skip the question, then read the answers' data.
    i = 12
    while data[i] != 0:
        i += data[i] + 1
    i += 5
    for _ in range(ancount):
        if data[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while data[i] != 0:
                i += data[i] + 1
            i += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[i:i + 10])
        i += 10
        rdata = data[i:i + rdlen]
        i += rdlen
        if rtype == 1:
            return socket.inet_ntop(socket.AF_INET, rdata)
        if rtype == 28:
            return socket.inet_ntop(socket.AF_INET6, rdata)
    return "EMPTY"


def download(host, port, seconds, out, slot):
    try:
        with socket.create_connection((host, port), timeout=3.0) as s:
            s.settimeout(1.0)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out[slot] += len(chunk)
    except OSError:
        pass


def mix(rounds, resolver, host, quic=True):
    result = {"tcp": [], "udp": [], "dns": [], "downloads": [0, 0]}
    loads = [threading.Thread(target=download, args=(host, 7001, 0.6 * rounds + 2, result["downloads"], k))
             for k in range(2)]
    for t in loads:
        t.start()
    for _ in range(rounds):
        result["dns"].append(dns_query(resolver, "probe.test", "A"))
        result["dns"].append(dns_query(resolver, "probe.test", "AAAA"))
        if quic:
            result["udp"].append(udp_flow(host, 443))
        try:
            with socket.create_connection((host, 7000), timeout=3.0) as s:
                s.settimeout(3.0)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    data += chunk
                result["tcp"].append(data.decode().strip() or "FAIL empty reply")
        except OSError as e:
            result["tcp"].append(f"FAIL {e}")
    for t in loads:
        t.join()
    print(json.dumps(result), flush=True)


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


def downloads(count, seconds, timeout, host, port):
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
        opts = argv[5:]
        bind = opts[opts.index("--bind") + 1] if "--bind" in opts else None
        device = opts[opts.index("--device") + 1] if "--device" in opts else None
        which(int(argv[2]), host, port, bind=bind, device=device)
    elif mode == "udp":
        packets = int(argv[5]) if len(argv) > 5 else 3
        for _ in range(int(argv[2])):
            print(udp_flow(argv[3], int(argv[4]), packets), flush=True)
    elif mode == "dns":
        qtype = argv[5] if len(argv) > 5 else "A"
        for _ in range(int(argv[2])):
            print(dns_query(argv[3], argv[4], qtype), flush=True)
    elif mode == "mix":
        mix(int(argv[2]), argv[3], argv[4], len(argv) < 6 or argv[5] != "0")
    elif mode == "download":
        host = argv[5] if len(argv) > 5 else SERVER
        port = int(argv[6]) if len(argv) > 6 else 7003
        downloads(int(argv[2]), float(argv[3]), float(argv[4]), host, port)
    elif mode == "hold":
        host = argv[4] if len(argv) > 4 else SERVER
        port = int(argv[5]) if len(argv) > 5 else 7002
        hold(int(argv[2]), float(argv[3]), host, port)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
