"""The agent's /healthz endpoint and systemd readiness notification."""

import os
import socket
import threading

from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import TCPServer, ThreadingMixIn


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        # HTTPServer.server_bind asks DNS for the host's FQDN, which stalls start-up for seconds
        # on hosts without a resolver; the name is only used in CGI variables.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def start_health_server(address, port, health):
    """Serve GET /healthz on a daemon thread: 200 with the status when health() says ok, else 503.

    `health` returns (ok, reason). Returns the server; call .shutdown() to stop it.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server dispatches to
            if self.path.split("?")[0] != "/healthz":
                self._reply(404, "not found: try /healthz\n")
                return
            ok, reason = health()
            self._reply(200 if ok else 503, ("flanneld is running: %s\n" if ok else "unhealthy: %s\n") % reason)

        def _reply(self, status, text):
            body = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass  # health probes would flood the agent's log

    server = _Server((address, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="healthz", daemon=True)
    thread.start()
    return server


def notify_systemd(state="READY=1"):
    """Tell systemd (Type=notify units) the agent is ready; a no-op elsewhere."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    if target.startswith("@"):
        target = "\0" + target[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(target)
        sock.sendall(state.encode("ascii"))
    return True
