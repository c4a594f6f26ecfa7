#!/usr/bin/env python3
"""Sandbox server: tells each client the address it connected from.

  peer_server.py ADDR PORT          send "PEER_ADDRESS\\n", then close
  peer_server.py ADDR PORT --echo   send "PEER_ADDRESS\\n", then echo until the client closes

Replaces `socat ... SYSTEM:'echo $SOCAT_PEERADDR'`, which now and then closed a
connection without a word (about 1 in 400), enough to make exact-count tests flaky.
"""
import socket
import socketserver
import sys


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.sendall(f"{self.client_address[0]}\n".encode())
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


def main(argv):
    global ECHO
    if len(argv) < 3:
        sys.exit(__doc__)
    ECHO = "--echo" in argv[3:]
    addr = argv[1]
    if ":" in addr:
        Server.address_family = socket.AF_INET6
    with Server((addr, int(argv[2])), Handler) as server:
        server.serve_forever()


ECHO = False
if __name__ == "__main__":
    main(sys.argv)
