"""The v2 registry's watch: GET <key>?wait=true&recursive=true&waitIndex=N on a kept-alive
connection of its own per endpoint (urllib3 connects it, TLS included), the request written and
its reply read on the socket by v2_reply.py within etcd_http's limits, and only the fields the
registry uses taken from it. Through python-etcd the same request cost about twice the CPU per
lease event (its pool manager parses the URL twice, and builds a result object), and through
http.client a third more than on the socket: BENCHMARKS.md.

Everything else python-etcd does for a request is kept: its client's TLS options and credentials,
its exceptions for etcd's error answers (EtcdError.handle) and for failures, and its check that
the cluster behind the endpoint is still the same one.
"""

import socket
from http.client import HTTPException
from urllib.parse import quote

try:
    import etcd
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.exceptions import HTTPError, ReadTimeoutError
    from urllib3.util import make_headers
except ImportError:  # reported by the caller through missing_libraries()
    etcd = HTTPConnection = HTTPSConnection = make_headers = None
    HTTPError = ReadTimeoutError = Exception

from ..etcd_http import BadReply, checked_v2_node, excerpt, json_object
from .errors import IndexCleared
from .v2_reply import exchange

# The options of python-etcd's pool that its connections take (TLS).
_TLS_OPTIONS = ("cert_file", "key_file", "ca_certs", "cert_reqs")
# A key's characters that go into the path as they are (RFC 3986's pchar, as urllib3 keeps them).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class WatchedNode:
    """The fields of a watch reply's node that the registry reads, named as python-etcd names them."""

    __slots__ = ("action", "key", "value", "modifiedIndex", "createdIndex", "ttl", "dir")

    def __init__(self, action, node):
        self.action = action
        self.key = node.get("key")
        self.value = node.get("value")
        self.modifiedIndex = node.get("modifiedIndex")
        self.createdIndex = node.get("createdIndex")
        self.ttl = node.get("ttl")
        self.dir = node.get("dir", False)


class V2Watch:
    """Waits for changes at the endpoint of python-etcd's `client` (scheme://host:port), with its
    TLS options, the credentials, and the registry's RequestGate."""

    def __init__(self, client, scheme, host, port, username, password, gate):
        self.client = client
        self.source = client.base_uri
        pool_options = getattr(client.http, "connection_pool_kw", {})
        self._connect = (HTTPSConnection if scheme == "https" else HTTPConnection, host, port,
                         dict((name, pool_options[name]) for name in _TLS_OPTIONS
                              if scheme == "https" and name in pool_options))
        headers = make_headers(basic_auth="%s:%s" % (username, password)) if username and password else {}
        self._request_head = "HTTP/1.1\r\nHost: %s:%d\r\nAccept-Encoding: identity\r\n%s\r\n" % (
            host, port, "".join("%s: %s\r\n" % item for item in sorted(headers.items())))
        self._gate = gate
        self._connection = None

    def close(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def read(self, key, wait_index, timeout):
        """The change at `key` or below at `wait_index` or later, a checked WatchedNode; raises
        python-etcd's exceptions as its client would (EtcdWatchTimedOut when nothing changed within
        `timeout` s), or BadReply."""
        target = "/v2/keys%s?wait=true&recursive=true&waitIndex=%d" % (quote(key, safe=_PATH_SAFE), wait_index)
        with self._gate:
            try:
                response = self._send(target, timeout)
            except (ReadTimeoutError, socket.timeout) as err:  # no change (no byte of a reply) within timeout
                self.close()
                # Quiet, but its headers came: an etcd re-formed on the same URLs (a new cluster,
                # its index below ours) would keep every watch quiet; its cluster ID says so, and
                # its index when the cluster ID is the same (a data directory emptied or restored).
                self._check_cluster(getattr(err, "headers", {}))
                self._check_index(getattr(err, "headers", {}), wait_index)
                raise etcd.EtcdWatchTimedOut("Watch timed out: %r" % err, cause=err)
            except BadReply:
                self.close()
                raise
            except (HTTPError, HTTPException, OSError) as err:
                self.close()
                raise etcd.EtcdConnectionFailed("Connection to etcd failed due to %r" % err, cause=err)
            except BaseException:  # Stopping: the connection is mid-request
                self.close()
                raise
        if not response.keep_alive:
            self.close()
        self._check_cluster(response.headers)
        if response.status != 200:
            self.close()  # rare, and the reply may not have ended the request cleanly
            etcd.EtcdError.handle(self._error_payload(response.status, response.body))
        reply = json_object(response.body, self.source)
        if not isinstance(reply.get("node"), dict):
            raise BadReply(self.source, "wrong shape: not an etcd v2 reply")
        return checked_v2_node(WatchedNode(reply.get("action"), reply["node"]), self.source)

    def _send(self, target, timeout):
        """The v2_reply.Reply, on the kept-alive connection unless etcd closed it meanwhile (as
        urllib3's pool checks a connection before it reuses one)."""
        connection = self._connection
        if connection is None or not connection.is_connected:
            self.close()
            kind, host, port, options = self._connect
            connection = self._connection = kind(host, port, timeout=timeout, **options)
            connection.connect()
        connection.sock.settimeout(timeout)
        return exchange(connection.sock, ("GET %s " % target + self._request_head).encode("latin-1"), self.source,
                        timeout)

    def _check_cluster(self, headers):
        """Another etcd cluster behind the endpoint than before: python-etcd's EtcdClusterIdChanged,
        once, its client sharing what was seen last."""
        cluster_id = headers.get("x-etcd-cluster-id")
        if not cluster_id:
            return
        expected, self.client.expected_cluster_id = self.client.expected_cluster_id, cluster_id
        if expected and expected != cluster_id:
            self.close()
            raise etcd.EtcdClusterIdChanged("The UUID of the cluster changed from %s to %s." % (expected, cluster_id))

    def _check_index(self, headers, wait_index):
        """IndexCleared when etcd's index (X-Etcd-Index, where the watch started) is below the one
        already seen (wait_index - 1): it answers nothing until it gets there."""
        index = headers.get("x-etcd-index", "")
        if index.isdigit() and int(index) < wait_index - 1:
            self.close()
            raise IndexCleared("etcd at %s is at index %s, below %d already seen (restored or emptied?)"
                               % (self.source, index, wait_index - 1))

    @staticmethod
    def _error_payload(status, body):
        """etcd's error answer for EtcdError.handle, as python-etcd makes it of a reply."""
        try:
            payload = json_object(body, "")
        except BadReply:
            payload = {"message": "Bad response", "cause": excerpt(bytes(body[:200]).decode("utf-8", "replace"))}
        payload["status"] = status
        return payload
