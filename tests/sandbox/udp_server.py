#!/usr/bin/env python3
"""Sandbox UDP server: answers every datagram with the address it came from.

  udp_server.py ADDR[,ADDR...] PORT...
      one socket per address and PORT (IPv6 if ADDR has a colon); each datagram is
      answered with "PEER_ADDRESS\\n", so a client learns which ISP carried its flow
      (a QUIC-like flow when it sends several from one socket).
"""
import selectors
import socket
import sys


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    sel = selectors.DefaultSelector()
    for addr in argv[1].split(","):
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        for port in argv[2:]:
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, int(port)))
            sel.register(s, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            try:
                _, peer = s.recvfrom(2048)
                s.sendto(f"{peer[0].split('%')[0]}\n".encode(), peer)
            except OSError:
                pass


if __name__ == "__main__":
    main(sys.argv)
