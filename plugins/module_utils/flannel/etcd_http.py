"""etcd's replies read as untrusted input, and etcd requests that SIGTERM can end.

One transport for both registries: the v2 registry puts BoundedHTTP in place of the urllib3 pool
python-etcd issues its requests on (python-etcd then parses the body it is handed) and reads its
watch's replies with read_body on a connection of its own (registry/v2_watch.py), the v3 registry
uses BoundedHTTP on etcd's JSON gateway, and its watch reads the stream through LineStream.
- Every reply body is read within MAX_REPLY_BYTES and a time limit: a reply that never ends,
  is too big, stalls or is cut short raises BadReply, which names the endpoint and what was wrong.
- A RequestGate marks the requests the main thread waits in: the agent's SIGTERM handler closes
  it, which raises Stopping out of the request waiting now and out of any later one.
"""

import base64
import json
import queue
import threading
import time
from urllib.parse import urlsplit

try:
    from urllib3.exceptions import HTTPError, IncompleteRead, ProtocolError, ReadTimeoutError
except ImportError:  # reported by the caller through missing_libraries()
    HTTPError = IncompleteRead = ProtocolError = ReadTimeoutError = Exception

# A lease takes about 300 bytes in a listing (v3's base64 included), so every /24 of a /8 Network
# (65,536 leases, the most flannel's default layout holds) lists in about 20 MB: 32 MiB refuses no
# real listing, while a reply that never ends stops there instead of growing the agent's memory.
MAX_REPLY_BYTES = 32 * 1024 * 1024
# A body must be whole within this long after it could begin (the read timeout, a watch's wait):
# a listing of the size above takes 27 s at 10 Mbit/s. Silence mid-body is cut at the read timeout.
REPLY_SECONDS = 30.0
_CHUNK = 65536


class Stopping(Exception):
    """The process is stopping (SIGTERM, SIGINT): raised out of the etcd request it waits in."""


class BadReply(HTTPError):
    """A reply that cannot be used: too big, endless, stalled, cut short, or not what etcd sends.
    A urllib3 error, so that python-etcd passes it on as a failed request (its `cause`)."""

    def __init__(self, source, problem):
        super().__init__("etcd reply from %s: %s" % (source, problem))
        self.source = source
        self.problem = problem


def excerpt(text, limit=160):
    """`text` on one line and at most `limit` characters: for messages quoting what etcd sent."""
    flat = str(text).encode("unicode_escape").decode("ascii")
    return flat if len(flat) <= limit else flat[:limit] + "..."


def endpoint_of(url):
    parts = urlsplit(url)
    return "%s://%s" % (parts.scheme, parts.netloc)


def _megabytes(count):
    return "%d MiB" % (count // (1024 * 1024)) if count >= 1024 * 1024 else "%d bytes" % count


def _seconds(timeout, default):
    """The read timeout of a request's `timeout` argument (a number, urllib3 Timeout or None)."""
    if isinstance(timeout, (int, float)):
        return float(timeout)
    read = getattr(timeout, "read_timeout", None)
    if isinstance(read, (int, float)):
        return float(read)
    return default


def chunks(response):
    """The body's bytes as they arrive (one socket read each with urllib3 2, whose read1 does not
    wait for a full buffer: a trickle cannot hide from the time limit), never decompressed (etcd
    does not compress unless asked, and a decompressed chunk could be any size)."""
    read1 = getattr(response, "read1", None)
    if read1 is None:  # urllib3 1.x (the modules on a host's own packages): whole chunks
        yield from response.stream(_CHUNK, decode_content=False)
        return
    while True:
        chunk = read1(_CHUNK, decode_content=False)
        if not chunk:
            return
        yield chunk


def read_body(response, source, deadline, limit=MAX_REPLY_BYTES):
    """The whole body of `response`, or BadReply when it passes `limit` bytes or `deadline`
    (time.monotonic()), or stops partway. A read timeout before the first byte is passed on as
    it is: for a v2 watch that is the watch timing out."""
    body = bytearray()
    try:
        for chunk in chunks(response):
            body += chunk
            if len(body) > limit:
                raise BadReply(source, "over %s (the limit for one reply)" % _megabytes(limit))
            if time.monotonic() > deadline:
                raise BadReply(source, "still arriving after %.0f s" % REPLY_SECONDS)
    except (ReadTimeoutError, ProtocolError) as err:
        begun = bool(body)
        del body[:]  # see below
        if begun or isinstance(err, IncompleteRead):
            raise BadReply(source, "stalled mid-body" if isinstance(err, ReadTimeoutError) else "ended mid-body")
        raise
    except BaseException:
        # Emptied now: the exception's traceback holds this frame, and through it the body, until
        # the garbage collector happens to free the cycle (each retry would keep another one).
        del body[:]
        raise
    return body


class RequestGate:
    """Counts the main thread's etcd requests in progress; close() (from a signal handler, which
    Python runs in the main thread) raises Stopping out of the one waiting now, and every later
    request raises it at once. Other threads' requests are not counted (the handler cannot end them)."""

    def __init__(self):
        self._waiting = 0
        self.closed = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._waiting += 1
            if self.closed:  # after the count: a signal arriving in between still raises
                self._waiting -= 1
                raise Stopping()
        return self

    def __exit__(self, *_exc):
        if threading.current_thread() is threading.main_thread():
            self._waiting -= 1

    def close(self):
        self.closed = True
        if self._waiting:
            raise Stopping()


class Reply:
    """A reply read whole: what python-etcd and the v3 registry use of urllib3's response."""

    def __init__(self, status, headers, data):
        self.status = status
        self.headers = headers
        self.data = data

    def getheader(self, name, default=None):
        return self.headers.get(name, default)

    def getheaders(self):
        return self.headers


class BoundedHTTP:
    """A urllib3 PoolManager whose replies are read whole within the limits, inside `gate`."""

    def __init__(self, pool, gate):
        self.pool = pool
        self.gate = gate

    def __getattr__(self, name):  # clear(), connection_from_url() ... as the pool's
        # python-etcd sends requests through the two methods below; its raw-pool call serves only
        # its auth administration API, which the registry never uses.
        return getattr(self.pool, name)

    def request(self, method, url, **options):
        return self._read("request", method, url, options)

    def request_encode_body(self, method, url, **options):
        return self._read("request_encode_body", method, url, options)

    def _read(self, call, method, url, options):
        options["preload_content"] = False
        # urllib3's default would silently send a request 3 more times after a timeout (PUTs too):
        # python-etcd's 5 s timeout became 20 s. The registries fail over and the agent retries.
        options.setdefault("retries", False)
        default_read = _seconds(getattr(self.pool, "connection_pool_kw", {}).get("timeout"), REPLY_SECONDS)
        with self.gate:
            deadline = time.monotonic() + _seconds(options.get("timeout"), default_read) + REPLY_SECONDS
            response = getattr(self.pool, call)(method, url, **options)
            try:
                data = read_body(response, endpoint_of(url), deadline)
            except BaseException:
                response.close()  # never back to the pool mid-body
                raise
            finally:
                response.release_conn()
        return Reply(response.status, response.headers, data)

    def open_stream(self, method, url, **options):
        """The response with its body unread (a watch stream, read by LineStream): its headers
        within the read timeout, its body then without one (a watch may be quiet for any time)."""
        with self.gate:
            response = self.pool.request(method, url, preload_content=False, **options)
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is None:  # "Connection: close": http.client let go of the socket; its reader holds it
            reader = getattr(getattr(response, "_original_response", None), "fp", None)
            sock = getattr(getattr(reader, "raw", None), "_sock", None)
        if sock is not None:
            sock.settimeout(None)
        return response


class StreamEnded(Exception):
    """The stream closed or broke (etcd restarted, the connection dropped): reopen it."""


class LineStream:
    """A streaming reply of newline-separated messages (etcd's v3 watch), read by a daemon thread.
    Each message within MAX_REPLY_BYTES; once begun, with no silence over `silence` s and whole
    within `silence` + REPLY_SECONDS. Between messages a stream may be quiet for any time."""

    def __init__(self, response, source, silence, gate):
        self.response = response
        self.source = source
        self._silence = silence
        self._gate = gate
        self._lines = queue.Queue()
        self._room = threading.Semaphore(2)  # messages read ahead: what a slow reader can hold
        self._partial = None  # (when its first byte came, when its last byte came) of a begun message
        self.closed = False
        threading.Thread(target=self._read, name="etcd-stream", daemon=True).start()

    def _hand_over(self, item):
        while not self._room.acquire(timeout=1.0):
            if self.closed:
                return False
        self._lines.put(item)
        return True

    def _read(self):
        buffered = bytearray()
        try:
            for chunk in chunks(self.response):
                now = time.monotonic()
                begun = self._partial[0] if self._partial else now
                scan = len(buffered)  # the bytes before it hold no newline: never scanned twice
                buffered += chunk
                while True:
                    end = buffered.find(b"\n", scan)
                    if end < 0:
                        break
                    line = bytes(buffered[:end])
                    del buffered[:end + 1]
                    scan, begun = 0, now  # what is left began in this chunk
                    if line.strip() and not self._hand_over(line):
                        return
                if len(buffered) > MAX_REPLY_BYTES:
                    del buffered[:]  # the exception's traceback holds this frame (see read_body)
                    raise BadReply(self.source, "a watch message over %s" % _megabytes(MAX_REPLY_BYTES))
                # A few blanks between messages are not a message begun.
                self._partial = (begun, now) if len(buffered) > 8 or buffered.strip() else None
            self._hand_over(StreamEnded("etcd closed the watch stream"))
        except BadReply as err:
            self._hand_over(err)
        except Exception as err:  # handed to the reader: the stream is over either way
            del buffered[:]
            self._hand_over(StreamEnded("watch stream broken: %s" % excerpt(err)))

    def _stall(self):
        """When the message begun now counts as stalled (time.monotonic()), or None."""
        partial = self._partial
        if partial is None:
            return None
        return min(partial[1] + self._silence, partial[0] + self._silence + REPLY_SECONDS)

    def next_line(self, timeout):
        """The next message (bytes), or None after `timeout` s without one; BadReply or
        StreamEnded when the stream is over."""
        deadline = time.monotonic() + timeout
        with self._gate:
            while True:
                now = time.monotonic()
                stall = self._stall()
                if stall is not None and now >= stall:
                    self.close()
                    raise BadReply(self.source, "a watch message stalled mid-way")
                wait = min(deadline, stall) - now if stall is not None else deadline - now
                if wait <= 0:
                    return None
                try:
                    item = self._lines.get(timeout=wait)
                except queue.Empty:
                    continue
                self._room.release()
                if isinstance(item, Exception):
                    self.close()
                    raise item
                return item

    def close(self):
        self.closed = True
        try:
            self.response.shutdown()  # urllib3 >= 2.3: wakes the reader thread blocked in recv()
        except Exception:  # older urllib3, or already closed
            pass
        self.response.close()  # never back to the pool: the connection is mid-stream


# ---- the shapes of etcd's replies ------------------------------------------------------------

def json_object(body, source):
    """A reply body decoded: a JSON object, else BadReply."""
    try:
        data = json.loads(bytes(body).decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise BadReply(source, "not JSON")
    if not isinstance(data, dict):
        raise BadReply(source, "wrong shape: not a JSON object")
    return data


_V2_FIELDS = (("key", str), ("value", (str, type(None))), ("modifiedIndex", int), ("ttl", (int, type(None))),
              ("dir", bool), ("action", (str, type(None))))


def checked_v2_node(node, source):
    """A python-etcd node (EtcdResult) whose fields have the types etcd gives them; BadReply else."""
    for field, kinds in _V2_FIELDS:
        value = getattr(node, field, None)
        if not isinstance(value, kinds) or (kinds is int and isinstance(value, bool)):
            raise BadReply(source, "wrong shape: node %s is %s" % (field, excerpt(repr(value), 60)))
    return node


def checked_v2_nodes(result, source):
    """Every node of a v2 listing, each checked; BadReply when the tree is not etcd's."""
    try:
        return [checked_v2_node(node, source) for node in result.get_subtree()]
    except (TypeError, AttributeError, KeyError, RecursionError):
        raise BadReply(source, "wrong shape: a listing's nodes are not etcd's")


def checked_v3_kv(kv):
    """A key-value of a v3 reply, its fields checked: TypeError or ValueError when not etcd's."""
    if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
        raise TypeError("not an object with a key")
    for field in ("key", "value"):
        base64.b64decode(kv.get(field) or "")
    for field in ("mod_revision", "create_revision", "lease"):
        int(kv.get(field, 0) or 0)
    return kv
