"""The agent's /healthz and /metrics endpoints and systemd readiness notification."""

import os
import select
import socket
import threading

from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import TCPServer, ThreadingMixIn


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args):
        self._wake = os.pipe()  # first: a failed bind calls server_close()
        self._stopped = threading.Event()
        super().__init__(*args)

    def serve(self):
        """serve_forever without its poll twice a second: the thread sleeps until a request or
        shutdown() comes, so that an idle agent wakes only for its own timers."""
        try:
            while self._wake[0] not in select.select([self.socket, self._wake[0]], [], [])[0]:
                self._handle_request_noblock()
        finally:
            self._stopped.set()

    def shutdown(self):
        """Stop serve() and wait until it returned."""
        os.write(self._wake[1], b"x")
        self._stopped.wait()

    def server_close(self):
        super().server_close()
        for fd in self._wake:
            os.close(fd)

    def server_bind(self):
        # HTTPServer.server_bind asks DNS for the host's FQDN, which stalls start-up for seconds
        # on hosts without a resolver; the name is only used in CGI variables.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def _health_page(health):
    def page():
        ok, reason = health()
        text = ("flanneld is running: %s\n" if ok else "unhealthy: %s\n") % reason
        return 200 if ok else 503, "text/plain; charset=utf-8", text.encode("utf-8")
    return page


def start_health_server(address, port, health, pages=None):
    """Serve GET /healthz on a daemon thread: 200 with the status when health() says ok, else 503.

    `health` returns (ok, reason); None serves no /healthz. `pages` adds paths: {path: page},
    where page() returns (status, content type, body bytes). Returns the server; call
    .shutdown() to stop it.
    """
    pages = dict(pages or {})
    if health is not None:
        pages["/healthz"] = _health_page(health)
    known = " or ".join(sorted(pages))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server dispatches to
            page = pages.get(self.path.split("?")[0])
            if page is None:
                self._reply(404, "text/plain; charset=utf-8", ("not found: try %s\n" % known).encode("utf-8"))
                return
            self._reply(*page())

        def _reply(self, status, content_type, body):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass  # health probes and scrapes would flood the agent's log

    server = _Server((address, port), Handler)
    thread = threading.Thread(target=server.serve, name="healthz", daemon=True)
    thread.start()
    return server


class ListenError(Exception):
    """A /healthz or /metrics listener cannot start: the flags and the reason, in one line."""


def start_endpoints(options, health, enable_metrics):
    """The agent's listeners: /healthz on -healthz-port, and /metrics (unless -metrics=false) there
    too, or on -metrics-port when that is set. `enable_metrics()` returns the /metrics page.
    Returns the servers; ListenError when one cannot listen (stopping those already started)."""
    serve_metrics = options.metrics and (options.healthz_port or options.metrics_port)
    metrics_page = enable_metrics() if serve_metrics else None
    listeners = []
    if options.healthz_port:
        shared = metrics_page is not None and not options.metrics_port
        listeners.append(("-healthz-ip/-healthz-port", options.healthz_port, health,
                          {"/metrics": metrics_page} if shared else {}))
    if metrics_page is not None and options.metrics_port:
        listeners.append(("-healthz-ip/-metrics-port", options.metrics_port, None, {"/metrics": metrics_page}))
    servers = []
    for flags, port, page_health, pages in listeners:
        try:
            servers.append(start_health_server(options.healthz_ip, port, page_health, pages))
        except OSError as err:
            for server in servers:
                server.shutdown()
                server.server_close()
            raise ListenError("invalid value for flag %s: cannot listen on %s:%d: %s"
                              % (flags, options.healthz_ip, port, err.strerror or err))
    return servers


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
