"""A throw-away etcd for tests (v2 API on, or off for the v3 registry): plain on loopback, or TLS
through ETCD_* variables; and a raw v3 client for writing what the registry never would."""

import base64
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EtcdServer:
    """A single-member etcd listening on loopback only, with the v2 API on (`enable_v2`) or off."""

    def __init__(self, enable_v2=True):
        self.enable_v2 = enable_v2
        # The bootstrap token: another one on an empty data directory forms another cluster (ID).
        self.token = "etcd-cluster"
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
            [binary, "--name", "test", "--data-dir", self.data_dir, "--enable-v2=%s" % str(self.enable_v2).lower(),
             "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", "test=" + peer_url, "--initial-cluster-token", self.token],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.probe()
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

    def probe(self):
        """A read that etcd answers only once it serves (v2 keys, or a v3 range)."""
        if self.enable_v2:
            urllib.request.urlopen(self.endpoint + "/v2/keys/", timeout=1).read()
        else:
            v3_call(self.endpoint, "/v3/kv/range", {"key": _b64("/")})

    def wipe(self):
        """Remove every key written by a test (with v2 off, the whole v3 keyspace)."""
        if not self.enable_v2:
            try:
                v3_call(self.endpoint, "/v3/kv/deleterange", {"key": _b64("\0"), "range_end": _b64("\0")})
            except OSError:
                pass
            return
        request = urllib.request.Request(self.endpoint + "/v2/keys/coreos.com?recursive=true",
                                         method="DELETE")
        try:
            urllib.request.urlopen(request, timeout=5).read()
        except OSError:
            pass


def etcd_metric(endpoint, name, context=None):
    """A number from a test etcd's /metrics (`context`: TLS's): e.g. its v2 watch requests so far
    (etcd_debugging_store_watch_requests_total), its v2 watchers now (etcd_debugging_store_watchers)."""
    text = urllib.request.urlopen(endpoint + "/metrics", timeout=5, context=context).read().decode()
    return int(float(re.search(r"^%s (\S+)$" % name, text, re.MULTILINE).group(1)))


class LiveWriter:
    """Creates each lease it is handed only once the test etcd at `endpoint` holds a v2 watcher
    (the reader's request is in): the change then reaches that watcher live, not from etcd's
    history. `attrs(number)`: the LeaseAttrs of the number-th lease; `context`: TLS's."""

    def __init__(self, registry, endpoint, attrs, context=None):
        self.registry, self.endpoint, self.attrs, self.context = registry, endpoint, attrs, context
        self.leases, self.errors = [], []

    def _run(self, number, subnet):
        try:
            deadline = time.monotonic() + 20
            while etcd_metric(self.endpoint, "etcd_debugging_store_watchers", self.context) < 1:
                assert time.monotonic() < deadline, "no watcher at etcd within 20 s"
                time.sleep(0.02)
            self.leases.append(self.registry.create_lease(subnet, self.attrs(number), 600))
        except Exception as err:  # handed to the test's thread
            self.errors.append(err)

    def watch(self, watcher, index, number, subnet, with_config=False):
        """`watcher`.watch_leases from `index` while the lease of `subnet` is created live:
        (events, next index)."""
        thread = threading.Thread(target=self._run, args=(number, subnet), daemon=True)
        thread.start()
        events, index = watcher.watch_leases(index, 20, with_config=with_config)[:2]
        thread.join(20)
        assert not self.errors, self.errors
        return events, index


def _b64(text):
    return base64.b64encode(text.encode()).decode()


def v3_call(endpoint, path, body, timeout=5):
    """POST to etcd's v3 JSON gateway; the decoded answer."""
    request = urllib.request.Request(endpoint + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode())


def v2_admin_call(endpoint, method, path, body=None, auth=None):
    """A call to etcd's v2 API as an administrator would make it (users, roles, auth), with an
    optional "user:password" for basic auth; the raw answer."""
    request = urllib.request.Request(endpoint + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


class RawNode:
    """A key as python-etcd's read() returns it: `value` and `ttl` (None without an etcd lease)."""

    def __init__(self, key, value, ttl):
        self.key, self.value, self.ttl = key, value, ttl


class RawV3Client:
    """python-etcd's write/read/delete on the v3 API, for tests that write what the registry never would."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def _call(self, path, body):
        return v3_call(self.endpoint, path, body)

    def write(self, key, value, ttl=None):
        lease = int(self._call("/v3/lease/grant", {"TTL": ttl})["ID"]) if ttl else 0
        self._call("/v3/kv/put", {"key": _b64(key), "value": _b64(value), "lease": lease})

    def read(self, key):
        kvs = self._call("/v3/kv/range", {"key": _b64(key)}).get("kvs")
        if not kvs:
            raise KeyError(key)
        lease = int(kvs[0].get("lease", 0) or 0)
        ttl = int(self._call("/v3/lease/timetolive", {"ID": lease})["TTL"]) if lease else None
        return RawNode(key, base64.b64decode(kvs[0].get("value", "")).decode(), ttl)

    def delete(self, key):
        self._call("/v3/kv/deleterange", {"key": _b64(key)})

    def revision(self):
        return int(self._call("/v3/kv/range", {"key": _b64("/")})["header"]["revision"])

    def compact(self):
        """Drop all history before the current revision."""
        self._call("/v3/kv/compaction", {"revision": self.revision(), "physical": True})
