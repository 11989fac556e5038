"""Bench peer: the socket lessons' server, Python socketserver.ThreadingTCPServer (or
ThreadingUDPServer with --udp) echoing recv(1024) upper-cased. Prints its address."""
import socketserver
import sys


class Upper(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(1024)
            if not data:
                return
            self.request.sendall(data.upper())


class UpperUDP(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data.upper(), self.client_address)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


if __name__ == "__main__":
    if "--udp" in sys.argv:
        srv = socketserver.ThreadingUDPServer(("127.0.0.1", 0), UpperUDP)
    else:
        srv = Server(("127.0.0.1", 0), Upper)
    host, port = srv.server_address
    print(f"{host}:{port}", flush=True)
    srv.serve_forever()
