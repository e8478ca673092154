"""etcd's replies as untrusted input, for both registries: a misbehaving HTTP server on loopback
answers with a body that never ends, one too big, one that stalls or is cut short, not JSON or the
wrong shape, and each becomes a one-line RegistryBadReply naming the endpoint, within the limits;
a request waiting on a silent server ends at once when the process is told to stop."""

import signal
import time

import pytest

from support.misbehaving_etcd import CLOSING, WRONG_SHAPES, MisbehavingEtcd
from ansible_collections.netlab.flannel.plugins.module_utils.flannel import etcd_http
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.etcd_http import Stopping
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import (
    RegistryBadReply, RegistryUnavailable, make_registry)

TIMEOUT = 1.0  # the registries' read timeout here: what a stall waits for


@pytest.fixture
def fake(api):
    server = MisbehavingEtcd(api=api)
    yield server
    server.close()


def _bad_reply(call, *args):
    """The RegistryBadReply a call raises, and how long it took to."""
    started = time.monotonic()
    with pytest.raises(RegistryBadReply) as raised:
        call(*args)
    return str(raised.value), time.monotonic() - started


def _one_line_naming(message, endpoint, what):
    assert message.startswith("etcd reply from %s: " % endpoint), message
    assert what in message, message
    assert "\n" not in message and len(message) < 200, message


@pytest.mark.parametrize("mode, what", [
    ("endless", "over 32 MiB (the limit for one reply)"),
    ("huge", "over 32 MiB (the limit for one reply)"),
    ("stall", "stalled mid-body"),
    ("cut", "ended mid-body"),
    ("not_json", "not JSON"),
])
def test_reply_over_the_limits_or_broken_is_a_bad_reply(api, fake, mode, what):
    fake.mode = mode
    registry = make_registry(api, endpoints=fake.endpoint, timeout=TIMEOUT)
    message, took = _bad_reply(registry.get_config)
    _one_line_naming(message, fake.endpoint, what)
    assert took < 10
    # The same trouble again is the same message: the agent logs it once, not once per retry.
    assert _bad_reply(registry.list_leases)[0] == message


def test_reply_that_trickles_ends_at_the_time_limit(api, fake, monkeypatch):
    monkeypatch.setattr(etcd_http, "REPLY_SECONDS", 2.0)
    fake.mode = "trickle"  # a byte a second: never silent for the read timeout
    registry = make_registry(api, endpoints=fake.endpoint, timeout=1.5)
    message, took = _bad_reply(registry.get_config)
    _one_line_naming(message, fake.endpoint, "still arriving after 2 s")
    assert 3.0 < took < 7.0


def test_deeply_nested_reply_is_a_bad_reply(api, fake):
    fake.mode = "deep"
    registry = make_registry(api, endpoints=fake.endpoint, timeout=TIMEOUT)
    message = _bad_reply(registry.get_config)[0]
    assert message.startswith("etcd reply from %s: " % fake.endpoint) and "\n" not in message


@pytest.mark.parametrize("shape", range(5))
def test_reply_of_the_wrong_shape_is_a_bad_reply(api, fake, shape):
    if shape >= len(WRONG_SHAPES[api]):
        pytest.skip("no such shape for %s" % api)
    fake.mode, fake.shape = "wrong_shape", shape
    registry = make_registry(api, endpoints=fake.endpoint, timeout=TIMEOUT)
    for call in (registry.get_config, registry.list_leases):
        _one_line_naming(_bad_reply(call)[0], fake.endpoint, "wrong shape")


def test_misbehaving_endpoint_is_passed_over_for_a_good_one(api, fake, api_endpoint):
    fake.mode = "endless"
    good = make_registry(api, endpoints=api_endpoint)
    good.put_config('{"Network": "10.0.0.0/8"}')
    registry = make_registry(api, endpoints=[fake.endpoint, api_endpoint], timeout=TIMEOUT)
    assert registry.get_config() == '{"Network": "10.0.0.0/8"}'
    assert registry.list_leases().leases == []


@pytest.mark.parametrize("api", ["v3"], indirect=True)
def test_v3_member_shutting_down_is_passed_over_for_the_next_one(api, fake, api_endpoint):
    """A member stopping gracefully answers through its gateway that its client connection is
    closing: that member cannot serve, the next one can (not an error of the operation)."""
    make_registry(api, endpoints=api_endpoint).put_config('{"Network": "10.0.0.0/8"}')
    fake.mode = "closing"
    registry = make_registry(api, endpoints=[fake.endpoint, api_endpoint], timeout=TIMEOUT)
    assert registry.get_config() == '{"Network": "10.0.0.0/8"}'
    with pytest.raises(RegistryUnavailable) as caught:
        make_registry(api, endpoints=fake.endpoint, timeout=TIMEOUT).list_leases()
    assert CLOSING in str(caught.value) and fake.endpoint in str(caught.value)


def test_watch_with_no_change_is_not_an_error_but_a_stalled_one_is(api, fake):
    registry = make_registry(api, endpoints=fake.endpoint, timeout=TIMEOUT)
    fake.mode = "quiet_watch"  # headers, then nothing: a watch that sees no change
    started = time.monotonic()
    assert registry.watch_leases(5, 2.0) == ([], 5, None)
    assert 1.5 < time.monotonic() - started < 4
    registry.close()
    fake.mode = "stall" if api == "v2" else "watch_stall"  # a reply begun and never ended
    message = _bad_reply(registry.watch_leases, 5, 3.0)[0]
    _one_line_naming(message, fake.endpoint, "stalled mid-")
    registry.close()


def test_v3_watch_message_over_the_limit_is_a_bad_reply(fake):
    if fake.api != "v3":
        pytest.skip("v2 watches are single replies (tested above)")
    fake.mode = "watch_huge"
    registry = make_registry("v3", endpoints=fake.endpoint, timeout=TIMEOUT)
    message = _bad_reply(registry.watch_leases, 5, 10.0)[0]
    _one_line_naming(message, fake.endpoint, "a watch message over 32 MiB")
    registry.close()


@pytest.mark.parametrize("request_kind", ["get_config", "watch"])
def test_stop_ends_a_request_waiting_on_a_silent_etcd_at_once(api, fake, request_kind):
    fake.mode = "silent" if request_kind == "get_config" else "quiet_watch"
    registry = make_registry(api, endpoints=fake.endpoint, timeout=30.0)
    previous = signal.signal(signal.SIGALRM, lambda *_args: registry.gate.close())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        started = time.monotonic()
        with pytest.raises(Stopping):
            if request_kind == "get_config":
                registry.get_config()
            else:
                registry.watch_leases(5, 30.0)
        assert time.monotonic() - started < 1.5
        with pytest.raises(Stopping):  # and every request after it
            registry.list_leases()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        registry.close()


def test_v3_watch_opened_on_a_silent_etcd_times_out(fake):
    if fake.api != "v3":
        pytest.skip("a v2 watch that hears nothing is a watch without change (python-etcd's timeout)")
    fake.mode = "silent"  # not even the headers of the stream
    registry = make_registry("v3", endpoints=fake.endpoint, timeout=TIMEOUT)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="timed out"):
        registry.watch_leases(5, 30.0)
    assert time.monotonic() - started < 5
    registry.close()
