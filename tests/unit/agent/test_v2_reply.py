"""The v2 watch's reply read on its socket (registry/v2_reply.py), against a socket pair: the
framings etcd uses, and every way a reply can fail (quiet, stalled, cut short, endless, not HTTP)."""

import socket
import threading

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.etcd_http import BadReply
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import v2_reply

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Etcd-Cluster-Id: 1a2b\r\n"


def _exchange(*parts, timeout=0.3, close=False):
    """The reply `parts` (bytes written one by one) make, read by v2_reply.exchange."""
    ours, theirs = socket.socketpair()
    ours.settimeout(timeout)

    def serve():
        theirs.recv(65536)  # the request
        for part in parts:
            theirs.sendall(part)
        if close:
            theirs.close()

    server = threading.Thread(target=serve)
    server.start()
    try:
        return v2_reply.exchange(ours, b"GET /v2/keys/x HTTP/1.1\r\n\r\n", "http://etcd:2379", timeout)
    finally:
        server.join()
        ours.close()
        if not close:
            theirs.close()


def test_a_chunked_reply_in_pieces_is_read_whole_and_the_connection_kept():
    reply = _exchange(HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b"4\r\n{\"a\"", b"\r\n3\r\n:1}\r\n0\r\n\r\n")
    assert (reply.status, reply.body, reply.keep_alive) == (200, b'{"a":1}', True)
    assert reply.headers["x-etcd-cluster-id"] == "1a2b"


def test_a_content_length_reply_and_connection_close():
    reply = _exchange(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert (reply.status, reply.body, reply.keep_alive) == (404, b"{}", False)


def test_a_reply_to_the_end_of_the_connection():
    reply = _exchange(b"HTTP/1.0 200 OK\r\n\r\n{\"b\":2}", close=True)
    assert (reply.body, reply.keep_alive) == (b'{"b":2}', False)


def test_headers_then_nothing_is_a_quiet_watch_that_names_its_cluster():
    with pytest.raises(socket.timeout) as caught:
        _exchange(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    assert caught.value.headers["x-etcd-cluster-id"] == "1a2b"


def test_nothing_at_all_is_a_timeout_without_headers():
    with pytest.raises(socket.timeout) as caught:
        _exchange()
    assert not hasattr(caught.value, "headers")


@pytest.mark.parametrize("parts, close, problem", [
    ((HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b"10\r\n{\"a\""), False, "stalled mid-body"),
    ((HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b"10\r\n{\"a\""), True, "ended mid-body"),
    ((HEAD + b"Content-Length: 10\r\n\r\n{}",), True, "ended mid-body"),
    ((b"SSH-2.0-OpenSSH\r\n\r\n",), False, "not an HTTP reply: 'SSH-2.0-OpenSSH'"),
    ((HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b"zz\r\n"), False, "not a chunk size: b'zz'"),
    ((HEAD + b"Content-Length: 99999999999\r\n\r\n",), False, "over 32 MiB (the limit for one reply)"),
    ((b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000,), False, "headers over 65536 bytes"),
    ((), True, "connection closed before a reply"),
])
def test_a_reply_that_cannot_be_used_names_what_was_wrong(parts, close, problem):
    with pytest.raises(BadReply) as caught:
        _exchange(*parts, close=close)
    assert caught.value.problem == problem and "http://etcd:2379" in str(caught.value)


MIB = 1024 * 1024
STREAM_HEAD = HEAD + b"X-Etcd-Index: 7\r\nTransfer-Encoding: chunked\r\n\r\n"


def _open_stream(*parts):
    """(the Reply of a streaming watch, the server's end) once `parts` are sent: the server's end
    stays open for the test to send more."""
    ours, theirs = socket.socketpair()
    ours.settimeout(0.3)
    for part in parts:
        theirs.sendall(part)
    try:
        reply = v2_reply.exchange(ours, b"GET /v2/keys/x?stream=true HTTP/1.1\r\n\r\n", "http://etcd:2379", 0.3,
                                  stream=True)
        theirs.recv(65536)  # the request
        return reply, theirs
    except BaseException:
        ours.close()
        theirs.close()
        raise


def test_a_stream_hands_out_each_event_as_it_comes_however_it_is_chunked():
    reply, theirs = _open_stream(STREAM_HEAD, b"6\r\n{\"a\":1\r\n", b"3\r\n}\n{\r\n")
    try:
        assert (reply.status, reply.body, reply.headers["x-etcd-index"]) == (200, b'{"a":1}', "7")
        theirs.sendall(b"8\r\n\"b\":2}\n\n\r\n")  # the rest of the second event, and a blank line
        assert reply.stream.next_event(0.3) == b'{"b":2}'
        with pytest.raises(socket.timeout):  # quiet between events: no change yet, the stream goes on
            reply.stream.next_event(0.2)
        theirs.sendall(b"8\r\n{\"c\":3}\n\r\n0\r\n\r\n")
        assert reply.stream.next_event(0.3) == b'{"c":3}'
        assert reply.stream.next_event(0.3) is None  # etcd ended it: the watch asks again
    finally:
        theirs.close()


def test_a_stream_that_is_not_chunked_or_not_200_is_a_whole_reply():
    reply, theirs = _open_stream(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n{}")
    theirs.close()
    assert (reply.status, reply.body, reply.stream) == (400, b"{}", None)


@pytest.mark.parametrize("more, close, problem", [
    (b"10\r\n{\"a\"", False, "stalled mid-body"),  # an event begun, then silence
    (b"10\r\n{\"a\"", True, "ended mid-body"),
    (b"4\r\n{\"a\"\r\n", False, "stalled mid-body"),  # a whole chunk, but not a whole event
    (b"zz\r\n", False, "not a chunk size: b'zz'"),
    (b"%x\r\n{%s\r\n" % (2 * MIB, b" " * (2 * MIB - 1)), False, "over 1 MiB (the limit for one reply)"),  # no end
])
def test_an_event_of_a_stream_that_cannot_be_used_names_what_was_wrong(monkeypatch, more, close, problem):
    monkeypatch.setattr(v2_reply, "MAX_REPLY_BYTES", MIB)
    reply, theirs = _open_stream(STREAM_HEAD, b"4\r\n{}\n\n\r\n")

    def send():
        try:
            theirs.sendall(more)
        except OSError:  # the reader stopped reading at the limit
            pass
        if close:
            theirs.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        assert reply.body == b"{}"
        with pytest.raises(BadReply) as caught:
            reply.stream.next_event(0.3)
        assert caught.value.problem == problem and "http://etcd:2379" in str(caught.value)
    finally:
        theirs.close()
        sender.join(5)


def test_a_stream_ended_before_its_first_event_is_a_bad_reply():
    with pytest.raises(BadReply) as caught:
        _open_stream(STREAM_HEAD, b"0\r\n\r\n")
    assert caught.value.problem == "the watch stream ended before an event"


def test_a_stream_whose_connection_ends_between_events_is_over_not_broken():
    """etcd restarting closes the connection between two events: nothing was cut short."""
    reply, theirs = _open_stream(STREAM_HEAD, b"4\r\n{}\n\n\r\n")
    theirs.close()
    assert reply.body == b"{}" and reply.stream.next_event(0.3) is None
