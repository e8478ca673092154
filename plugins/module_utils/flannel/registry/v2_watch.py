"""The v2 registry's watch: GET <key>?wait=true&recursive=true&waitIndex=N on a kept-alive
connection of its own per endpoint (urllib3 connects it, TLS included), the request written and
its reply read on the socket by v2_reply.py within etcd_http's limits, and only the fields the
registry uses taken from it. While changes keep coming, one streaming request carries them
(stream=true: no request per event). Through python-etcd the same request cost about twice the CPU per
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
# A stream this far behind is let go. etcd drops a stream's watcher without a word (its reply goes
# quiet, not ended) when 100 events queue behind a connection whose buffers are full; about 150
# lease events are 32 KiB, less than the receive buffer Linux gives a TCP socket (tcp_rmem).
_STREAM_BEHIND = 32 * 1024


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
    TLS options, the credentials, and the registry's RequestGate.

    While changes keep coming, one streaming request (stream=true) carries them all: the watch
    asks for one when it waits beyond etcd's index (the X-Etcd-Index of the last reply), and keeps
    it while each read asks for the change after the last one it handed out. etcd streams only a
    watch it registered: one answered from its history sends that event and nothing after it, so
    a stream whose first event is not beyond its X-Etcd-Index is closed after that event, and so is
    one that falls behind (_STREAM_BEHIND): the changes after it are then read from etcd's history."""

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
        self._stream = None  # the v2_reply.EventStream open on the connection
        self._stream_next = None  # (key, index) of the change the stream's next event is
        self._etcd_index = None  # etcd's index as the last reply said it (X-Etcd-Index, or its event's)

    def close(self):
        self._stream = self._stream_next = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def read(self, key, wait_index, timeout):
        """The change at `key` or below at `wait_index` or later, a checked WatchedNode; raises
        python-etcd's exceptions as its client would (EtcdWatchTimedOut when nothing changed within
        `timeout` s), or BadReply."""
        with self._gate:
            try:
                if self._stream is not None and self._stream_next == (key, wait_index):
                    body = self._stream.next_event(timeout)
                    if body is not None:
                        node = self._node(key, body)
                        self._etcd_index = max(self._etcd_index or 0, node.modifiedIndex)
                        return node
                # Another key or index than the stream's, or etcd ended it: a new request.
                response = self._send(key, wait_index, timeout)
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
        if not response.keep_alive and response.stream is None:
            self.close()
        self._check_cluster(response.headers)
        if response.status != 200:
            self.close()  # rare, and the reply may not have ended the request cleanly
            etcd.EtcdError.handle(self._error_payload(response.status, response.body))
        started_at, self._stream = self._etcd_index, response.stream
        node = self._node(key, response.body)
        if self._stream is not None and (started_at is None or node.modifiedIndex <= started_at):
            self.close()  # answered from etcd's history: nothing follows on this stream
        self._etcd_index = max(started_at or 0, node.modifiedIndex)
        return node

    def _node(self, key, body):
        """The checked WatchedNode of a reply's body or a stream's event; the stream (if any) then
        waits at the change after it."""
        try:
            reply = json_object(body, self.source)
            if not isinstance(reply.get("node"), dict):
                raise BadReply(self.source, "wrong shape: not an etcd v2 reply")
            node = checked_v2_node(WatchedNode(reply.get("action"), reply["node"]), self.source)
        except BadReply:
            self.close()
            raise
        if self._stream is not None:
            self._stream_next = (key, node.modifiedIndex + 1)
            if self._stream.waiting() > _STREAM_BEHIND:
                self.close()
        return node

    def _send(self, key, wait_index, timeout):
        """The v2_reply.Reply, on the kept-alive connection unless etcd closed it meanwhile (as
        urllib3's pool checks a connection before it reuses one); a streaming one when waiting
        beyond etcd's index (a change to come, not one in its history)."""
        if self._stream is not None:
            self.close()
        stream = self._etcd_index is not None and wait_index > self._etcd_index
        target = "/v2/keys%s?wait=true&recursive=true&waitIndex=%d%s" % (
            quote(key, safe=_PATH_SAFE), wait_index, "&stream=true" if stream else "")
        connection = self._connection
        if connection is None or not connection.is_connected:
            self.close()
            kind, host, port, options = self._connect
            connection = self._connection = kind(host, port, timeout=timeout, **options)
            connection.connect()
        connection.sock.settimeout(timeout)
        return exchange(connection.sock, ("GET %s " % target + self._request_head).encode("latin-1"), self.source,
                        timeout, stream)

    def _check_cluster(self, headers):
        """Another etcd cluster behind the endpoint than before: python-etcd's EtcdClusterIdChanged,
        once, its client sharing what was seen last. Notes etcd's index (X-Etcd-Index) when
        headers came."""
        if headers:
            index = headers.get("x-etcd-index", "")
            self._etcd_index = int(index) if index.isdigit() else None
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
