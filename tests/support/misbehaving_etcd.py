"""An HTTP server that answers etcd's v2 and v3 requests the way a broken etcd or proxy might: a body
that never ends, one too big, one that stalls or is cut short, not JSON, JSON of the wrong shape,
or silence. A thread on an address the test owns (loopback, or a test namespace's)."""

import json
import socket
import socketserver
import threading
import time

MIB = 1024 * 1024
CLOSING = "grpc: the client connection is closing"
# What each mode answers (after the request is read): (status line and headers, body) or a callable.
WRONG_SHAPES = {
    "v2": [{"action": "get", "node": {"key": 5, "value": "x", "modifiedIndex": 1}},
           {"action": "get", "node": {"key": "/coreos.com/network/config", "value": ["x"], "modifiedIndex": 1}},
           {"action": "get", "node": {"key": "/coreos.com/network/config", "value": "{}", "modifiedIndex": "7"}},
           ["not", "an", "object"]],
    "v3": [{"header": {"revision": "not a number"}, "kvs": []},
           {"header": {"revision": "5"}, "kvs": "nope"},
           {"header": {"revision": "5"}, "kvs": [{"key": 5}]},
           {"kvs": []},
           ["not", "an", "object"]],
}


class MisbehavingEtcd:
    """Serves `mode` (changeable at any time) to every request on `address`:`port` (0: any free port).

    Modes: endless (a body that never ends, at `rate` bytes/s), huge (a 40 MiB body with its
    length), stall (half a body, then silence), cut (half a body, then the connection closed),
    trickle (a byte a second), not_json, deep (20,000 nested brackets), wrong_shape (the
    `shape`-th of WRONG_SHAPES[api]), silent (no answer at all), quiet_watch (a watch stream's
    headers, then nothing, as a watch with no change), watch_stall and watch_huge (a v3 watch
    message begun and never ended, or over 32 MiB).
    """

    def __init__(self, address="127.0.0.1", port=0, mode="silent", api="v2", rate=40 * MIB):
        self.mode, self.api, self.shape, self.rate = mode, api, 0, rate
        self.requests = 0
        self.closing = threading.Event()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer.requests += 1
                try:
                    _read_request(self.request)
                    outer.answer(self.request)
                except OSError:
                    pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((address, port), Handler)
        self.server.daemon_threads = True
        self.endpoint = "http://%s:%d" % self.server.server_address
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()

    def _headers(self, sock, length=None, chunked=False):
        lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", "X-Etcd-Index: 7", "Connection: close"]
        if length is not None:
            lines.append("Content-Length: %d" % length)
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))

    def answer(self, sock):
        mode = self.mode
        if mode == "silent":
            self.closing.wait()
        elif mode == "endless":
            self._headers(sock)
            block = b'{"action":"get","node":' + b" " * (MIB - 23)
            sent = 0
            while not self.closing.is_set() and sent < 4096 * MIB:  # a broken agent stops growing at 4 GiB
                started = time.monotonic()
                sock.sendall(block)
                sent += len(block)
                time.sleep(max(0.0, len(block) / float(self.rate) - (time.monotonic() - started)))
        elif mode == "huge":
            # Headers at once, the body a MiB at a time: building 40 MiB before answering took over
            # the client's 1 s read timeout on a loaded machine (a timeout, not the bad reply tested).
            head, tail, block = b'{"action":"get","node":{"key":"', b'"}}', b"x" * MIB
            self._headers(sock, len(head) + 40 * MIB + len(tail))
            sock.sendall(head)
            for _number in range(40):
                sock.sendall(block)
            sock.sendall(tail)
        elif mode in ("stall", "cut"):
            self._headers(sock, 1000)
            sock.sendall(b'{"action":"get","node":{"key":"/coreos.com/network/config","value":"')
            if mode == "stall":
                self.closing.wait()
        elif mode == "trickle":
            self._headers(sock, 10000)
            while not self.closing.wait(1.0):
                sock.sendall(b" ")
        elif mode == "not_json":
            self._headers(sock, 18)
            sock.sendall(b"<html>hello</html>")
        elif mode == "deep":
            body = b"[" * 20000 + b"]" * 20000
            self._headers(sock, len(body))
            sock.sendall(body)
        elif mode == "wrong_shape":
            body = json.dumps(WRONG_SHAPES[self.api][self.shape]).encode()
            self._headers(sock, len(body))
            sock.sendall(body)
        elif mode == "closing":
            # etcd's v3 gateway while its member shuts down: its own gRPC client to the member is
            # closed, and it says so with gRPC code 1 (Canceled) and HTTP 408.
            body = json.dumps({"error": CLOSING, "code": 1, "message": CLOSING}).encode()
            sock.sendall(("HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                          "Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)).encode("ascii"))
            sock.sendall(body)
        elif mode in ("quiet_watch", "watch_stall", "watch_huge"):
            self._headers(sock, chunked=True)
            if mode == "watch_stall":
                _chunk(sock, b'{"result":{"header":{"revision":"5"},"events":[')
            elif mode == "watch_huge":
                for _number in range(40):
                    _chunk(sock, b" " * MIB)
            self.closing.wait()
        else:
            raise ValueError("unknown mode %r" % mode)


def _chunk(sock, data):
    sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))


def _read_request(sock):
    """Read the request's head and its body (Content-Length), so that the client never sees a reset."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            return
        data += part
    head, body = data.split(b"\r\n\r\n", 1)
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
            while len(body) < length:
                part = sock.recv(65536)
                if not part:
                    return
                body += part


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
