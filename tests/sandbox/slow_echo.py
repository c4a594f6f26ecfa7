#!/usr/bin/env python3
"""Sandbox probe target: answers ICMP (ICMPv6) echo requests late.

  slow_echo.py DELAY_FILE ADDR [ADDR6]
      answers echo requests to ADDR (and ADDR6) after a delay drawn at random,
      uniformly, between the two numbers of milliseconds DELAY_FILE holds ("MIN MAX",
      read for every request, so the delay can change while it runs). Creates
      DELAY_FILE.ready once it listens.

Runs in an ISP's namespace, where sandbox.sh has put the addresses on lo and switched
the kernel's own echo replies off (net.ipv4.icmp_echo_ignore_all=1): only this answers.
"""
import random
import select
import socket
import struct
import sys
import threading


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def delay_s(path):
    try:
        lo, hi = (float(x) for x in open(path).read().split()[:2])
    except (OSError, ValueError):
        lo = hi = 0.0
    return random.uniform(lo, max(lo, hi)) / 1000.0


def reply4(sock, packet):
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl:]
    if len(icmp) < 8 or icmp[0] != 8:
        return None
    src = socket.inet_ntoa(packet[12:16])
    rest = icmp[4:]
    body = b"\0\0" + struct.pack("!H", checksum(b"\0\0\0\0" + rest)) + rest
    return lambda: sock.sendto(body, (src, 0))


def reply6(sock, icmp, src):
    if len(icmp) < 8 or icmp[0] != 128:
        return None
    # The kernel fills in ICMPv6 checksums on raw sockets.
    body = bytes([129, 0, 0, 0]) + icmp[4:]
    return lambda: sock.sendto(body, (src, 0))


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    delay_file = argv[1]
    socks = []
    s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s4.bind((argv[2], 0))
    socks.append(s4)
    if len(argv) > 3:
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        s6.bind((argv[3], 0))
        socks.append(s6)
    open(delay_file + ".ready", "w").close()
    while True:
        ready, _, _ = select.select(socks, [], [])
        for s in ready:
            data, addr = s.recvfrom(2048)
            send = reply4(s, data) if s is s4 else reply6(s, data, addr[0])
            if send:
                t = threading.Timer(delay_s(delay_file), send)
                t.daemon = True
                t.start()


if __name__ == "__main__":
    main(sys.argv)
