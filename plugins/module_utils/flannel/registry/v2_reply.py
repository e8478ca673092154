"""The v2 watch's request and reply on its socket: the status line, the few headers the watch
reads, and the body (chunked, with a Content-Length, or up to the end of the connection) within
etcd_http's limits (MAX_REPLY_BYTES, REPLY_SECONDS; a stall or an end mid-body is a BadReply).
http.client's general reader (the headers parsed by the email package, the response object)
cost about a third of the agent's CPU per lease event (BENCHMARKS.md, issue 20)."""

import socket
import time

from ..etcd_http import MAX_REPLY_BYTES, REPLY_SECONDS, BadReply

MAX_HEAD = 64 * 1024  # the status line and headers: etcd's take about 300 bytes
_RECEIVE = 65536


class Reply:
    """status (int), headers ({lower-case name: value}), body (bytes), keep_alive (bool)."""

    __slots__ = ("status", "headers", "body", "keep_alive")

    def __init__(self, status, headers, body, keep_alive):
        self.status, self.headers, self.body, self.keep_alive = status, headers, body, keep_alive


class QuietWatch(socket.timeout):
    """The headers came, then no body within the timeout: a watch with no change. The headers still
    name the cluster that answered (X-Etcd-Cluster-Id)."""

    def __init__(self, headers):
        super().__init__("timed out")
        self.headers = headers


class _Reader:
    """Bytes of one reply as they arrive on `sock`, within the limits."""

    def __init__(self, sock, source, deadline):
        self.sock, self.source, self.deadline = sock, source, deadline
        self.buffer = b""
        self.body_begun = False  # a byte after the headers arrived: a timeout is a stall, not quiet

    def _more(self):
        try:
            data = self.sock.recv(_RECEIVE)
        except socket.timeout:
            if self.body_begun:
                raise BadReply(self.source, "stalled mid-body")
            raise
        if not data:
            raise BadReply(self.source, "ended mid-body" if self.body_begun else "connection closed before a reply")
        if time.monotonic() > self.deadline:
            raise BadReply(self.source, "still arriving after %.0f s" % REPLY_SECONDS)
        self.buffer += data

    def until(self, separator, limit, what):
        """The bytes up to `separator` (taken off the buffer with it)."""
        while True:
            found = self.buffer.find(separator)
            if found >= 0:
                taken, self.buffer = self.buffer[:found], self.buffer[found + len(separator):]
                return taken
            if len(self.buffer) > limit:
                raise BadReply(self.source, "%s over %d bytes" % (what, limit))
            self._more()

    def exactly(self, count):
        while len(self.buffer) < count:
            self._more()
        taken, self.buffer = self.buffer[:count], self.buffer[count:]
        return taken

    def rest(self):
        """Everything up to the end of the connection."""
        while True:
            try:
                self._more()
            except BadReply as error:
                if error.problem.startswith("ended"):
                    taken, self.buffer = self.buffer, b""
                    return taken
                raise
            if len(self.buffer) > MAX_REPLY_BYTES:
                raise BadReply(self.source, "over %d MiB (the limit for one reply)" % (MAX_REPLY_BYTES >> 20))


def exchange(sock, request, source, timeout):
    """Send `request` (bytes) on `sock` (its timeout set) and read the reply. QuietWatch (a
    socket.timeout) when nothing but the headers came within `timeout` (a watch with no change),
    socket.timeout when not even they came; BadReply when the
    reply is not HTTP, too big, stalls or ends mid-body; OSError as the socket raises it."""
    sock.sendall(request)
    reader = _Reader(sock, source, time.monotonic() + timeout + REPLY_SECONDS)
    head = reader.until(b"\r\n\r\n", MAX_HEAD, "headers").decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise BadReply(source, "not an HTTP reply: %r" % head[0][:80])
    headers = {}
    for line in head[1:]:
        name, _colon, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    reader.body_begun = bool(reader.buffer)
    keep_alive = parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    try:
        body, keep_alive = _body(reader, headers, source, keep_alive)
    except socket.timeout:  # the reader's only before the body began
        raise QuietWatch(headers) from None
    return Reply(int(parts[1]), headers, body, keep_alive and not reader.buffer)


def _body(reader, headers, source, keep_alive):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _chunked(reader, source), keep_alive
    if headers.get("content-length", "").isdigit():
        length = int(headers["content-length"])
        if length > MAX_REPLY_BYTES:
            raise BadReply(source, "over %d MiB (the limit for one reply)" % (MAX_REPLY_BYTES >> 20))
        reader.body_begun = reader.body_begun or length > 0
        return reader.exactly(length), keep_alive
    return reader.rest(), False


def _chunked(reader, source):
    pieces, total = [], 0
    while True:
        size_line = reader.until(b"\r\n", 1024, "a chunk's size line")
        reader.body_begun = True
        size = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size, 16)
        except ValueError:
            raise BadReply(source, "not a chunk size: %r" % size_line[:40])
        if size == 0:
            while reader.until(b"\r\n", MAX_HEAD, "trailers"):
                pass
            return b"".join(pieces)
        total += size
        if total > MAX_REPLY_BYTES:
            raise BadReply(source, "over %d MiB (the limit for one reply)" % (MAX_REPLY_BYTES >> 20))
        pieces.append(reader.exactly(size))
        reader.exactly(2)  # the chunk's CRLF
