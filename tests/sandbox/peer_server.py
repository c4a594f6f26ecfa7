#!/usr/bin/env python3
"""Sandbox server: tells each client the address it connected from.

  peer_server.py ADDR PORT [--echo | --stream] [--device IFACE]
      send "PEER_ADDRESS\\n", then close (--echo: then echo until the client closes;
      --stream: then send zeros until the client closes);
      an IPv6 ADDR (e.g. ::) listens for IPv6 only; --device binds to one interface.

Replaces `socat ... SYSTEM:'echo $SOCAT_PEERADDR'`, which now and then closed a
connection without a word (about 1 in 400), enough to make exact-count tests flaky.
"""
import socket
import socketserver
import sys


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        # Without the scope (fe80::1%br0 -> fe80::1), as socat printed it.
        peer = self.client_address[0].split("%")[0]
        s.sendall(f"{peer}\n".encode())
        if STREAM:
            zeros = bytes(65536)
            try:
                while True:
                    s.sendall(zeros)
            except OSError:
                return
        if ECHO:
            while True:
                data = s.recv(4096)
                if not data:
                    break
                s.sendall(data)
        # Half-close first so the reply is never cut by a reset.
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128
    device = None

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            # IPv6 only, so an IPv4 server can own the same port.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if self.device:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.device.encode())
        super().server_bind()


def main(argv):
    global ECHO, STREAM
    if len(argv) < 3:
        sys.exit(__doc__)
    ECHO = "--echo" in argv[3:]
    STREAM = "--stream" in argv[3:]
    if "--device" in argv[3:]:
        Server.device = argv[argv.index("--device") + 1]
    addr = argv[1]
    if ":" in addr:
        Server.address_family = socket.AF_INET6
    with Server((addr, int(argv[2])), Handler) as server:
        server.serve_forever()


ECHO = False
STREAM = False
if __name__ == "__main__":
    main(sys.argv)
