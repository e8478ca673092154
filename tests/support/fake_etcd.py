"""A small etcd v2 server that misbehaves on purpose, for what a real etcd never does: answers
whose index goes backwards, listings that never hold the lease just created. It serves only what
the agent asks (the config, public IP claims, the subnets listing, creates, refreshes, the watch)
and counts every request with its time. It listens inside a test namespace (the lab's LAN)."""

import json
import threading
import time

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from pyroute2 import netns as pyroute2_netns

PREFIX = "/coreos.com/network"


class FakeEtcd:
    """`forget_leases`: listings never show a lease created through this server. `watch_back`:
    every watch answers at once with a change 10 below the index it waits for."""

    def __init__(self, ns, address, config, forget_leases=False, watch_back=False):
        self.config, self.forget_leases, self.watch_back = config, forget_leases, watch_back
        self.index = 1000
        self.leases = {}  # key -> node
        self.requests = []  # (monotonic time, method, path)
        self.lock = threading.Lock()
        pyroute2_netns.pushns(ns)  # the listening socket is made in the namespace, and stays there
        try:
            self.server = ThreadingHTTPServer((address, 0), self._handler())
        finally:
            pyroute2_netns.popns()
        self.server.daemon_threads = True
        self.endpoint = "http://%s:%d" % (address, self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def rate(self, since, until):
        """Requests per second between two monotonic times."""
        return len([when for when, _method, _path in self.requests if since <= when < until]) / (until - since)

    def _next_index(self):
        """The index this answer carries: going up, or (forget_leases) down at every answer."""
        self.index += -1 if self.forget_leases else 1
        return self.index

    def answer(self, method, path, query, form):
        with self.lock:
            self.requests.append((time.monotonic(), method, path))
            index = self._next_index()
            key = path[len("/v2/keys"):].rstrip("/")
            if method == "GET" and key == PREFIX + "/config":
                return 200, index, {"action": "get", "node": self._node(key, self.config, index)}
            if method == "GET" and "wait" in query:
                if not self.watch_back:
                    return None, index, None  # the watch times out (the client gives up first)
                waited = int(query["waitIndex"][0])
                node = self._node(PREFIX + "/subnets/10.99.0.0-20", "junk", waited - 10)
                return 200, waited - 10, {"action": "set", "node": node}
            if method == "GET" and key == PREFIX + "/subnets":
                nodes = [] if self.forget_leases else list(self.leases.values())
                return 200, index, {"action": "get", "node": {"key": key, "dir": True, "nodes": nodes,
                                                              "modifiedIndex": 2, "createdIndex": 2}}
            if method == "PUT" and key.startswith(PREFIX + "/netlab-hosts/"):
                return 201, index, {"action": "create", "node": self._node(key, form.get("value", ""), index)}
            if method == "PUT" and key.startswith(PREFIX + "/subnets/"):
                node = self._node(key, form.get("value"), index, int(form.get("ttl") or 0) or None)
                self.leases[key] = node
                return 201, index, {"action": "create", "node": node}
            return 404, index, {"errorCode": 100, "message": "Key not found", "cause": key, "index": index}

    @staticmethod
    def _node(key, value, index, ttl=None):
        node = {"key": key, "value": value, "modifiedIndex": index, "createdIndex": index}
        if ttl:
            node["ttl"] = ttl
        return node

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = dict((name, values[0]) for name, values in
                            parse_qs(self.rfile.read(length).decode(), keep_blank_values=True).items())
                status, index, body = fake.answer(self.command, parts.path, parse_qs(parts.query), form)
                if status is None:
                    time.sleep(float(5))  # longer than the agent's watch: it times out, as on a quiet etcd
                    status, body = 200, {"action": "get", "node": {"key": PREFIX, "dir": True}}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Etcd-Index", str(index))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_DELETE = _serve  # noqa: N815 - the names http.server dispatches to

            def log_message(self, *args):
                pass

        return Handler
