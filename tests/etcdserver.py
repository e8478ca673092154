"""A throw-away etcd (v2 API on) for tests: plain on loopback, or TLS through ETCD_* variables."""

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EtcdServer:
    """A single-member etcd with the v2 API on, listening on loopback only."""

    def __init__(self):
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.data_dir = tempfile.mkdtemp(prefix="netlab-etcd-")
        self.process = None

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.client_port

    def start(self):
        binary = shutil.which("etcd")
        if binary is None:
            pytest.fail("etcd is not installed (apt-get install etcd-server); make test installs it")
        client_url = self.endpoint
        peer_url = "http://127.0.0.1:%d" % self.peer_port
        self.process = subprocess.Popen(
            [binary, "--name", "test", "--data-dir", self.data_dir, "--enable-v2=true",
             "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", "test=" + peer_url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.endpoint + "/v2/keys/", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        pytest.fail("etcd did not answer on %s" % self.endpoint)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def wipe(self):
        """Remove every key written by a test (the v2 keyspace only)."""
        request = urllib.request.Request(self.endpoint + "/v2/keys/coreos.com?recursive=true",
                                         method="DELETE")
        try:
            urllib.request.urlopen(request, timeout=5).read()
        except OSError:
            pass
