"""The v2 watch's request and reply on its socket: the status line, the few headers the watch
reads, and the body (chunked, with a Content-Length, or up to the end of the connection) within
etcd_http's limits (MAX_REPLY_BYTES, REPLY_SECONDS; a stall or an end mid-body is a BadReply);
a streaming watch's body (stream=true) read one event at a time, each within the same limits.
http.client's general reader (the headers parsed by the email package, the response object)
cost about a third of the agent's CPU per lease event (BENCHMARKS.md, issue 20)."""

import fcntl
import socket
import struct
import time

from ..etcd_http import MAX_REPLY_BYTES, REPLY_SECONDS, BadReply

MAX_HEAD = 64 * 1024  # the status line and headers: etcd's take about 300 bytes
_RECEIVE = 65536
_CLOSED = "connection closed before a reply"
_FIONREAD = 0x541B  # Linux's ioctl: the bytes a socket has received and not handed out yet


class Reply:
    """status (int), headers ({lower-case name: value}), body (bytes), keep_alive (bool), stream
    (the EventStream that goes on with the next events, or None: the body was the whole reply)."""

    __slots__ = ("status", "headers", "body", "keep_alive", "stream")

    def __init__(self, status, headers, body, keep_alive, stream=None):
        self.status, self.headers, self.body, self.keep_alive = status, headers, body, keep_alive
        self.stream = stream


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
        self.streaming = False  # in a stream's body: any byte that arrives begins an event

    def more(self):
        try:
            data = self.sock.recv(_RECEIVE)
        except socket.timeout:
            if self.body_begun:
                raise BadReply(self.source, "stalled mid-body")
            raise
        if not data:
            raise BadReply(self.source, "ended mid-body" if self.body_begun else _CLOSED)
        if time.monotonic() > self.deadline:
            raise BadReply(self.source, "still arriving after %.0f s" % REPLY_SECONDS)
        self.buffer += data
        self.body_begun = self.body_begun or self.streaming

    def until(self, separator, limit, what):
        """The bytes up to `separator` (taken off the buffer with it)."""
        while True:
            found = self.buffer.find(separator)
            if found >= 0:
                taken, self.buffer = self.buffer[:found], self.buffer[found + len(separator):]
                return taken
            if len(self.buffer) > limit:
                raise BadReply(self.source, "%s over %d bytes" % (what, limit))
            self.more()

    def some(self, count):
        """Up to `count` bytes: what is buffered, else what one read brings."""
        if not self.buffer:
            self.more()
        taken, self.buffer = self.buffer[:count], self.buffer[count:]
        return taken

    def exactly(self, count):
        while len(self.buffer) < count:
            self.more()
        taken, self.buffer = self.buffer[:count], self.buffer[count:]
        return taken

    def rest(self):
        """Everything up to the end of the connection."""
        while True:
            try:
                self.more()
            except BadReply as error:
                if error.problem.startswith("ended"):
                    taken, self.buffer = self.buffer, b""
                    return taken
                raise
            if len(self.buffer) > MAX_REPLY_BYTES:
                raise BadReply(self.source, "over %d MiB (the limit for one reply)" % (MAX_REPLY_BYTES >> 20))


def exchange(sock, request, source, timeout, stream=False):
    """Send `request` (bytes) on `sock` (its timeout set) and read the reply. QuietWatch (a
    socket.timeout) when nothing but the headers came within `timeout` (a watch with no change),
    socket.timeout when not even they came; BadReply when the
    reply is not HTTP, too big, stalls or ends mid-body; OSError as the socket raises it.
    `stream`: the request asked for a streaming watch; a chunked 200 reply's body is then its
    first event, and the Reply's `stream` reads the next ones (None when etcd ended it at once)."""
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
        if stream and parts[1] == "200" and "chunked" in headers.get("transfer-encoding", "").lower():
            events = EventStream(reader)
            body = events.next_event(timeout)
            if body is None:  # not etcd's way: it ends a stream only after events it could not send
                raise BadReply(source, "the watch stream ended before an event")
            return Reply(200, headers, body, False, events)
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


def _chunk_size(reader):
    """The size of the next chunk; at the last one (0) its trailers are read too."""
    size_line = reader.until(b"\r\n", 1024, "a chunk's size line")
    reader.body_begun = True
    size = size_line.split(b";", 1)[0].strip()
    try:
        size = int(size, 16)
    except ValueError:
        raise BadReply(reader.source, "not a chunk size: %r" % size_line[:40])
    if size == 0:
        while reader.until(b"\r\n", MAX_HEAD, "trailers"):
            pass
    return size


def _chunked(reader, source):
    pieces, total = [], 0
    while True:
        size = _chunk_size(reader)
        if size == 0:
            return b"".join(pieces)
        total += size
        if total > MAX_REPLY_BYTES:
            raise BadReply(source, "over %d MiB (the limit for one reply)" % (MAX_REPLY_BYTES >> 20))
        pieces.append(reader.exactly(size))
        reader.exactly(2)  # the chunk's CRLF


class EventStream:
    """The events of a streaming watch's chunked body, one JSON object a line as etcd writes them,
    for as long as etcd keeps the watch. Between events the stream may be quiet; an event, once its
    first byte came, must be whole within REPLY_SECONDS and MAX_REPLY_BYTES, without a stall."""

    def __init__(self, reader):
        self._reader = reader
        self._left = 0  # bytes of the chunk being read that are still to come
        self._pending = b""  # bytes of the body not yet a whole line

    def next_event(self, timeout):
        """The next event's line (bytes), or None when etcd ended the stream between events (its
        reply, or the connection: etcd restarted); socket.timeout when not a byte came within
        `timeout` s."""
        reader = self._reader
        reader.sock.settimeout(timeout)
        reader.deadline = time.monotonic() + timeout + REPLY_SECONDS
        self._pending = self._pending.lstrip()  # blanks between events begin none
        reader.body_begun = bool(self._pending or self._left or reader.buffer)
        reader.streaming = True
        while True:
            end = self._pending.find(b"\n")
            if end >= 0:
                line, self._pending = self._pending[:end], self._pending[end + 1:]
                if line.strip():
                    return line
                continue
            if len(self._pending) > MAX_REPLY_BYTES:
                raise BadReply(reader.source, "over %d MiB (the limit for one reply)" % (MAX_REPLY_BYTES >> 20))
            if not self._left:
                if not (self._pending or reader.buffer or self._more_between_events()):
                    return None
                self._left = _chunk_size(reader)
                if not self._left:
                    return None
            taken = reader.some(self._left)
            self._left -= len(taken)
            self._pending += taken
            if not self._left:
                reader.exactly(2)  # the chunk's CRLF

    def _more_between_events(self):
        """Read the next event's first bytes; False when the connection ends there instead."""
        try:
            self._reader.more()
        except ConnectionResetError:
            return False
        except BadReply as error:
            if error.problem != _CLOSED:
                raise
            return False
        return True

    def waiting(self):
        """The bytes received and not handed out yet (the socket's queue included)."""
        queued = struct.unpack("i", fcntl.ioctl(self._reader.sock.fileno(), _FIONREAD, b"\0\0\0\0"))[0]
        return queued + len(self._pending) + len(self._reader.buffer)
